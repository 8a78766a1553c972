//! Every service's statements have a time limit in Postgres itself: one that runs past it is
//! cancelled by the server (not only abandoned by the client, which would leave it running and
//! holding its locks), and the request that ran it gets a 503 it may retry.

use std::time::{Duration, Instant};

use service_kit::db::DatabaseSettings;
use service_kit::problem::Problem;
use service_kit::secret::Secret;

#[tokio::test]
async fn a_statement_past_its_timeout_is_cancelled_by_postgres_and_answered_503() {
    let db = testkit::fresh_db("stmt").await;
    let settings = DatabaseSettings {
        url: Secret::new(db.app.clone()),
        owner_url: None,
        max_connections: 2,
        statement_timeout: Duration::from_millis(200),
        session: Vec::new(),
    };
    let pool = settings.connect().await.unwrap();
    let started = Instant::now();
    let error = sqlx::query("SELECT pg_sleep(5)")
        .execute(&pool)
        .await
        .expect_err("the statement is cancelled");
    assert!(started.elapsed() < Duration::from_secs(3));
    let code = error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("57014"), "{error}");
    let problem = Problem::internal(&error);
    assert_eq!(problem.status.as_u16(), 503);
    assert_eq!(problem.retry_after_secs, Some(1));
    // The connection is still good for the next statement.
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(one, 1);
}
