//! Consumer-side contract test of the `events` tool: `state` folds the committed example of
//! every event version of every stream, each within a history that could have happened (an
//! aggregate's `apply` expects its events in a possible order).

use std::collections::{BTreeMap, BTreeSet};

use events_cli::fold::Folded;
use messaging::{BoundedContext, Envelope};

/// Histories made of the examples, by `<Type>.v<N>`; together they use every example.
const HISTORIES: &[(BoundedContext, &[&str])] = &[
    (
        BoundedContext::Orders,
        &["OrderPlaced.v1", "OrderPriced.v1", "OrderConfirmed.v1"],
    ),
    (
        BoundedContext::Orders,
        &["OrderPlaced.v2", "OrderPriced.v1", "OrderRejected.v1"],
    ),
    (
        BoundedContext::Orders,
        &["OrderPlaced.v3", "OrderCancelled.v1"],
    ),
    (
        BoundedContext::Inventory,
        &[
            "ProductCreated.v1",
            "ProductRestocked.v1",
            "PriceChanged.v1",
            "StockReserved.v1",
            "ReservationReleased.v1",
        ],
    ),
    (
        BoundedContext::Inventory,
        &[
            "ProductCreated.v1",
            "ProductRestocked.v1",
            "PriceChanged.v1",
            "StockReserved.v1",
            "ReservationCommitted.v1",
        ],
    ),
    (
        BoundedContext::Inventory,
        &[
            "ProductCreated.v1",
            "ProductRestocked.v1",
            "CustomerLimitSet.v1",
            "StockReserved.v2",
            "ReservationCommitted.v1",
        ],
    ),
    (
        BoundedContext::Payments,
        &[
            "PaymentAuthorised.v1",
            "PaymentCaptured.v1",
            "PaymentRefunded.v1",
        ],
    ),
    (
        BoundedContext::Payments,
        &["PaymentAuthorised.v1", "PaymentVoided.v1"],
    ),
    (BoundedContext::Payments, &["PaymentDeclined.v1"]),
    (
        BoundedContext::Sagas,
        &[
            "SagaStarted.v1",
            "StepAttempted.v1",
            "StepCompleted.v1",
            "StepFailed.v1",
            "StepGaveUp.v1",
            "CompensationStarted.v1",
            "SagaNeedsAttention.v1",
            "SagaResumed.v1",
            "SagaCompleted.v1",
        ],
    ),
];

#[test]
fn state_folds_every_committed_example() {
    let examples: BTreeMap<String, Envelope> = testkit::schemas::examples()
        .into_iter()
        .map(|e| (format!("{}.v{}", e.name(), e.version()), e))
        .collect();
    let mut used = BTreeSet::new();
    for (context, history) in HISTORIES {
        let mut folded = Folded::new(*context);
        for key in *history {
            let envelope = &examples[*key];
            folded
                .apply(envelope.name(), envelope.version(), &envelope.data)
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            used.insert(key.to_string());
        }
    }
    let all: BTreeSet<String> = examples.into_keys().collect();
    assert_eq!(used, all, "every example is folded");
}
