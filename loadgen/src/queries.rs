//! Figure 4: `GET /orders/{id}` from the query API at 64 connections, beside a bare axum
//! handler running the same statement on the same read database.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use crate::drive::{drive, expect_status, http_client, rate_and_latency, HttpFigure, Pace, Run};
use crate::procs::Proc;
use crate::Bench;

pub const CLIENTS: usize = 64;

#[derive(Debug, Clone, Serialize)]
pub struct QueriesFigure {
    pub orders: usize,
    pub streamshop: HttpFigure,
    pub bare: HttpFigure,
}

pub async fn run(
    b: &Bench,
    query_url: &str,
    read_url: &str,
    ids: &[Uuid],
) -> anyhow::Result<QueriesFigure> {
    println!("figure 4: queries");
    anyhow::ensure!(!ids.is_empty(), "figure 2 confirmed no order to read");
    let ids: Arc<Vec<Uuid>> = Arc::new(ids.to_vec());
    let streamshop = measure(b, query_url, &ids, "streamshop").await?;
    let bare = Proc::start(
        "bare-reads",
        &b.self_exe,
        &[
            "bare-server".into(),
            "--max-connections".into(),
            "20".into(),
        ],
        // The URL holds a password: through the environment, never the arguments.
        &[("DATABASE_URL".to_owned(), read_url.to_owned())],
        false,
        &b.logs,
    )
    .await?;
    let bare_figure = measure(b, &bare.base_url, &ids, "bare").await;
    bare.stop().await;
    Ok(QueriesFigure {
        orders: ids.len(),
        streamshop,
        bare: bare_figure?,
    })
}

async fn measure(
    b: &Bench,
    base: &str,
    ids: &Arc<Vec<Uuid>>,
    label: &str,
) -> anyhow::Result<HttpFigure> {
    let warm = get(base, ids, Pace::Closed, Duration::from_secs(1)).await;
    anyhow::ensure!(
        warm.ok > 0,
        "{label}: no read succeeded: {:?}",
        warm.first_error
    );
    Ok(rate_and_latency(label, CLIENTS, b.repeats, |pace| {
        get(base, ids, pace, b.duration)
    })
    .await)
}

async fn get(base: &str, ids: &Arc<Vec<Uuid>>, pace: Pace, duration: Duration) -> Run {
    let client = http_client(CLIENTS);
    let (base, ids) = (base.to_owned(), ids.clone());
    drive(CLIENTS, pace, duration, move |i| {
        let id = ids[(i as usize * 7919) % ids.len()];
        let request = client.get(format!("{base}/orders/{id}"));
        async move { expect_status(request, 200).await.map(|_| ()) }
    })
    .await
}
