//! The payment commands the payments tests send, for an order and an amount in euros.

use contracts::payments::{AuthorisePayment, CapturePayment, RefundPayment};
use testkit::fixtures::eur;
use uuid::Uuid;

pub fn authorise(order: Uuid, token: &str, amount: i64) -> AuthorisePayment {
    AuthorisePayment {
        order_id: order,
        amount,
        currency: eur(),
        payment_token: token.into(),
    }
}

pub fn capture(order: Uuid, amount: i64) -> CapturePayment {
    CapturePayment {
        order_id: order,
        amount,
        currency: eur(),
    }
}

pub fn refund(order: Uuid, amount: i64) -> RefundPayment {
    RefundPayment {
        order_id: order,
        amount,
        currency: eur(),
    }
}
