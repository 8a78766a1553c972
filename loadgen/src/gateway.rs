//! Figure 6: the gateway's own cost. `POST /api/orders` and `GET /api/orders/{id}` through
//! the gateway (with real customer tokens from the local OpenID provider, verified on every
//! request), beside the same requests sent straight to the orders service and the query API,
//! in the same run; and the catalog (`GET /api/products/{sku}`) through the gateway's shared
//! cache beside the same reads through a gateway with the cache off.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use uuid::Uuid;

use crate::commands::{bench_sku, order_body, BENCH_PRODUCTS};
use crate::drive::{drive, expect_status, http_client, HttpFigure, Pace, Run, LATENCY_LOAD};
use crate::procs::{Cost, Monitor, Proc, Watched};
use crate::stats::{LatencySpread, Spread};
use crate::Bench;

pub const CLIENTS: usize = 64;

/// Customers with a token each; the requests spread over them.
const CUSTOMERS: usize = 16;

/// Orders placed before the reads, for the reads to choose from.
const ORDERS: u64 = 2_000;

const NAMESPACE: &str = "benchgw";

/// The two sides of the gateway's cost.
const SIDES: [&str; 2] = ["direct", "through the gateway"];

/// One request, straight to the service and through the gateway.
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    pub direct: HttpFigure,
    pub gateway: HttpFigure,
    /// Through the gateway ÷ direct, of each pair of closed-loop runs made back to back.
    pub share: Spread,
}

#[derive(Debug, Clone, Serialize)]
pub struct GatewayFigure {
    /// `POST /orders` and `POST /api/orders`.
    pub place: Pair,
    /// `GET /orders/{id}` (query API) and `GET /api/orders/{id}`.
    pub read: Pair,
    /// `GET /api/products/{sku}` through a gateway with its catalog cache off (`direct`) and
    /// on (`gateway`, the default `CATALOG_CACHE_MS`).
    pub catalog: Pair,
    /// CPU per request through the gateway, of the gateway and of the service behind it, in
    /// microseconds: (request, gateway, service).
    pub cpu_per_request: Vec<(String, f64, f64)>,
}

impl GatewayFigure {
    /// The larger share of throughput the gateway costs, of the two requests.
    pub fn cost(&self) -> f64 {
        1.0 - self.place.share.median.min(self.read.share.median)
    }
}

/// The local OpenID provider (`xtask/oidc`), killed when dropped.
struct Provider {
    _child: tokio::process::Child,
    issuer: String,
    scripts: std::path::PathBuf,
}

impl Provider {
    async fn start(b: &Bench) -> anyhow::Result<Self> {
        let scripts = std::env::current_dir()?.join("xtask/oidc");
        let port = crate::procs::free_port();
        let issuer = format!("http://127.0.0.1:{port}");
        let keys = b.logs.join("bench-oidc-keys.json");
        let _ = std::fs::remove_file(&keys);
        let child = tokio::process::Command::new("node")
            .arg(scripts.join("provider.mjs"))
            .env("OIDC_PORT", port.to_string())
            .env("OIDC_KEYS", &keys)
            .env("OIDC_OPERATOR_SECRET", Uuid::new_v4().simple().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting the OpenID provider (node xtask/oidc/provider.mjs)")?;
        let discovery = format!("{issuer}/.well-known/openid-configuration");
        for _ in 0..600 {
            if reqwest::get(&discovery)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(Self {
                    _child: child,
                    issuer,
                    scripts,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the OpenID provider did not start in 30 s")
    }

    /// A customer's token, from the authorization code flow.
    async fn token(&self, customer: Uuid) -> anyhow::Result<String> {
        let out = tokio::process::Command::new("node")
            .arg(self.scripts.join("login.mjs"))
            .args([
                "--issuer",
                &self.issuer,
                "--customer",
                &customer.to_string(),
            ])
            .output()
            .await
            .context("running node login.mjs")?;
        if !out.status.success() {
            bail!("login.mjs: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }
}

pub async fn run(b: &Bench) -> anyhow::Result<GatewayFigure> {
    println!("figure 6: the gateway");
    let provider = Provider::start(b).await?;
    let orders_db = b.cluster.fresh("bench_gw_orders").await?;
    let read_db = b.cluster.fresh("bench_gw_read").await?;
    let inventory_db = b.cluster.fresh("bench_gw_inventory").await?;
    let orders = b.service("orders", &orders_db, NAMESPACE, &[]).await?;
    let inventory = b
        .service("inventory", &inventory_db, NAMESPACE, &[])
        .await?;
    let projections = b.service("projections", &read_db, NAMESPACE, &[]).await?;
    let query = b.service("query-api", &read_db, NAMESPACE, &[]).await?;
    // No limit the benchmark could reach: the figure is the gateway's cost, not its limiter.
    let mut env = b.transport.env();
    env.extend(
        [
            ("NATS_NAMESPACE", NAMESPACE),
            ("ORDERS_URL", &orders.base_url),
            ("QUERY_URL", &query.base_url),
            ("OIDC_ISSUER_URL", &provider.issuer),
            ("RATE_LIMIT_PER_MINUTE", "100000000"),
            ("RATE_LIMIT_BURST", "1000000"),
            // Each customer's first token is verified once, charged to the client address.
            ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "100000000"),
            ("RATE_LIMIT_ANONYMOUS_BURST", "1000000"),
            ("METRICS_ADDR", "127.0.0.1:0"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let start = |name: &'static str, env: Vec<(String, String)>| async move {
        Proc::start(name, &b.bins.join("gateway"), &[], &env, false, &b.logs).await
    };
    let gateway = start("gateway", env.clone()).await?;
    // The same gateway with its catalog cache off, for the catalog's pair.
    env.push(("CATALOG_CACHE_MS".into(), "0".into()));
    let uncached = start("gateway-uncached", env).await?;
    crate::sagas::create_products_at(&inventory.base_url).await?;
    expect_status(
        http_client(1).get(format!(
            "{}/products/{}?min_version=1",
            query.base_url,
            bench_sku(BENCH_PRODUCTS - 1)
        )),
        200,
    )
    .await
    .map_err(anyhow::Error::msg)?;

    let mut customers = Vec::new();
    for n in 0..CUSTOMERS {
        let id = order_body(n as u64).customer_id;
        customers.push((id, provider.token(id).await?));
    }
    let customers = Arc::new(customers);
    let ids = Arc::new(seed_orders(&orders.base_url, &query.base_url, &customers).await?);

    let placing = pair(
        "POST /orders",
        SIDES,
        b,
        |pace| place(&orders.base_url, "/orders", false, &customers, b, pace),
        |pace| place(&gateway.base_url, "/api/orders", true, &customers, b, pace),
    )
    .await?;
    let reading = pair(
        "GET /orders/{id}",
        SIDES,
        b,
        |pace| read(&query.base_url, "/orders", false, &ids, &customers, b, pace),
        |pace| {
            read(
                &gateway.base_url,
                "/api/orders",
                true,
                &ids,
                &customers,
                b,
                pace,
            )
        },
    )
    .await?;
    let catalog = pair(
        "GET /api/products/{sku}",
        ["uncached", "cached"],
        b,
        |pace| read_catalog(&uncached.base_url, b, pace),
        |pace| read_catalog(&gateway.base_url, b, pace),
    )
    .await?;
    // One more closed-loop run of each, with the processes' CPU counted.
    let watch = |service: &Proc| {
        vec![
            Watched {
                name: "gateway".into(),
                pid: gateway.pid,
                with_children: false,
            },
            Watched {
                name: service.name.clone(),
                pid: service.pid,
                with_children: false,
            },
        ]
    };
    let mut cpu_per_request = Vec::new();
    let monitor = Monitor::start(watch(&orders));
    let run = place(
        &gateway.base_url,
        "/api/orders",
        true,
        &customers,
        b,
        Pace::Closed,
    )
    .await;
    cpu_per_request.push(per_request("POST /orders", &run, monitor.finish().await));
    let monitor = Monitor::start(watch(&query));
    let run = read(
        &gateway.base_url,
        "/api/orders",
        true,
        &ids,
        &customers,
        b,
        Pace::Closed,
    )
    .await;
    cpu_per_request.push(per_request(
        "GET /orders/{id}",
        &run,
        monitor.finish().await,
    ));

    for p in [gateway, uncached, query, projections, inventory, orders] {
        p.stop().await;
    }
    let figure = GatewayFigure {
        place: placing,
        read: reading,
        catalog,
        cpu_per_request,
    };
    println!(
        "  the gateway costs {:.0}% of throughput",
        figure.cost() * 100.0
    );
    Ok(figure)
}

/// (request, gateway µs, service µs) of CPU per successful request of `run`.
fn per_request(what: &str, run: &Run, costs: Vec<Cost>) -> (String, f64, f64) {
    let per = |i: usize| costs.get(i).map_or(0.0, |c| c.cpu_seconds) * 1e6 / run.ok.max(1) as f64;
    let (gateway, service) = (per(0), per(1));
    println!(
        "  CPU per {what} through the gateway: gateway {gateway:.0} µs, service {service:.0} µs"
    );
    (what.to_owned(), gateway, service)
}

/// The request straight to the service (`direct`) and through the gateway (`through`), in
/// turns (direct, gateway, direct, ...) so the machine's drift weighs on both alike: a
/// warm-up each, closed-loop runs for the rates and each pair's share, then open-loop runs at
/// 80% of each side's median rate for the latencies.
async fn pair<D, G, FD, FG>(
    what: &str,
    sides: [&str; 2],
    b: &Bench,
    direct: D,
    through: G,
) -> anyhow::Result<Pair>
where
    D: Fn(Pace) -> FD,
    G: Fn(Pace) -> FG,
    FD: std::future::Future<Output = Run>,
    FG: std::future::Future<Output = Run>,
{
    for (side, warm) in [
        (sides[0], direct(Pace::Closed).await),
        (sides[1], through(Pace::Closed).await),
    ] {
        anyhow::ensure!(
            warm.ok > 0,
            "{what} ({side}): nothing succeeded while warming up: {:?}",
            warm.first_error
        );
    }
    let (mut runs, mut shares) = ([Vec::new(), Vec::new()], Vec::new());
    for _ in 0..b.repeats {
        let d = direct(Pace::Closed).await;
        let g = through(Pace::Closed).await;
        shares.push(crate::stats::ratio(g.rate(), d.rate()));
        runs[0].push(d);
        runs[1].push(g);
    }
    let rates = runs
        .each_ref()
        .map(|r| Spread::of(&r.iter().map(Run::rate).collect::<Vec<_>>()));
    let mut latencies = [Vec::new(), Vec::new()];
    for _ in 0..b.repeats {
        let d = direct(Pace::Open {
            rate: rates[0].median * LATENCY_LOAD,
        })
        .await;
        let g = through(Pace::Open {
            rate: rates[1].median * LATENCY_LOAD,
        })
        .await;
        latencies[0].push(d);
        latencies[1].push(g);
    }
    let figure = |side: usize| {
        let closed = &runs[side];
        let open = &latencies[side];
        HttpFigure {
            clients: CLIENTS,
            rate: rates[side].clone(),
            latency: LatencySpread::of(&open.iter().map(|r| r.latency).collect::<Vec<_>>()),
            latency_rate: rates[side].median * LATENCY_LOAD,
            errors: closed.iter().chain(open).map(|r| r.errors).sum(),
        }
    };
    let share = Spread::of(&shares);
    println!(
        "  {what}, {CLIENTS} clients: {} {}/s, {} {}/s, share {:.0}% ({:.0}–{:.0}%)",
        sides[0],
        rates[0].show(0),
        sides[1],
        rates[1].show(0),
        share.median * 100.0,
        share.min * 100.0,
        share.max * 100.0
    );
    Ok(Pair {
        direct: figure(0),
        gateway: figure(1),
        share,
    })
}

/// `GET {gateway}/api/products/{sku}`, anonymous, spread over the benchmark's products.
async fn read_catalog(gateway: &str, b: &Bench, pace: Pace) -> Run {
    let client = http_client(CLIENTS);
    let base = format!("{gateway}/api/products");
    drive(CLIENTS, pace, b.duration, move |i| {
        let request = client.get(format!("{base}/{}", bench_sku((i * 7919) % BENCH_PRODUCTS)));
        async move { expect_status(request, 200).await.map(|_| ()) }
    })
    .await
}

/// Places [`ORDERS`] orders straight at the orders service and waits until the query API
/// has the last; returns (order, index of its customer).
async fn seed_orders(
    orders: &str,
    query: &str,
    customers: &Arc<Vec<(Uuid, String)>>,
) -> anyhow::Result<Vec<(Uuid, usize)>> {
    let client = http_client(16);
    let mut ids = Vec::new();
    for i in 0..ORDERS {
        let who = i as usize % customers.len();
        let mut body = order_body(i);
        body.customer_id = customers[who].0;
        let answer = expect_status(client.post(format!("{orders}/orders")).json(&body), 202)
            .await
            .map_err(anyhow::Error::msg)?;
        let answer: serde_json::Value = serde_json::from_slice(&answer)?;
        let id = answer["order_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .context("an order id")?;
        ids.push((id, who));
    }
    let (last, _) = ids.last().copied().context("no order placed")?;
    expect_status(
        client.get(format!("{query}/orders/{last}?min_version=1")),
        200,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    Ok(ids)
}

/// `POST {base}{path}`: with a customer's token and no customer id through the gateway
/// (`through_gateway`), with the customer id in the body straight to the service.
async fn place(
    base: &str,
    path: &str,
    through_gateway: bool,
    customers: &Arc<Vec<(Uuid, String)>>,
    b: &Bench,
    pace: Pace,
) -> Run {
    let client = http_client(CLIENTS);
    let url = format!("{base}{path}");
    let seed = b.next_seed();
    let customers = customers.clone();
    drive(CLIENTS, pace, b.duration, move |i| {
        let (customer, token) = &customers[i as usize % customers.len()];
        let mut body = serde_json::to_value(order_body(seed + i)).expect("JSON");
        let mut request = client
            .post(&url)
            .header("idempotency-key", Uuid::new_v4().to_string());
        if through_gateway {
            body.as_object_mut()
                .expect("an object")
                .remove("customer_id");
            request = request.bearer_auth(token);
        } else {
            body["customer_id"] = serde_json::json!(customer);
        }
        let request = request.json(&body);
        async move { expect_status(request, 202).await.map(|_| ()) }
    })
    .await
}

/// `GET {base}{path}/{id}` of the seeded orders, each with its customer's token through the
/// gateway.
async fn read(
    base: &str,
    path: &str,
    through_gateway: bool,
    ids: &Arc<Vec<(Uuid, usize)>>,
    customers: &Arc<Vec<(Uuid, String)>>,
    b: &Bench,
    pace: Pace,
) -> Run {
    let client = http_client(CLIENTS);
    let (base, path) = (base.to_owned(), path.to_owned());
    let (ids, customers) = (ids.clone(), customers.clone());
    drive(CLIENTS, pace, b.duration, move |i| {
        let (id, who) = ids[(i as usize * 7919) % ids.len()];
        let mut request = client.get(format!("{base}{path}/{id}"));
        if through_gateway {
            request = request.bearer_auth(&customers[who].1);
        }
        async move { expect_status(request, 200).await.map(|_| ()) }
    })
    .await
}
