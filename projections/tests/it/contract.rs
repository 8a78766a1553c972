//! Consumer-side contract test of the projections: each decodes the committed example of every
//! event version of its stream, before anything is written.

use messaging::Envelope;
use projections::orders_view::OrdersView;
use projections::payments_view::PaymentsView;
use projections::products_view::ProductsView;
use projections::projection::Projection;
use projections::saga_timeline::SagaTimeline;

fn decodes_every_example<P: Projection>(projection: P) {
    let examples: Vec<Envelope> = testkit::schemas::examples_of(projection.context());
    assert!(
        !examples.is_empty(),
        "no examples for {}",
        projection.name()
    );
    for envelope in examples {
        if let Err(e) = projection.decode(&envelope) {
            panic!(
                "{} cannot read {} v{}: {e}",
                projection.name(),
                envelope.name(),
                envelope.version()
            );
        }
    }
}

#[test]
fn every_projection_decodes_every_committed_example_of_its_stream() {
    decodes_every_example(OrdersView);
    decodes_every_example(ProductsView);
    decodes_every_example(PaymentsView);
    decodes_every_example(SagaTimeline);
}
