//! The query API's list reads against a real read database: keyset pagination under
//! concurrent inserts, filters, and bad parameters.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::Value;
use service_kit::env::Env;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A fresh read database, migrated as the projections worker migrates it.
async fn read_db() -> (String, PgPool) {
    let world = testkit::world::World::read().await;
    (world.db.reader.clone(), world.pool)
}

async fn serve(url: &str) -> (String, CancellationToken) {
    let settings = query_api::Settings::from_env(&Env::from_pairs([
        ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ("DATABASE_URL", url.to_owned()),
        testkit::tls_env(),
    ]))
    .unwrap();
    let app = query_api::App::build(&settings).await.unwrap();
    let base = app.url();
    let stop = CancellationToken::new();
    tokio::spawn(app.run(stop.clone()));
    (base, stop)
}

async fn insert_order(
    pool: &PgPool,
    customer: Uuid,
    placed_at: DateTime<Utc>,
    status: &str,
) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO orders_view (order_id, customer_id, status, lines, version, placed_at, updated_at) \
         VALUES ($1, $2, $3, '[{\"sku\":\"A\",\"quantity\":1}]', 1, $4, $4)",
    )
    .bind(id)
    .bind(customer)
    .bind(status)
    .bind(placed_at)
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn get(url: String) -> (StatusCode, Value) {
    let r = testkit::http().get(url).send().await.unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn walking_pages_while_orders_arrive_never_repeats_or_skips() {
    let (url, pool) = read_db().await;
    let (base, stop) = serve(&url).await;
    let customer = Uuid::now_v7();
    let start = Utc::now() - chrono::Duration::hours(1);
    let mut existing = HashSet::new();
    for i in 0..120 {
        // Some share a timestamp, so the order id must break ties.
        let at = start + chrono::Duration::seconds(i / 3);
        existing.insert(insert_order(&pool, customer, at, "placed").await);
    }
    // Orders keep arriving (newer, and some with the very same timestamps) during the walk.
    let writer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                let at = if i % 2 == 0 {
                    Utc::now()
                } else {
                    start + chrono::Duration::seconds(i % 40)
                };
                insert_order(&pool, customer, at, "placed").await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut page_url = format!("{base}/customers/{customer}/orders?limit=7");
        if let Some(c) = &cursor {
            page_url.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = get(page_url).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 7);
        seen.extend(
            items
                .iter()
                .map(|o| Uuid::parse_str(o["order_id"].as_str().unwrap()).unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    writer.await.unwrap();
    let unique: HashSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no order appeared twice");
    assert!(
        existing.is_subset(&unique),
        "every order that existed at the start was seen"
    );
    stop.cancel();
}

#[tokio::test]
async fn list_filters_and_bad_parameters() {
    let (url, pool) = read_db().await;
    let (base, stop) = serve(&url).await;
    let customer = Uuid::now_v7();
    for status in ["placed", "confirmed", "confirmed", "rejected"] {
        insert_order(&pool, customer, Utc::now(), status).await;
    }
    let (_, confirmed) = get(format!(
        "{base}/customers/{customer}/orders?status=confirmed"
    ))
    .await;
    assert_eq!(confirmed["items"].as_array().unwrap().len(), 2);
    assert!(confirmed["next_cursor"].is_null());

    for (sku, on_hand) in [("A", 50), ("B", 3), ("C", 0)] {
        sqlx::query(
            "INSERT INTO products_view (sku, name, unit_price, currency, on_hand, reserved, version, updated_at) \
             VALUES ($1, $1, 100, 'EUR', $2, 0, 1, now())",
        )
        .bind(sku)
        .bind(on_hand)
        .execute(&pool)
        .await
        .unwrap();
    }
    let (_, low) = get(format!("{base}/products?low_stock=5")).await;
    let skus: Vec<&str> = low["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sku"].as_str().unwrap())
        .collect();
    assert_eq!(skus, ["B", "C"]);
    let (_, first) = get(format!("{base}/products?limit=2")).await;
    assert_eq!(first["next_cursor"], "B");
    let (_, rest) = get(format!("{base}/products?limit=2&cursor=B")).await;
    assert_eq!(rest["items"][0]["sku"], "C");
    let (status, product) = get(format!("{base}/products/A")).await;
    assert_eq!(
        (status, product["available"].as_i64()),
        (StatusCode::OK, Some(50))
    );

    for path in [
        format!("/customers/{customer}/orders?limit=0"),
        format!("/customers/{customer}/orders?limit=500"),
        format!("/customers/{customer}/orders?cursor=garbage"),
        format!("/customers/{customer}/orders?status=shipped"),
        "/customers/not-a-uuid/orders".to_owned(),
        "/products?low_stock=x".to_owned(),
        "/analytics/sales?from=2026-02-01&to=2026-01-01".to_owned(),
        "/payments/not-a-uuid".to_owned(),
    ] {
        let (status, body) = get(format!("{base}{path}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
    }
    let (status, _) = get(format!("{base}/products/NOPE")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(format!("{base}/payments/{}", Uuid::now_v7())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    stop.cancel();
}

#[tokio::test]
async fn reads_carry_an_etag_and_answer_304_when_unchanged() {
    let (url, pool) = read_db().await;
    let (base, stop) = serve(&url).await;
    sqlx::query(
        "INSERT INTO products_view (sku, name, unit_price, currency, on_hand, reserved, version, updated_at) \
         VALUES ('E1', 'E1', 100, 'EUR', 5, 0, 1, now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    let client = testkit::http();
    let first = client
        .get(format!("{base}/products/E1"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.headers()["cache-control"], "no-cache");
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let again = client
        .get(format!("{base}/products/E1"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert!(again.bytes().await.unwrap().is_empty());

    sqlx::query("UPDATE products_view SET on_hand = 4, version = 2 WHERE sku = 'E1'")
        .execute(&pool)
        .await
        .unwrap();
    let changed = client
        .get(format!("{base}/products/E1"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), etag);
    let missing = client
        .get(format!("{base}/products/NOPE"))
        .send()
        .await
        .unwrap();
    assert!(
        missing.headers().get("etag").is_none(),
        "errors carry no ETag"
    );
    stop.cancel();
}

#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one() {
    let (url, _pool) = read_db().await;
    let (base, stop) = serve(&url).await;
    let (status, served) = get(format!("{base}/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../schemas/openapi/query-api.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(served, committed, "run `cargo run -p schemas`");
    stop.cancel();
}

/// The query API's role counts dead letters (`GET /projections`) but cannot read what they
/// hold, even after provisioning granted it SELECT on every table again (as `cargo xtask up`
/// does at each start): the projections narrow it back at their next start.
#[tokio::test]
async fn the_query_api_counts_dead_letters_but_cannot_read_their_payloads() {
    let world = testkit::world::World::read().await;
    sqlx::query(
        "INSERT INTO dead_letters (projection, stream, stream_sequence, subject, reason, payload) \
         VALUES ('orders_view', 'ORDERS', 1, 'events.orders.x.OrderPlaced', 'test', $1)",
    )
    .bind(b"{\"payment_token\":\"tok_secret\"}".to_vec())
    .execute(&world.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, stream) VALUES ('orders_view', 'ORDERS')",
    )
    .execute(&world.pool)
    .await
    .unwrap();
    let reader = PgPool::connect(&world.db.reader).await.unwrap();
    let denied = |r: Result<Vec<u8>, sqlx::Error>| {
        let e = r.expect_err("the payload must not be readable");
        assert_eq!(
            e.as_database_error().and_then(|d| d.code()).as_deref(),
            Some("42501"),
            "{e}"
        );
    };
    denied(
        sqlx::query_scalar("SELECT payload FROM dead_letters")
            .fetch_one(&reader)
            .await,
    );
    // Provisioning widens it again; the next start of the projections narrows it.
    sqlx::query("GRANT SELECT ON ALL TABLES IN SCHEMA public TO streamshop_reader")
        .execute(&world.pool)
        .await
        .unwrap();
    world.start_again().await;
    denied(
        sqlx::query_scalar("SELECT payload FROM dead_letters")
            .fetch_one(&reader)
            .await,
    );
    let (base, _stop) = serve(&world.db.reader).await;
    let (status, body) = get(format!("{base}/projections")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let text = body.to_string();
    assert!(text.contains("\"dead_letters\":1"), "{body}");
}
