//! An event the read database refuses is dead-lettered, and its aggregate's later events wait
//! behind it. An operator lists the letters (through the gateway and `events`), replays them
//! after the fix, and the read model is then what the streams fold to; a letter can also be
//! discarded for good.

use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use sqlx::PgPool;
use testkit::front::Front;

/// `call` (`"POST /api/..."`) through the gateway as an operator: the status and the JSON body.
async fn operator(front: &Front, call: &str) -> (u16, Value) {
    let (method, path) = call.split_once(' ').expect("METHOD /path");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let response = testkit::http()
        .request(method, format!("{}{path}", front.url))
        .bearer_auth(front.oidc.admin_token().await)
        .send()
        .await
        .expect("the gateway answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `events dead-letters ...` in this process, against the stack's projections service.
async fn events_tool(front: &Front, args: &[&str]) -> anyhow::Result<std::process::ExitCode> {
    let mut argv = vec!["events".to_owned()];
    if let Some(dir) = &testkit::infra().tls_dir {
        argv.extend(["--tls-dir".to_owned(), dir.display().to_string()]);
    }
    argv.extend(["dead-letters".to_owned(), "--projections-url".to_owned()]);
    argv.push(front.stack.reads[0].clone());
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    events_cli::cli::run(events_cli::cli::Cli::parse_from(argv)).await
}

async fn letters_of(front: &Front, sku: &str) -> Vec<Value> {
    let (status, body) = operator(front, "GET /api/dead-letters?projection=products_view").await;
    assert_eq!(status, 200, "{body}");
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|l| l["aggregate_id"] == sku)
        .cloned()
        .collect()
}

async fn product_row(read: &PgPool, sku: &str) -> Option<(i64, i64, i64)> {
    sqlx::query_as("SELECT on_hand, reserved, version FROM products_view WHERE sku = $1")
        .bind(sku)
        .fetch_optional(read)
        .await
        .expect("read products_view")
}

#[tokio::test]
async fn a_dead_letter_is_listed_replayed_after_the_fix_or_discarded() {
    let front = Front::start(&[]).await;
    let s = &front.stack;
    let read = PgPool::connect(s.read_db.as_ref().expect("the reads run"))
        .await
        .expect("the read database");
    // A mistaken migration: product names of more than 8 characters are refused.
    sqlx::query("ALTER TABLE products_view ADD CONSTRAINT short_names CHECK (length(name) <= 8)")
        .execute(&read)
        .await
        .expect("add the constraint");

    // The product's creation is refused, and each of its later events waits behind it.
    s.product("DL-LONG-NAME", 10).await;
    s.product("DL-1", 10).await;
    let mut orders = Vec::new();
    for sku in ["DL-LONG-NAME", "DL-LONG-NAME", "DL-1"] {
        orders.push(s.place(&[(sku, 1)], "tok_ok").await);
    }
    for order in &orders {
        assert_eq!(s.finished(*order).await["outcome"], "confirmed");
    }
    // Created, then two reservations and two commits: five events, all dead letters.
    let letters = testkit::eventually(Duration::from_secs(30), "five dead letters", || async {
        let letters = letters_of(&front, "DL-LONG-NAME").await;
        (letters.len() == 5).then_some(letters)
    })
    .await;
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("database refused it"),
        "{letters:?}"
    );
    for held in &letters[1..] {
        assert_eq!(
            held["reason"],
            projections::worker::HELD,
            "later events wait behind the first: {letters:?}"
        );
    }
    let sequences: Vec<i64> = letters
        .iter()
        .map(|l| l["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(sequences, [1, 2, 3, 4, 5]);
    // The payload (an order's payment token, in another projection) is never shown.
    assert!(letters.iter().all(|l| l.get("payload").is_none()));
    // The other product went on as usual; this one is missing, and `verify` says so.
    assert!(product_row(&read, "DL-LONG-NAME").await.is_none());
    testkit::eventually(Duration::from_secs(20), "DL-1 projected", || async {
        (product_row(&read, "DL-1").await == Some((9, 0, 3))).then_some(())
    })
    .await;
    let report = s.verify().await;
    assert!(
        report
            .differences
            .iter()
            .any(|d| d.to_string().contains("DL-LONG-NAME")),
        "{:?}",
        report.differences
    );

    // Replayed before the fix: still refused, and nothing changes.
    let first = letters[0]["id"].as_i64().unwrap().to_string();
    let early = events_tool(&front, &["replay", &first]).await;
    let message = format!("{:#}", early.expect_err("the cause is still there"));
    assert!(message.contains("422"), "{message}");
    assert_eq!(letters_of(&front, "DL-LONG-NAME").await.len(), 5);

    // The fix, then the replay through the gateway: all five apply, in order.
    sqlx::query("ALTER TABLE products_view DROP CONSTRAINT short_names")
        .execute(&read)
        .await
        .expect("drop the constraint");
    let (status, replayed) =
        operator(&front, &format!("POST /api/dead-letters/{first}/replay")).await;
    assert_eq!(status, 200, "{replayed}");
    let ids: Vec<&Value> = letters.iter().map(|l| &l["id"]).collect();
    assert_eq!(
        replayed["letters"]
            .as_array()
            .unwrap()
            .iter()
            .collect::<Vec<_>>(),
        ids
    );
    assert_eq!(product_row(&read, "DL-LONG-NAME").await, Some((8, 0, 5)));
    assert!(letters_of(&front, "DL-LONG-NAME").await.is_empty());
    // The aggregate is released: its next event applies at once.
    let restock = contracts::inventory::RestockProduct {
        sku: domain::Sku::parse("DL-LONG-NAME").unwrap(),
        quantity: 2,
    };
    let r = testkit::world::post_command(&s.urls[1], &restock, None).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    testkit::eventually(Duration::from_secs(20), "the restock projected", || async {
        (product_row(&read, "DL-LONG-NAME").await == Some((10, 0, 6))).then_some(())
    })
    .await;
    // The read model is what the streams fold to: a rebuild would make the same.
    s.assert_consistent().await;

    // A letter discarded for good, with `events`: the read model goes without it.
    // (NOT VALID: the rows already there keep their long names.)
    sqlx::query(
        "ALTER TABLE products_view ADD CONSTRAINT short_names CHECK (length(name) <= 8) NOT VALID",
    )
    .execute(&read)
    .await
    .expect("add the constraint again");
    s.product("DL-DISCARDED", 1).await;
    let letter = testkit::eventually(Duration::from_secs(30), "a dead letter", || async {
        letters_of(&front, "DL-DISCARDED").await.pop()
    })
    .await;
    let id = letter["id"].as_i64().unwrap().to_string();
    let listed = events_tool(&front, &["list", "--projection", "products_view"]).await;
    assert_eq!(listed.expect("list"), std::process::ExitCode::SUCCESS);
    let discarded = events_tool(&front, &["discard", &id]).await;
    assert_eq!(discarded.expect("discard"), std::process::ExitCode::SUCCESS);
    assert!(letters_of(&front, "DL-DISCARDED").await.is_empty());
    let held: bool = sqlx::query_scalar(
        "SELECT held FROM projection_positions WHERE projection = 'products_view' AND aggregate_id = $1",
    )
    .bind("DL-DISCARDED")
    .fetch_one(&read)
    .await
    .expect("its position");
    assert!(!held, "no letter of it remains: it is released");
    let (status, gone) = operator(&front, &format!("POST /api/dead-letters/{id}/replay")).await;
    assert_eq!(
        (status, gone["type"].as_str()),
        (404, Some("urn:streamshop:problem:not-found"))
    );
    let (status, _) = operator(&front, &format!("DELETE /api/dead-letters/{id}")).await;
    assert_eq!(status, 404, "discarded already, through the gateway");
}
