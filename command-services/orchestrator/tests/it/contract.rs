//! Consumer-side contract test of the orchestrator's inputs: every committed example of the
//! streams it listens to decodes, and exactly the events a saga waits for become inputs.

use messaging::BoundedContext;
use orchestrator::steps::{input_of, Input};

#[test]
fn every_committed_example_of_its_streams_is_read() {
    let mut inputs = Vec::new();
    for context in [
        BoundedContext::Orders,
        BoundedContext::Inventory,
        BoundedContext::Payments,
    ] {
        for envelope in testkit::schemas::examples_of(context) {
            let name = format!("{}.v{}", envelope.name(), envelope.version());
            match input_of(&envelope) {
                Some((order_id, input)) => {
                    assert_eq!(
                        order_id.to_string(),
                        envelope.correlationid.clone().unwrap()
                    );
                    if let Input::Start(placed) = &input {
                        // v1 arrives upcast: no payment token; v2's is clear (from before
                        // sealing), v3's sealed.
                        let token = placed.payment_token.as_deref();
                        match envelope.version() {
                            1 => assert_eq!(token, None, "{name}"),
                            2 => assert_eq!(token, Some("tok_ok"), "{name}"),
                            _ => assert!(
                                token.is_some_and(service_kit::sealing::is_sealed),
                                "{name}"
                            ),
                        }
                    }
                    inputs.push(name);
                }
                None => inputs.push(format!("({name} ignored)")),
            }
        }
    }
    inputs.sort();
    assert_eq!(
        inputs,
        [
            "(CustomerLimitSet.v1 ignored)",
            "(PriceChanged.v1 ignored)",
            "(ProductCreated.v1 ignored)",
            "(ProductRestocked.v1 ignored)",
            "OrderCancelled.v1",
            "OrderConfirmed.v1",
            "OrderPlaced.v1",
            "OrderPlaced.v2",
            "OrderPlaced.v3",
            "OrderPriced.v1",
            "OrderRejected.v1",
            "PaymentAuthorised.v1",
            "PaymentCaptured.v1",
            "PaymentDeclined.v1",
            "PaymentRefunded.v1",
            "PaymentVoided.v1",
            "ReservationCommitted.v1",
            "ReservationReleased.v1",
            "StockReserved.v1",
            "StockReserved.v2",
        ]
    );
}
