//! The `open_sagas` table that the orchestrator lists instead of grouping every saga event: kept
//! by the events' trigger as sagas start, park, resume and complete, filled in for the sagas
//! stored before its migration, and read-only to the service's role.

use sqlx::{Connection, PgConnection};
use testkit::world::World;

/// Appends one saga event of `saga` at `sequence` as `conn`'s role.
async fn append(conn: &mut PgConnection, saga: &str, sequence: i64, event_type: &str) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) VALUES ('OrderSaga', $1, $2, $3, '1', '{}', '{}')",
    )
    .bind(saga)
    .bind(sequence)
    .bind(event_type)
    .execute(conn)
    .await
    .unwrap_or_else(|e| panic!("appending {event_type} of {saga}: {e}"));
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

    for sql in [
        "INSERT INTO open_sagas (aggregate_id) VALUES ('forged')",
        "UPDATE open_sagas SET parked = false",
        "DELETE FROM open_sagas",
    ] {
        let failed = sqlx::query(sql).execute(&mut service).await.unwrap_err();
        let code = failed.as_database_error().and_then(|d| d.code());
        assert_eq!(code.as_deref(), Some("42501"), "{sql}: {failed}");
    }
    assert_eq!(listed(&mut service).await, expected());
}

#[tokio::test]
async fn the_migration_fills_in_the_sagas_stored_before_it() {
    let db = testkit::fresh_db("open_sagas_backfill").await;
    let mut owner = PgConnection::connect(&db.owner).await.unwrap();

    // The store as it was before the table: every migration up to it, from a copy of their
    // files (sqlx checks the checksums when the full set runs afterwards).
    let before = std::env::temp_dir().join(format!("{}-migrations", db.name));
    std::fs::create_dir_all(&before).unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.as_str() < "0007" {
            std::fs::copy(&path, before.join(&name)).unwrap();
        }
    }
    sqlx::migrate::Migrator::new(before.as_path())
        .await
        .unwrap()
        .run(&mut owner)
        .await
        .expect("the migrations before open_sagas");
    std::fs::remove_dir_all(&before).unwrap();
    append_all(&mut owner, CASES).await;

    let role = runtime::db::user_of(&db.app).unwrap();
    event_store::SCHEMA
        .apply(&mut owner, &role)
        .await
        .expect("the remaining migrations");
    assert_eq!(listed(&mut owner).await, expected());

    // From here on the trigger keeps it.
    append(&mut owner, "running", 4, "SagaCompleted").await;
    let mut expected = expected();
    expected.remove(0);
    assert_eq!(listed(&mut owner).await, expected);
}
