//! The tables of what is in flight, kept by the events' triggers so that listing it costs what
//! is in flight rather than the whole history: `open_sagas` (the orchestrator's recovery and
//! parked list) as sagas start, park, resume and complete, and `open_reservations`
//! (inventory's expiry) as stock is reserved, released and committed. Each is filled in for
//! what was stored before its migration, and read-only to the service's role.

use sqlx::{Connection, PgConnection};
use testkit::world::World;

/// Appends one event of `aggregate` at `sequence` as `conn`'s role.
async fn append_event(
    conn: &mut PgConnection,
    (aggregate_type, aggregate): (&str, &str),
    sequence: i64,
    event_type: &str,
    payload: serde_json::Value,
) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) VALUES ($1, $2, $3, $4, '1', $5, '{}')",
    )
    .bind(aggregate_type)
    .bind(aggregate)
    .bind(sequence)
    .bind(event_type)
    .bind(payload)
    .execute(conn)
    .await
    .unwrap_or_else(|e| panic!("appending {event_type} of {aggregate}: {e}"));
}

/// Appends one saga event of `saga` at `sequence` as `conn`'s role.
async fn append(conn: &mut PgConnection, saga: &str, sequence: i64, event_type: &str) {
    let payload = serde_json::json!({});
    append_event(conn, ("OrderSaga", saga), sequence, event_type, payload).await;
}

/// A fresh store migrated as its owner up to, not including, the migration whose file name
/// starts with `first_left_out`, from a copy of the files (sqlx checks their checksums when the
/// full set runs afterwards); the owner's connection to it.
async fn store_before(label: &str, first_left_out: &str) -> (testkit::TestDb, PgConnection) {
    let db = testkit::fresh_db(label).await;
    let mut owner = PgConnection::connect(&db.owner).await.unwrap();
    let before = std::env::temp_dir().join(format!("{}-migrations", db.name));
    std::fs::create_dir_all(&before).unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.as_str() < first_left_out {
            std::fs::copy(&path, before.join(&name)).unwrap();
        }
    }
    sqlx::migrate::Migrator::new(before.as_path())
        .await
        .unwrap()
        .run(&mut owner)
        .await
        .unwrap_or_else(|e| panic!("the migrations before {first_left_out}: {e}"));
    std::fs::remove_dir_all(&before).unwrap();
    (db, owner)
}

/// Each statement fails with permission denied for the service's role.
async fn refused_to_the_service(service: &mut PgConnection, statements: [&str; 3]) {
    for sql in statements {
        let failed = sqlx::query(sql).execute(&mut *service).await.unwrap_err();
        let code = failed.as_database_error().and_then(|d| d.code());
        assert_eq!(code.as_deref(), Some("42501"), "{sql}: {failed}");
    }
}

/// Runs the rest of the migrations and the grants, as a service's start-up does.
async fn migrate_the_rest(db: &testkit::TestDb, owner: &mut PgConnection) {
    let role = service_kit::db::user_of(&db.app).unwrap();
    event_store::SCHEMA
        .apply(owner, &role)
        .await
        .expect("the remaining migrations");
}

/// Appends each saga's events in order, from sequence 1.
async fn append_all(conn: &mut PgConnection, sagas: &[(&str, &[&str])]) {
    for (saga, events) in sagas {
        for (i, event_type) in events.iter().enumerate() {
            append(conn, saga, i as i64 + 1, event_type).await;
        }
    }
}

/// Every saga a store of the cases below ends with: (id, parked), by id.
const EXPECTED: [(&str, bool); 3] = [("running", false), ("parked", true), ("resumed", false)];

/// One saga of each kind: still running, completed, parked, parked and resumed, parked and
/// resumed and completed, parked twice.
const CASES: &[(&str, &[&str])] = &[
    (
        "running",
        &["SagaStarted", "StepAttempted", "StepCompleted"],
    ),
    ("done", &["SagaStarted", "StepAttempted", "SagaCompleted"]),
    (
        "parked",
        &[
            "SagaStarted",
            "SagaNeedsAttention",
            "SagaResumed",
            "SagaNeedsAttention",
        ],
    ),
    (
        "resumed",
        &[
            "SagaStarted",
            "StepGaveUp",
            "SagaNeedsAttention",
            "SagaResumed",
            "StepAttempted",
        ],
    ),
    (
        "resumed-done",
        &[
            "SagaStarted",
            "SagaNeedsAttention",
            "SagaResumed",
            "SagaCompleted",
        ],
    ),
];

async fn listed(conn: &mut PgConnection) -> Vec<(String, bool)> {
    let mut rows: Vec<(String, bool)> =
        sqlx::query_as("SELECT aggregate_id, parked FROM open_sagas")
            .fetch_all(conn)
            .await
            .expect("reading open_sagas");
    let rank = |id: &str| EXPECTED.iter().position(|(e, _)| *e == id);
    rows.sort_by_key(|(id, _)| rank(id));
    rows
}

fn expected() -> Vec<(String, bool)> {
    EXPECTED
        .iter()
        .map(|(id, p)| (id.to_string(), *p))
        .collect()
}

#[tokio::test]
async fn appended_saga_events_keep_the_open_and_parked_list_and_the_service_only_reads_it() {
    let w = World::new("open_sagas").await;
    let mut service = PgConnection::connect(&w.db.app).await.unwrap();
    append_all(&mut service, CASES).await;
    // Another context's events with the same names are not sagas.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) VALUES ('Order', 'o', 1, 'SagaStarted', '1', '{}', '{}')",
    )
    .execute(&mut service)
    .await
    .unwrap();
    assert_eq!(listed(&mut service).await, expected());

    refused_to_the_service(
        &mut service,
        [
            "INSERT INTO open_sagas (aggregate_id) VALUES ('forged')",
            "UPDATE open_sagas SET parked = false",
            "DELETE FROM open_sagas",
        ],
    )
    .await;
    assert_eq!(listed(&mut service).await, expected());
}

#[tokio::test]
async fn the_migration_fills_in_the_sagas_stored_before_it() {
    let (db, mut owner) = store_before("open_sagas_backfill", "0007").await;
    append_all(&mut owner, CASES).await;
    migrate_the_rest(&db, &mut owner).await;
    assert_eq!(listed(&mut owner).await, expected());

    // From here on the trigger keeps it.
    append(&mut owner, "running", 4, "SagaCompleted").await;
    let mut expected = expected();
    expected.remove(0);
    assert_eq!(listed(&mut owner).await, expected);
}

/// Appends a reservation event of order `order` on `sku` at `sequence`.
async fn reservation(
    conn: &mut PgConnection,
    sku: &str,
    sequence: i64,
    event_type: &str,
    order: &str,
) {
    let payload =
        serde_json::json!({ event_type: { "sku": sku, "order_id": order, "quantity": 1 } });
    append_event(conn, ("Product", sku), sequence, event_type, payload).await;
}

/// On SKU-1: a reserved, b released, c committed, d reserved; on SKU-2: a reserved. Then
/// (SKU-1, a), (SKU-1, d) and (SKU-2, a) are open.
async fn reservations(conn: &mut PgConnection) {
    for (sku, sequence, event_type, order) in [
        ("SKU-1", 2, "StockReserved", "a"),
        ("SKU-1", 3, "StockReserved", "b"),
        ("SKU-1", 4, "StockReserved", "c"),
        ("SKU-1", 5, "ReservationReleased", "b"),
        ("SKU-1", 6, "ReservationCommitted", "c"),
        ("SKU-1", 7, "StockReserved", "d"),
        ("SKU-2", 2, "StockReserved", "a"),
    ] {
        reservation(conn, sku, sequence, event_type, order).await;
    }
}

async fn open_reservations(conn: &mut PgConnection) -> Vec<(String, String)> {
    sqlx::query_as("SELECT aggregate_id, order_id FROM open_reservations ORDER BY 1, 2")
        .fetch_all(conn)
        .await
        .expect("reading open_reservations")
}

fn open(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(sku, order)| (sku.to_string(), order.to_string()))
        .collect()
}

#[tokio::test]
async fn reservations_are_listed_open_until_released_or_committed_and_the_service_only_reads_them()
{
    let w = World::new("open_reservations").await;
    let mut service = PgConnection::connect(&w.db.app).await.unwrap();
    reservations(&mut service).await;
    let now = open(&[("SKU-1", "a"), ("SKU-1", "d"), ("SKU-2", "a")]);
    assert_eq!(open_reservations(&mut service).await, now);
    // Each keeps its reservation's time.
    let times: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM open_reservations o JOIN events e \
           ON e.aggregate_id = o.aggregate_id AND e.event_type = 'StockReserved' \
          AND e.payload -> 'StockReserved' ->> 'order_id' = o.order_id \
         WHERE e.recorded_at = o.reserved_at",
    )
    .fetch_one(&mut service)
    .await
    .unwrap();
    assert_eq!(times, 3);

    refused_to_the_service(
        &mut service,
        [
            "INSERT INTO open_reservations VALUES ('SKU-9', 'x', now())",
            "UPDATE open_reservations SET reserved_at = now()",
            "DELETE FROM open_reservations",
        ],
    )
    .await;
    reservation(&mut service, "SKU-1", 8, "ReservationCommitted", "a").await;
    assert_eq!(
        open_reservations(&mut service).await,
        open(&[("SKU-1", "d"), ("SKU-2", "a")])
    );
}

#[tokio::test]
async fn the_migration_fills_in_the_reservations_stored_before_it() {
    let (db, mut owner) = store_before("open_reservations_backfill", "0008").await;
    reservations(&mut owner).await;
    migrate_the_rest(&db, &mut owner).await;
    assert_eq!(
        open_reservations(&mut owner).await,
        open(&[("SKU-1", "a"), ("SKU-1", "d"), ("SKU-2", "a")])
    );
    reservation(&mut owner, "SKU-2", 3, "ReservationReleased", "a").await;
    assert_eq!(
        open_reservations(&mut owner).await,
        open(&[("SKU-1", "a"), ("SKU-1", "d")])
    );
}
