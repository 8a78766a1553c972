//! What the role a command service runs as may do to its database, against a real cluster
//! with password authentication: append and read events, never change or remove one.

use sqlx::Connection;
use testkit::world::World;

/// Runs `sql` as the service's role; the SQLSTATE it fails with, if it fails.
async fn as_service(w: &World, sql: &str) -> Option<String> {
    let mut conn = sqlx::PgConnection::connect(&w.db.app).await.unwrap();
    sqlx::query(sql).execute(&mut conn).await.err().map(|e| {
        match e.as_database_error().and_then(|d| d.code()) {
            Some(code) => code.into_owned(),
            None => e.to_string(),
        }
    })
}

const APPEND: &str = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
    event_version, payload, metadata) VALUES ('Order', 'a', 1, 'OrderPlaced', '1', '{}', '{}')";

#[tokio::test]
async fn the_service_role_appends_events_and_can_never_change_or_remove_one() {
    let w = World::new("privileges").await;
    assert_eq!(as_service(&w, APPEND).await, None, "appending is its job");
    assert_eq!(
        w.count("SELECT count(*) FROM outbox").await,
        1,
        "the trigger, running as the owner, queued it"
    );
    const DENIED: &str = "42501";
    for sql in [
        "UPDATE events SET payload = '{\"forged\": true}'",
        "DELETE FROM events",
        "TRUNCATE events",
        "ALTER TABLE events DISABLE TRIGGER ALL",
        "DROP TABLE events",
        // Only an appended event may queue a publish.
        "INSERT INTO outbox (aggregate_type, aggregate_id, sequence) VALUES ('Order', 'a', 1)",
        "UPDATE idempotency SET request_hash = 'x'",
        "CREATE TABLE mine (x int)",
    ] {
        let failed = as_service(&w, sql).await;
        assert!(
            failed.as_deref() == Some(DENIED),
            "{sql}: expected permission denied, got {failed:?}"
        );
    }
    assert_eq!(w.count("SELECT count(*) FROM events").await, 1);
    // What it may remove is transient: acknowledged outbox rows.
    assert_eq!(as_service(&w, "DELETE FROM outbox").await, None);
}

#[tokio::test]
async fn every_login_needs_its_password_and_no_role_reaches_the_maintenance_database() {
    let w = World::new("logins").await;
    let without_password = w.db.app.replacen(testkit::APP_ROLE.1, "wrong", 1);
    refused_with(&without_password, "28P01", "a wrong password is refused").await;

    let maintenance = format!("{}/postgres", w.db.app.rsplit_once('/').unwrap().0);
    refused_with(
        &maintenance,
        "42501",
        "CONNECT on postgres is revoked from PUBLIC",
    )
    .await;
}

/// Asserts that a login at `url` is refused with the SQLSTATE `code`, for `why`.
async fn refused_with(url: &str, code: &str, why: &str) {
    let refused = sqlx::PgConnection::connect(url).await.expect_err(why);
    let got = refused.as_database_error().and_then(|d| d.code());
    assert_eq!(got.as_deref(), Some(code), "{why}: {refused}");
}

/// A replica that starts migrates and grants as the owner while the other replicas run as the
/// service's role (every rollout does this): the service's role must never be without its
/// privileges in between, as it was while the grants ran one statement at a time (REVOKE
/// ALL first), which failed the other replicas' commands with "permission denied".
#[tokio::test]
async fn granting_again_never_leaves_the_running_role_without_its_privileges() {
    let w = World::new("regrant").await;
    let role = service_kit::db::user_of(&w.db.app).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    // Two replicas starting at once, each granting again and again.
    let replica = || async {
        let mut owner = sqlx::PgConnection::connect(&w.db.owner).await.unwrap();
        for _ in 0..100 {
            event_store::SCHEMA.apply(&mut owner, &role).await.unwrap();
        }
    };
    let starts = async {
        tokio::join!(replica(), replica());
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    // A running replica reads meanwhile.
    let running = async {
        let mut app = sqlx::PgConnection::connect(&w.db.app).await.unwrap();
        let mut reads = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let read: Result<i64, _> = sqlx::query_scalar("SELECT count(*) FROM events")
                .fetch_one(&mut app)
                .await;
            read.unwrap_or_else(|e| panic!("a running replica's read failed after {reads}: {e}"));
            reads += 1;
        }
        reads
    };
    let ((), reads) = tokio::join!(starts, running);
    assert!(reads > 10, "the reads ran beside the grants ({reads})");
}
