//! The outage scenarios: a command service's real binary SIGKILLed for a minute while 200
//! orders flow, or the infrastructure itself (NATS, Postgres) taken away and given back while
//! they flow; and the end checks of every outage test (each order where it would have ended,
//! none parked or given up, stock and money matching the confirmed orders, `events verify`
//! clean).

use std::path::Path;
use std::time::{Duration, Instant};

use domain::payment::Payment;
use domain::product::Product;

use crate::stack::{Options, Stack};

/// How long the service stays down.
pub const OUTAGE: Duration = Duration::from_secs(60);

/// Which service goes down: its place in the stack and its binary, with its extra settings.
#[derive(Debug, Clone, Copy)]
pub struct Victim<'a> {
    /// 1 for inventory, 2 for payments (the stack's `urls` and `shutdown` order).
    pub index: usize,
    pub binary: &'a Path,
    pub env: &'a [(&'static str, &'a str)],
}

/// The world of the stack's service at `index`.
fn world(s: &Stack, index: usize) -> &crate::world::World {
    match index {
        1 => &s.inventory,
        2 => &s.payments,
        _ => panic!("only inventory (1) and payments (2) are run as processes here"),
    }
}

/// Runs the scenario against `victim` and checks its end.
pub async fn kill_for_a_minute_under_200_orders(victim: Victim<'_>) {
    let mut s = patient_stack().await;
    // The real binary, in place of the in-process service, so it can be SIGKILLed.
    s.shutdown[victim.index].cancel();
    let process = world(&s, victim.index)
        .start_process(victim.binary, victim.env)
        .await;
    s.urls[victim.index] = process.base_url.clone();
    stock_for(&s, 200).await;

    let mut orders = Vec::new();
    let mut killed_at = None;
    let mut process = Some(process);
    for i in 0..200 {
        if i == 30 {
            process.take().expect("running").kill9().await;
            killed_at = Some(Instant::now());
        }
        let (sku, token) = mix(i);
        orders.push((s.place(&[(sku, 1)], token).await, token));
    }
    let killed_at = killed_at.expect("killed");
    tokio::time::sleep(OUTAGE.saturating_sub(killed_at.elapsed())).await;
    // A minute without the service: the sagas that need it wait, none parked or rejected.
    assert_nothing_gave_up(&s).await;

    let _back = world(&s, victim.index)
        .start_process(victim.binary, victim.env)
        .await;
    assert_end(&s, &orders).await;
}

/// A stack for an outage: the business deadline (15 minutes) is far away, as an outage is
/// weather, and retries back off to 5 s, as in production (10 s), rather than the tests'
/// usual 200 ms.
pub async fn patient_stack() -> Stack {
    Stack::start_with(Options {
        business_deadline_secs: 900,
        orchestrator_env: vec![("SAGA_BACKOFF_MAX_MS", "5000".into())],
        ..Options::default()
    })
    .await
}

/// The order mix of every outage test: order `i` is one unit of OUT-1 or OUT-2 in turn,
/// every fifth paid with a card that is declined. Returns (SKU, payment token).
pub fn mix(i: usize) -> (&'static str, &'static str) {
    let sku = if i.is_multiple_of(2) {
        "OUT-1"
    } else {
        "OUT-2"
    };
    let token = if i % 5 == 4 { "tok_decline" } else { "tok_ok" };
    (sku, token)
}

/// Creates the mix's two products with stock for `orders` orders, half each: the paid
/// orders take four fifths of it, and nothing is refused for want of stock.
pub async fn stock_for(s: &Stack, orders: usize) {
    for sku in ["OUT-1", "OUT-2"] {
        let stock = u32::try_from(orders / 2).expect("a test-sized stock");
        s.product(sku, stock).await;
    }
}

/// 200 one-unit orders of the [`mix`] on two products of 100 units, with `outage` run
/// beside them from the 30th on. Each order is placed
/// as a frontend would: with an `Idempotency-Key`, retried while the service answers 503 or
/// cannot be reached. Returns the orders with their tokens, and what `outage` returned.
pub async fn orders_through<T: Send + 'static>(
    s: &Stack,
    outage: impl std::future::Future<Output = T> + Send + 'static,
) -> (Vec<(uuid::Uuid, &'static str)>, T) {
    stock_for(s, 200).await;
    let mut outage = Some(outage);
    let mut running = None;
    let mut orders = Vec::new();
    for i in 0..200 {
        if i == 30 {
            running = Some(tokio::spawn(outage.take().expect("once")));
        }
        let (sku, token) = mix(i);
        orders.push((place_retrying(s, sku, token).await, token));
    }
    let back = running.expect("started").await.expect("the outage task");
    (orders, back)
}

/// Places one order of `sku`, retrying (same key) while the answer is 503 or none comes.
async fn place_retrying(s: &Stack, sku: &str, token: &str) -> uuid::Uuid {
    let place = contracts::orders::PlaceOrder {
        customer_id: uuid::Uuid::now_v7(),
        lines: vec![domain::order::OrderLine {
            sku: domain::Sku::parse(sku).expect("a SKU"),
            quantity: 1,
        }],
        payment_token: token.to_owned(),
        email: None,
    };
    let key = uuid::Uuid::new_v4().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let sent = crate::http()
            .post(format!("{}/orders", s.urls[0]))
            .header("Idempotency-Key", &key)
            .json(&place)
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 202 => {
                let body: serde_json::Value = r.json().await.expect("a JSON answer");
                return body["order_id"]
                    .as_str()
                    .and_then(|id| uuid::Uuid::parse_str(id).ok())
                    .expect("an order id");
            }
            Ok(r) if r.status() == 503 => eprintln!("placing an order: 503; retrying"),
            Ok(r) => panic!(
                "placing an order: {} {:?}",
                r.status(),
                r.text().await.unwrap_or_default()
            ),
            Err(e) => eprintln!("placing an order: {e}; retrying"),
        }
        assert!(Instant::now() < deadline, "no order placed in 2 minutes");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// No step gave up and no saga parked.
pub async fn assert_nothing_gave_up(s: &Stack) {
    let gave_up: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type IN ('SagaNeedsAttention', 'StepGaveUp')",
    )
    .fetch_one(&s.orchestrator)
    .await
    .expect("count the orchestrator's events");
    assert_eq!(gave_up, 0, "nothing gave up or parked");
}

/// The end checks of every outage test, for orders `0..n` of the [`mix`] on the stock of
/// [`stock_for`]`(n)`: each saga completed as it would have without the outage, each
/// confirmed order paid once in full, each product's paid orders taken from its stock with
/// no reservation left, nothing parked, and `events verify` clean.
pub async fn assert_end(s: &Stack, orders: &[(uuid::Uuid, &str)]) {
    let mut confirmed = 0;
    let mut sold = [0u64; 2];
    for (i, (order, token)) in orders.iter().enumerate() {
        assert_eq!(*token, mix(i).1, "order {i} is not of the mix");
        let saga = s.finished(*order).await;
        let expected = if *token == "tok_ok" {
            "confirmed"
        } else {
            "rejected"
        };
        assert_eq!(saga["status"], "completed", "{saga}");
        assert_eq!(saga["outcome"], expected, "{saga}");
        if expected == "confirmed" {
            confirmed += 1;
            sold[i % 2] += 1;
            let payment: Payment = s.payments.aggregate(&order.to_string()).await;
            assert_eq!(
                payment.captured.map(|m| m.amount_minor),
                Some(250),
                "{order} paid once, in full"
            );
        }
    }
    let paid = orders.iter().filter(|(_, t)| *t == "tok_ok").count();
    assert_eq!(confirmed, paid);
    // Each SKU sold what its paid orders took and holds no reservation for a finished saga.
    let stock = (orders.len() / 2) as u64;
    for (sku, sold) in ["OUT-1", "OUT-2"].into_iter().zip(sold) {
        let product: Product = s.inventory.aggregate(sku).await;
        assert_eq!(
            (product.on_hand, product.reserved),
            (stock - sold, 0),
            "{sku}"
        );
    }
    assert_nothing_gave_up(s).await;
    s.assert_consistent().await;
}
