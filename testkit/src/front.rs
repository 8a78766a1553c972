//! The gateway in front of real services, with a real OpenID provider: what a frontend
//! talks to.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use messaging::Namespace;
use service_kit::env::Env;
use tokio_util::sync::CancellationToken;

use crate::oidc::Oidc;
use crate::stack::{Options, Stack};

/// Every service, the gateway and the provider.
pub struct Front {
    pub stack: Stack,
    pub oidc: Oidc,
    /// The gateway's base URL.
    pub url: String,
    /// The SMTP sink the order emails go to ([`Front::start_mailing`]).
    pub mail: Option<crate::mail::MailSink>,
    _stop: Stopper,
}

/// Stops a gateway when dropped.
pub struct Stopper(pub CancellationToken);

impl Drop for Stopper {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The internal services a gateway sends to: orders, inventory, payments, orchestrator,
/// projections, query API.
pub struct Upstreams<'a> {
    pub orders: &'a str,
    pub inventory: &'a str,
    pub payments: &'a str,
    pub orchestrator: &'a str,
    pub projections: &'a str,
    pub query: &'a str,
    pub notifications: &'a str,
}

impl Upstreams<'_> {
    /// All of them at one address.
    pub fn all(url: &str) -> Upstreams<'_> {
        Upstreams {
            orders: url,
            inventory: url,
            payments: url,
            orchestrator: url,
            projections: url,
            query: url,
            notifications: url,
        }
    }
}

/// A stand-in for the services behind a gateway that records the path (and `traceparent`)
/// of every request that reaches it and answers `{"items": []}` after `delay`.
pub struct Recorder {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A request that reached a [`Recorder`]: its path (and query), and its `traceparent`.
type Seen = (String, Option<String>);

impl Recorder {
    pub async fn start(delay: Duration) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
                let log = log.clone();
                async move {
                    let traceparent = headers
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    log.lock().unwrap().push((uri.to_string(), traceparent));
                    tokio::time::sleep(delay).await;
                    axum::Json(serde_json::json!({"items": []}))
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the recorder");
        let addr = listener.local_addr().expect("an address");
        // It stands in for an internal service, so it speaks as one: HTTPS, admitting the
        // gateway by its certificate.
        let url = match crate::tls_as("query") {
            Some(tls) => {
                let config = tls.server_config().expect("the tests' TLS files");
                tokio::spawn(service_kit::https::serve(
                    listener,
                    app,
                    Some(config),
                    CancellationToken::new(),
                ));
                format!("https://{addr}")
            }
            None => {
                tokio::spawn(async move { axum::serve(listener, app).await });
                format!("http://{addr}")
            }
        };
        Self { url, seen }
    }

    /// The paths (with queries) that reached it, in order.
    pub fn seen(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(path, _)| path.clone())
            .collect()
    }

    /// The `traceparent` each request that reached it carried, in order.
    pub fn traceparents(&self) -> Vec<Option<String>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, traceparent)| traceparent.clone())
            .collect()
    }
}

/// Starts a gateway in this process on a free port; returns its URL and what stops it.
pub async fn gateway(
    oidc: &Oidc,
    ns: &Namespace,
    upstreams: Upstreams<'_>,
    extra: &[(&'static str, String)],
) -> (String, Stopper) {
    let (url, _, stop) = gateway_with_metrics(oidc, ns, upstreams, extra).await;
    (url, stop)
}

/// A [`gateway`] in a namespace of its own whose every upstream is one [`Recorder`] that
/// answers after `delay`: the recorder, the gateway's URL and what stops it.
pub async fn recorded(
    oidc: &Oidc,
    delay: std::time::Duration,
    extra: &[(&'static str, String)],
) -> (Recorder, String, Stopper) {
    let recorder = Recorder::start(delay).await;
    let ns = crate::unique_namespace();
    let (url, stop) = gateway(oidc, &ns, Upstreams::all(&recorder.url), extra).await;
    (recorder, url, stop)
}

/// [`gateway`], with the address of its metrics listener (internal, apart from the public
/// side).
pub async fn gateway_with_metrics(
    oidc: &Oidc,
    ns: &Namespace,
    upstreams: Upstreams<'_>,
    extra: &[(&'static str, String)],
) -> (String, std::net::SocketAddr, Stopper) {
    let mut env = vec![
        ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
        // Its metrics listener, apart from the public side: any free port.
        ("METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ("NATS_URL", crate::infra().nats_url.clone()),
        ("NATS_CREDENTIALS_DIR", crate::nats_credentials_dir()),
        crate::tls_env(),
        ("NATS_NAMESPACE", ns.as_str().to_owned()),
        ("OIDC_ISSUER_URL", oidc.issuer.clone()),
        ("OIDC_AUDIENCE", oidc.audience.clone()),
        ("ORDERS_URL", upstreams.orders.to_owned()),
        ("INVENTORY_URL", upstreams.inventory.to_owned()),
        ("PAYMENTS_URL", upstreams.payments.to_owned()),
        ("ORCHESTRATOR_URL", upstreams.orchestrator.to_owned()),
        ("PROJECTIONS_URL", upstreams.projections.to_owned()),
        ("QUERY_URL", upstreams.query.to_owned()),
        ("NOTIFICATIONS_URL", upstreams.notifications.to_owned()),
    ];
    env.extend(extra.iter().cloned());
    let settings = gateway::Settings::from_env(&Env::from_pairs(env)).expect("gateway settings");
    let app = gateway::App::build(&settings)
        .await
        .expect("build the gateway");
    let url = app.url();
    let metrics = app
        .metrics_addr()
        .expect("the gateway serves its metrics apart");
    let stop = CancellationToken::new();
    tokio::spawn(app.run(stop.clone()));
    (url, metrics, Stopper(stop))
}

impl Front {
    /// `method path` through the gateway with `token` (and a JSON body): the status and the
    /// JSON answer (null when there is none).
    pub async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the gateway answers");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// The whole stack (saga, projections, query API) behind a gateway; `extra` is more
    /// gateway environment (limits, say).
    pub async fn start(extra: &[(&'static str, String)]) -> Self {
        Self::start_paying_with(extra, Vec::new()).await
    }

    /// As [`Front::start`], with the payment provider's settings (`LocalStripe::env`, say;
    /// empty: the test provider).
    pub async fn start_paying_with(
        extra: &[(&'static str, String)],
        payments_env: Vec<(&'static str, String)>,
    ) -> Self {
        Self::start_all(extra, payments_env, None).await
    }

    /// As [`Front::start`], with an SMTP sink that the notification service sends the order
    /// emails to (`front.mail`).
    pub async fn start_mailing(extra: &[(&'static str, String)]) -> Self {
        let sink = crate::mail::MailSink::start().await;
        Self::start_all(extra, Vec::new(), Some(sink)).await
    }

    async fn start_all(
        extra: &[(&'static str, String)],
        payments_env: Vec<(&'static str, String)>,
        mail: Option<crate::mail::MailSink>,
    ) -> Self {
        let notifications_env = match &mail {
            Some(sink) => vec![
                ("SMTP_URL", sink.smtp_url.clone()),
                ("MAIL_BACKOFF_BASE_MS", "200".to_owned()),
            ],
            None => Vec::new(),
        };
        let stack = Stack::start_with(Options {
            reads: true,
            notifications: true,
            business_deadline_secs: 3,
            payments_env,
            notifications_env,
            ..Options::default()
        })
        .await;
        let oidc = Oidc::start().await;
        let [orders, inventory, payments, orchestrator] = &stack.urls;
        let (projections, query) = (&stack.reads[0], &stack.reads[1]);
        let notifications = stack.notifications.as_deref().expect("notifications run");
        let (url, stop) = gateway(
            &oidc,
            &stack.orders.ns,
            Upstreams {
                orders,
                inventory,
                payments,
                orchestrator,
                projections,
                query,
                notifications,
            },
            extra,
        )
        .await;
        Self {
            stack,
            oidc,
            url,
            mail,
            _stop: stop,
        }
    }
}
