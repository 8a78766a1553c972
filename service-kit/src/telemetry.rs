//! Logging and tracing set-up shared by every binary: `pretty` for people, `json` (one object
//! a line) for machines, filtered by `RUST_LOG`; spans for OpenTelemetry, exported over OTLP
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use std::str::FromStr;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::json_log::JsonLines;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pretty" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?}; use pretty or json")),
        }
    }
}

/// Logging and tracing settings every binary reads the same way.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub filter: String,
    pub format: LogFormat,
    /// OTLP/HTTP base URL (`/v1/traces` is appended); traces are exported only when set.
    pub otlp_endpoint: Option<String>,
    /// `OTEL_SDK_DISABLED=true`: no OpenTelemetry layer at all (no spans' ids in logs, and
    /// each incoming `traceparent` passed on unchanged), for measuring what tracing costs.
    pub otel_disabled: bool,
}

impl LogSettings {
    pub fn from_env(env: &crate::env::Env) -> Result<Self, crate::env::EnvError> {
        Ok(Self {
            filter: env.string_or("RUST_LOG", "info"),
            format: env.parse_or("LOG_FORMAT", LogFormat::Pretty)?,
            otlp_endpoint: env
                .get("OTEL_EXPORTER_OTLP_ENDPOINT")
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned),
            otel_disabled: env.bool_or("OTEL_SDK_DISABLED", false)?,
        })
    }
}

/// Keeps the tracer provider alive; dropping it exports the spans still queued.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports every finished span now. Blocks: call it from a blocking context.
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            eprintln!("flushing traces failed: {e}");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("flushing traces failed: {e}");
        }
    }
}

/// Installs the global subscriber: log lines filtered by `RUST_LOG`, and spans at INFO and
/// above for OpenTelemetry whatever the log filter, so trace context propagates even when
/// logs are quiet. Call once, first thing in `main`, and keep the guard until the end.
pub fn init(service: &'static str, settings: &LogSettings) -> Telemetry {
    init_writing_to(service, settings, std::io::stdout)
}

/// [`init`], with the log lines written to `writer` instead of stdout (a test that reads
/// every line the services write).
pub fn init_writing_to<W>(service: &'static str, settings: &LogSettings, writer: W) -> Telemetry
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|e| {
        eprintln!(
            "RUST_LOG {:?} is invalid ({e}); using info",
            settings.filter
        );
        EnvFilter::new("info")
    });
    let provider = tracer_provider(service, settings.otlp_endpoint.as_deref());
    // No per-span thread, source location or busy/idle timing: each is work on every span
    // (timing on every poll of an async span) that the traces do not need.
    let otel = (!settings.otel_disabled).then(|| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            .with_filter(LevelFilter::INFO)
    });
    let logs = match settings.format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines {
                service,
                version: VERSION,
            })
            .boxed(),
    };
    let result = tracing_subscriber::registry()
        .with(otel)
        .with(logs.with_filter(filter))
        .try_init();
    if result.is_ok() {
        tracing::info!(
            service,
            version = VERSION,
            otlp_endpoint = settings.otlp_endpoint.as_deref().unwrap_or("none"),
            "logging started"
        );
    }
    Telemetry { provider }
}

/// The version every binary reports: the workspace's.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Spans get ids whether or not they leave the process (log lines carry them); they are
/// exported in batches only when an endpoint is configured.
fn tracer_provider(service: &'static str, endpoint: Option<&str>) -> SdkTracerProvider {
    let resource = Resource::builder_empty()
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.version", VERSION))
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = endpoint {
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url.clone())
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => eprintln!("cannot export traces to {url} ({e}); they stay in this process"),
        }
    }
    builder.build()
}
