//! The orders command service: the Order aggregate's commands over HTTP and NATS
//! (`cmd.orders.*`), its event store in the `orders` database, and its outbox to `ORDERS`;
//! the customers' data keys that seal their payment tokens (opened for payments alone) and
//! email addresses (opened for notifications alone), erased on an operator's request.
#![forbid(unsafe_code)]

pub mod erase;
pub mod keys;
pub mod open;
pub mod spec;

pub use spec::OrdersSpec;

use command_kit::{Parts, Resources};
use domain::order::{Order, OrderServices};
use domain::sealing::Field;
use messaging::BoundedContext;
use service_kit::service::task;

/// What the orders service adds to the shared machinery: the sealer of payment tokens and
/// addresses (the customers' data keys under `master`), the servers that open them for
/// payments and notifications, and the erasure route.
pub fn parts(resources: &Resources<'_>, master: service_kit::sealing::Key) -> Parts<Order> {
    let keys = keys::CustomerKeys::new(resources.pool.clone(), master);
    let ns = resources.namespace;
    let tasks = [
        (ns.open_subject(BoundedContext::Orders), Field::PaymentToken),
        (ns.open_email_subject(BoundedContext::Orders), Field::Email),
    ]
    .into_iter()
    .map(|(subject, field)| {
        let (opener, nats) = (keys.clone(), resources.nats.clone());
        task(move |shutdown| open::serve(opener, nats, subject, field, shutdown))
    })
    .collect();
    Parts {
        services: OrderServices {
            sealer: std::sync::Arc::new(keys.clone()),
        },
        tasks,
        routes: erase::router(keys),
        // Operators erase through the gateway.
        gateway_routes: vec![(axum::http::Method::POST, erase::PATH.to_owned())],
    }
}
