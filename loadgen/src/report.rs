//! The benchmark report: every figure beside its same-run baseline, the targets, and the
//! machine it ran on; written as JSON and as Markdown.

use serde::Serialize;

use crate::commands::CommandsFigure;
use crate::gateway::GatewayFigure;
use crate::queries::QueriesFigure;
use crate::replay::ReplayFigure;
use crate::sagas::SagasFigure;
use crate::sides::Comparison;
use crate::stats::{ratio, LatencySpread};

/// Where and how the benchmark ran.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub date: String,
    pub cores: usize,
    pub cpu: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub commit: String,
    pub seconds_per_run: f64,
    pub repeats: usize,
    pub saga_step_seconds: f64,
    pub total_seconds: f64,
}

impl Machine {
    pub fn read(commit: String) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "unknown".into());
        let memory_kb: f64 = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Self {
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            memory_gib: memory_kb / (1024.0 * 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            commit,
            seconds_per_run: 0.0,
            repeats: 0,
            saga_step_seconds: 0.0,
            total_seconds: 0.0,
        }
    }
}

/// One target of the issue, checked against what was measured.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub commands: Option<CommandsFigure>,
    pub sagas: Option<SagasFigure>,
    pub queries: Option<QueriesFigure>,
    pub replay: Option<ReplayFigure>,
    pub gateway: Option<GatewayFigure>,
    /// Open connections (first) against the secured stack (second).
    pub security: Option<Comparison>,
    /// What sealing the payment token costs (with the security figure).
    pub field_encryption: Option<crate::field_encryption::FieldEncryption>,
    /// One NATS server (first) against a three-node cluster (second).
    pub cluster: Option<Comparison>,
    /// The notification delay, and the sagas with and without the notification service.
    pub notifications: Option<crate::notify::NotifyFigure>,
    pub targets: Vec<Target>,
}

/// Processes whose memory the 100 MB target is about: ours and NATS (Postgres's resident set
/// counts the shared buffers each backend touched, so it is shown but not judged).
fn judged(name: &str) -> bool {
    !(name == "postgres" || name.starts_with("loadgen"))
}

impl Report {
    /// Checks the targets against the figures that ran.
    pub fn check_targets(&mut self) {
        let mut t = Vec::new();
        let mut add = |what: &str, target: &str, measured: String, met: bool| {
            t.push(Target {
                what: what.into(),
                target: target.into(),
                measured,
                met,
            })
        };
        let pg64 = self
            .commands
            .as_ref()
            .and_then(|c| c.rows.iter().find(|r| r.clients == 64))
            .map(|r| r.postgres_inserts.median);
        if let Some(s) = &self.sagas {
            if let Some(step) = s.sustained_step() {
                add(
                    "durable write transactions per saga (amortised), at the sustained load",
                    "<= 10",
                    format!(
                        "{:.1} at {:.0}/s ({:.1} at {:.0}/s)",
                        step.transactions_per_saga,
                        step.offered_rate,
                        s.ladder[0].transactions_per_saga,
                        s.ladder[0].offered_rate
                    ),
                    step.transactions_per_saga <= 10.0,
                );
            }
            let rate = s.sustained_completed_per_second.median;
            if let Some(pg) = pg64 {
                let share = ratio(rate, pg);
                add(
                    "sagas/s with p99 < 250 ms, share of Postgres single-row commits/s (64 clients)",
                    ">= 4%",
                    format!(
                        "{:.2}% ({rate:.0} of {pg:.0}/s; p99 {:.0} ms)",
                        share * 100.0,
                        s.sustained_latency.p99.median
                    ),
                    share >= 0.04 && s.sustained_latency.p99.median < 250.0,
                );
            }
            add(
                "saga latency at 10 orders/s: p50 / p99",
                "< 20 / < 50 ms",
                format!(
                    "{:.1} / {:.1} ms",
                    s.light_latency.p50.median, s.light_latency.p99.median
                ),
                s.light_latency.p50.median < 20.0 && s.light_latency.p99.median < 50.0,
            );
        }
        if let Some(c) = &self.commands {
            if let Some(row) = c.rows.iter().find(|r| r.clients == 64) {
                let r = ratio(row.streamshop.rate.median, row.bare.rate.median);
                let p99 = row.streamshop.latency.p99.median;
                add(
                    "`POST /orders` at 64 clients, share of the bare handler; p99",
                    ">= 100%, p99 < 50 ms",
                    format!(
                        "{:.0}% ({:.0} vs {:.0}/s), p99 {p99:.1} ms",
                        r * 100.0,
                        row.streamshop.rate.median,
                        row.bare.rate.median
                    ),
                    r >= 1.0 && p99 < 50.0,
                );
            }
        }
        if let Some(h) = self.sagas.as_ref().and_then(|s| s.hot.as_ref()) {
            add(
                "hot product: sagas/s with every order on one SKU, share of the spread case",
                ">= 25%, no conflict reaching a client",
                format!(
                    "{:.0}% ({:.0} vs {:.0}/s), {} of {} hot orders not confirmed",
                    h.share.median * 100.0,
                    h.hot_completed_per_second.median,
                    h.spread_completed_per_second.median,
                    h.hot_not_confirmed,
                    h.orders * h.share.runs.len() as u64
                ),
                h.share.median >= 0.25 && h.hot_not_confirmed == 0,
            );
        }
        if let Some(r) = &self.replay {
            let share = ratio(r.rebuild_rate.median, r.jetstream_read_rate.median);
            add(
                "rebuild all projections, share of the raw JetStream ordered read",
                ">= 30%",
                format!(
                    "{:.0}% ({:.0} vs {:.0} events/s)",
                    share * 100.0,
                    r.rebuild_rate.median,
                    r.jetstream_read_rate.median
                ),
                share >= 0.30,
            );
        }
        if let Some(s) = &self.sagas {
            let worst = s
                .resources
                .iter()
                .filter(|c| judged(&c.name))
                .max_by(|a, b| a.peak_rss_mb.total_cmp(&b.peak_rss_mb));
            if let Some(w) = worst {
                add(
                    "peak RSS of every process during the saga figure",
                    "< 100 MB",
                    format!("largest: {} {:.0} MB", w.name, w.peak_rss_mb),
                    w.peak_rss_mb < 100.0,
                );
            }
            add(
                "CPU per saga, all processes but the load generator",
                "reported",
                format!("{:.1} ms", s.cpu_seconds_per_saga * 1000.0),
                true,
            );
        }
        if let Some(q) = &self.queries {
            let r = ratio(q.streamshop.rate.median, q.bare.rate.median);
            add(
                "GET /orders/{id} at 64 connections vs bare handler",
                ">= 80%",
                format!("{:.0}%", r * 100.0),
                r >= 0.8,
            );
        }
        if let Some(g) = &self.gateway {
            let cost = g.cost();
            add(
                "the gateway's cost: POST /api/orders and GET /api/orders/{id} vs direct",
                "<= 15% of throughput",
                format!("{:.0}%", cost * 100.0),
                cost <= 0.15,
            );
        }
        if let Some(s) = &self.security {
            let cost = s.cost();
            add(
                "TLS and NATS permissions: commands/s, sagas/s and stream reads vs open connections",
                "<= 10% of throughput",
                format!(
                    "{:.0}% (secured / open: commands {:.0}%, sagas {:.0}%, stream reads {:.0}%)",
                    cost * 100.0,
                    s.commands_share.median * 100.0,
                    s.sagas_share.median * 100.0,
                    s.stream_read_share.median * 100.0
                ),
                cost <= 0.10,
            );
        }
        if let Some(c) = &self.cluster {
            add(
                "a three-node cluster (R3) on this machine: commands/s, sagas/s and stream reads vs one server",
                "reported",
                format!(
                    "commands {:.0}%, sagas {:.0}%, stream reads {:.0}% of one server's",
                    c.commands_share.median * 100.0,
                    c.sagas_share.median * 100.0,
                    c.stream_read_share.median * 100.0
                ),
                true,
            );
        }
        self.targets = t;
    }

    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut o = String::new();
        let mut line = |s: String| {
            o.push_str(&s);
            o.push('\n');
        };
        line(format!("### Benchmark: {}, {} cores", m.date, m.cores));
        line(String::new());
        line(format!(
            "{} · {:.0} GiB · Linux {} · commit `{}` · took {:.0} s. Every figure is the median of \
             {} runs, with the smallest and largest in brackets; each ratio divides by a baseline \
             measured in the same run on the same machine.",
            m.cpu, m.memory_gib, m.kernel, m.commit, m.total_seconds, m.repeats
        ));
        line(String::new());
        if !self.targets.is_empty() {
            line("| target | wanted | measured | met |".into());
            line("|---|---|---|---|".into());
            for t in &self.targets {
                line(format!(
                    "| {} | {} | {} | {} |",
                    t.what,
                    t.target,
                    t.measured,
                    if t.met { "yes" } else { "**no**" }
                ));
            }
            line(String::new());
        }
        self.commands_section(&mut line);
        self.sagas_section(&mut line);
        self.replay_section(&mut line);
        self.export_section(&mut line);
        self.queries_section(&mut line);
        self.resources_section(&mut line);
        self.gateway_section(&mut line);
        self.security_section(&mut line);
        self.field_encryption_section(&mut line);
        self.cluster_section(&mut line);
        self.notifications_section(&mut line);
        o
    }

    fn notifications_section(&self, line: &mut dyn FnMut(String)) {
        let Some(n) = &self.notifications else {
            return;
        };
        line(
            "**9. Notifications**: orders each with its customer's address, the sagas with the \
              notification service running (emails to a mail server and a webhook endpoint \
              subscribed to `OrderConfirmed`, both played by loadgen) and with it paused, \
              alternating step by step (each running step after an unmeasured one that sends \
              what the paused step stored), at the saga figure's load and at 10/s; the delay \
              from `OrderConfirmed` stored to the webhook received and to the email taken by \
              the mail server; each step's cost over every process but loadgen, per saga (a \
              running step's until its orders' notifications arrived), and loadgen's own, \
              which holds the mail server's and the receiver's work; and per round, the running \
              step's saga p50 less the paused step's after it"
                .into(),
        );
        line(String::new());
        line("| orders/s offered | notifications | sagas/s | saga p50 ms | saga p99 ms | all confirmed | write transactions per saga | CPU ms per saga, every process | loadgen's CPU ms per saga | to the webhook p50 / p99 / max ms | to the email p50 / p99 / max ms | notifications' CPU ms per saga | p50 running − paused, per round, ms |".into());
        line("|---|---|---|---|---|---|---|---|---|---|---|---|---|".into());
        for l in &n.loads {
            let delay = |got: u64, p: &crate::stats::Percentiles| {
                format!(
                    "{:.1} / {:.1} / {:.1} ({got} of {})",
                    p.p50, p.p99, p.max, l.confirmed
                )
            };
            for (what, s, delays) in [
                (
                    "running",
                    &l.with,
                    Some((
                        delay(l.webhooks, &l.webhook_delay),
                        delay(l.emails, &l.email_delay),
                        format!("{:.2}", l.notifications_cpu_ms_per_saga),
                        l.p50_difference.show(1),
                    )),
                ),
                ("paused", &l.without, None),
            ] {
                let (webhook, email, cpu, difference) = delays.unwrap_or_default();
                line(format!(
                    "| {:.0} | {what} | {} | {} | {} | {} | {} | {} | {} | {webhook} | {email} | {cpu} | {difference} |",
                    l.rate,
                    s.completed_per_second.show(1),
                    s.latency.p50.show(1),
                    s.latency.p99.show(1),
                    if s.all_confirmed { "yes" } else { "**no**" },
                    s.transactions_per_saga.show(1),
                    s.cpu_ms_per_saga.show(1),
                    s.loadgen_cpu_ms_per_saga.show(1),
                ));
            }
        }
        line(String::new());
    }

    fn commands_section(&self, line: &mut dyn FnMut(String)) {
        if let Some(c) = &self.commands {
            line("**1. Commands** (`POST /orders`, 202; closed loop for the rate, open loop at 80% of it for latency)".into());
            line(String::new());
            line("| clients | streamshop orders/s | bare axum + sqlx | ratio | Postgres INSERT tx/s | ratio | streamshop p50 / p95 / p99 ms | bare p50 / p95 / p99 ms |".into());
            line("|---|---|---|---|---|---|---|---|".into());
            for r in &c.rows {
                line(format!(
                    "| {} | {} | {} | {:.0}% | {} | {:.0}% | {} at {:.0}/s | {} at {:.0}/s |",
                    r.clients,
                    r.streamshop.rate.show(0),
                    r.bare.rate.show(0),
                    ratio(r.streamshop.rate.median, r.bare.rate.median) * 100.0,
                    r.postgres_inserts.show(0),
                    ratio(r.streamshop.rate.median, r.postgres_inserts.median) * 100.0,
                    lat(&r.streamshop.latency),
                    r.streamshop.latency_rate,
                    lat(&r.bare.latency),
                    r.bare.latency_rate,
                ));
            }
            line(String::new());
        }
    }

    fn sagas_section(&self, line: &mut dyn FnMut(String)) {
        if let Some(s) = &self.sagas {
            line("**2. Sagas end to end** (placed → confirmed and visible in `GET /orders/{id}`; open-loop arrivals)".into());
            line(String::new());
            line("| offered/s | confirmed | completed/s | p50 ms | p95 ms | p99 ms | p99 < 250 ms, all confirmed | write transactions per saga |".into());
            line("|---|---|---|---|---|---|---|---|".into());
            for st in &s.ladder {
                line(format!(
                    "| {:.0} | {}/{} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {:.1} |",
                    st.offered_rate,
                    st.confirmed,
                    st.placed,
                    st.completed_per_second,
                    st.latency.p50,
                    st.latency.p95,
                    st.latency.p99,
                    if st.passed { "yes" } else { "no" },
                    st.transactions_per_saga
                ));
            }
            line(String::new());
            let pg64 = self
                .commands
                .as_ref()
                .and_then(|c| c.rows.iter().find(|r| r.clients == 64))
                .map_or(0.0, |r| r.postgres_inserts.median);
            let baseline = ratio(pg64, s.commits_per_order);
            if s.sustained_rate > 0.0 {
                line(format!(
                    "- Sustained (the highest offered load that passed, run {} times): offered \
                 {:.0}/s, completed {}/s, latency p50 / p95 / p99 {} ms.",
                    s.sustained_completed_per_second.runs.len(),
                    s.sustained_rate,
                    s.sustained_completed_per_second.show(0),
                    lat(&s.sustained_latency)
                ));
            } else {
                line(format!(
                    "- No offered load passed; at the lowest one: completed {}/s, latency p50 / \
                 p95 / p99 {} ms.",
                    s.sustained_completed_per_second.show(0),
                    lat(&s.sustained_latency)
                ));
            }
            line(format!(
                "- Baseline: {pg64:.0} Postgres commits/s (single-row INSERTs, 64 clients) ÷ \
             {:.1} write transactions per order = {baseline:.0} sagas/s; streamshop reaches \
             {:.0}% of it.",
                s.commits_per_order,
                ratio(s.sustained_completed_per_second.median, baseline) * 100.0
            ));
            line(format!(
                "- Light load, {:.0} orders/s: p50 / p95 / p99 {} ms.",
                s.light_rate,
                lat(&s.light_latency)
            ));
            if let Some(h) = &s.hot {
                line(format!(
                    "- Hot product: bursts of {} orders offered at {:.0}/s, alternating between \
                 every order on one SKU and orders spread over 100: {}/s on one SKU against \
                 {}/s spread, a share of {:.0}% ({:.0}–{:.0}%); hot latency p50 / p95 / p99 \
                 {} ms; {} hot orders not confirmed.",
                    h.orders,
                    h.burst_rate,
                    h.hot_completed_per_second.show(0),
                    h.spread_completed_per_second.show(0),
                    h.share.median * 100.0,
                    h.share.min * 100.0,
                    h.share.max * 100.0,
                    lat(&h.hot_latency),
                    h.hot_not_confirmed
                ));
            }
            line(String::new());
        }
    }

    fn replay_section(&self, line: &mut dyn FnMut(String)) {
        if let Some(r) = &self.replay {
            line(format!(
            "**3. Replay**: `projections rebuild all` from {} events ({} copies of figure 2's {} events, every id remapped per copy)",
            r.events, r.copies, r.template_events
        ));
            line(String::new());
            line("| | events/s | streamshop's share |".into());
            line("|---|---|---|".into());
            line(format!(
                "| rebuild all projections (streamshop) | {} | |",
                r.rebuild_rate.show(0)
            ));
            line(format!(
                "| JetStream ordered-consumer read | {} | {:.0}% |",
                r.jetstream_read_rate.show(0),
                ratio(r.rebuild_rate.median, r.jetstream_read_rate.median) * 100.0
            ));
            line(format!(
                "| Postgres batched INSERT (1,000 rows per statement, {} rows) | {} | {:.0}% |",
                r.postgres_batched_rows,
                r.postgres_batched_rate.show(0),
                ratio(r.rebuild_rate.median, r.postgres_batched_rate.median) * 100.0
            ));
            line(String::new());
            line(format!(
                "Check: `orders_view` holds {} orders after the rebuild ({} expected). Where \
             the last rebuild's {:.1} s went, in CPU seconds: {}.",
                r.orders_rebuilt,
                r.orders_expected,
                r.rebuild_seconds.runs.last().copied().unwrap_or(0.0),
                r.costs
                    .iter()
                    .map(|c| format!("{} {:.1}", c.name, c.cpu_seconds))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            line(String::new());
        }
    }

    fn export_section(&self, line: &mut dyn FnMut(String)) {
        if let Some(r) = self.replay.as_ref().filter(|r| !r.exports.is_empty()) {
            line(format!(
                "**3b. Export**: `events export` of the same {} events, one run per format",
                r.events
            ));
            line(String::new());
            line("| format | events/s | share of the JetStream read | CPU s | peak RSS MB | file MB |".into());
            line("|---|---|---|---|---|---|".into());
            for e in &r.exports {
                line(format!(
                    "| {} | {:.0} | {:.0}% | {:.1} | {:.0} | {:.0} |",
                    e.format,
                    e.rate,
                    ratio(e.rate, r.jetstream_read_rate.median) * 100.0,
                    e.cpu_seconds,
                    e.peak_rss_mb,
                    e.file_mb
                ));
            }
            line(String::new());
        }
    }

    fn queries_section(&self, line: &mut dyn FnMut(String)) {
        if let Some(q) = &self.queries {
            line(format!(
                "**4. Query API**: `GET /orders/{{id}}` at {} connections over {} orders",
                q.streamshop.clients, q.orders
            ));
            line(String::new());
            line("| | reads/s | ratio | p50 / p95 / p99 ms |".into());
            line("|---|---|---|---|".into());
            line(format!(
                "| query API | {} | {:.0}% | {} at {:.0}/s |",
                q.streamshop.rate.show(0),
                ratio(q.streamshop.rate.median, q.bare.rate.median) * 100.0,
                lat(&q.streamshop.latency),
                q.streamshop.latency_rate
            ));
            line(format!(
                "| bare axum + sqlx, same statement | {} | | {} at {:.0}/s |",
                q.bare.rate.show(0),
                lat(&q.bare.latency),
                q.bare.latency_rate
            ));
            line(String::new());
        }
    }

    fn resources_section(&self, line: &mut dyn FnMut(String)) {
        if let Some(s) = &self.sagas {
            line(format!(
            "**5. Resources** during figure 2 ({} sagas; CPU per saga {:.2} ms over all processes but the load generator)",
            s.sagas_while_monitored,
            s.cpu_seconds_per_saga * 1000.0
        ));
            line(String::new());
            line("| process | peak RSS MB | CPU s | CPU ms per saga |".into());
            line("|---|---|---|---|".into());
            for c in &s.resources {
                line(format!(
                    "| {}{} | {:.0} | {:.1} | {:.2} |",
                    c.name,
                    if c.processes > 1 {
                        format!(" ({} processes; largest one)", c.processes)
                    } else {
                        String::new()
                    },
                    c.peak_rss_mb,
                    c.cpu_seconds,
                    c.cpu_seconds * 1000.0 / (s.sagas_while_monitored.max(1) as f64)
                ));
            }
            line(String::new());
            if !s.statements.is_empty() {
                line(
                    "Postgres's costliest statements during figure 2 (`pg_stat_statements`):"
                        .into(),
                );
                line(String::new());
                line("| database | calls | total ms | mean ms | statement |".into());
                line("|---|---|---|---|---|".into());
                for st in s.statements.iter().take(8) {
                    line(format!(
                        "| {} | {} | {:.0} | {:.3} | `{}` |",
                        st.database,
                        st.calls,
                        st.total_ms,
                        st.mean_ms,
                        st.query.replace('|', "\\|")
                    ));
                }
                line(String::new());
            }
        }
    }

    fn gateway_section(&self, line: &mut dyn FnMut(String)) {
        if let Some(g) = &self.gateway {
            line(format!(
                "**6. Gateway**: the same requests at {} connections through the gateway (a \
             customer's bearer token verified on each) and straight to the service",
                g.place.direct.clients
            ));
            line(String::new());
            line("| request | direct /s | through the gateway /s | share (of each pair of runs) | direct p50 / p95 / p99 ms | gateway p50 / p95 / p99 ms |".into());
            line("|---|---|---|---|---|---|".into());
            for (what, pair) in [
                ("`POST /orders`", &g.place),
                ("`GET /orders/{id}`", &g.read),
            ] {
                let (direct, through) = (&pair.direct, &pair.gateway);
                line(format!(
                    "| {what} | {} | {} | {:.0}% ({:.0}–{:.0}%) | {} at {:.0}/s | {} at {:.0}/s |",
                    direct.rate.show(0),
                    through.rate.show(0),
                    pair.share.median * 100.0,
                    pair.share.min * 100.0,
                    pair.share.max * 100.0,
                    lat(&direct.latency),
                    direct.latency_rate,
                    lat(&through.latency),
                    through.latency_rate
                ));
            }
            line(String::new());
            let c = &g.catalog;
            line(format!(
                "The catalog through the gateway's shared cache (`CATALOG_CACHE_MS`, 1 s) and \
                 through a gateway with it off, anonymous `GET /api/products/{{sku}}` over {} \
                 products: uncached {}/s, cached {}/s ({:.0}% of uncached, {:.0}–{:.0}%); \
                 p50 / p95 / p99 ms uncached {} at {:.0}/s, cached {} at {:.0}/s.",
                crate::commands::BENCH_PRODUCTS,
                c.direct.rate.show(0),
                c.gateway.rate.show(0),
                c.share.median * 100.0,
                c.share.min * 100.0,
                c.share.max * 100.0,
                lat(&c.direct.latency),
                c.direct.latency_rate,
                lat(&c.gateway.latency),
                c.gateway.latency_rate
            ));
            line(String::new());
            line(format!(
                "CPU per request through the gateway (one more closed-loop run each): {}.",
                g.cpu_per_request
                    .iter()
                    .map(|(what, gateway, service)| format!(
                        "`{what}` {gateway:.0} µs in the gateway, {service:.0} µs in the service"
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
            line(String::new());
        }
    }

    fn security_section(&self, line: &mut dyn FnMut(String)) {
        if let Some(s) = &self.security {
            line(
                concat!(
                    "**7. TLS and permissions**: the same binaries and work, alternating each ",
                    "round between open connections (a NATS server with no users and no TLS, ",
                    "services at `TLS=off`) and the stack as it runs (mutual TLS on NATS and ",
                    "internal HTTP, an nkey per service, per-identity permissions); ",
                    "`POST /orders` at 64 clients, a burst of 400 sagas placed by 64 clients, and ",
                    "200,000 events read back from a stream by an ordered consumer"
                )
                .into(),
            );
            line(String::new());
            for row in comparison_rows(s, ["open", "secured"]) {
                line(row);
            }
            line(String::new());
        }
    }

    fn field_encryption_section(&self, line: &mut dyn FnMut(String)) {
        if let Some(f) = &self.field_encryption {
            line(
                concat!(
                    "**7b. Sealing the payment token** (both sides of figure 7 seal): the ",
                    "orders service's own data-key store on a fresh database, one operation ",
                    "at a time, 2,000 of each per round, in µs per operation"
                )
                .into(),
            );
            line(String::new());
            line("| operation | µs |".into());
            line("|---|---|".into());
            for (what, spread) in [
                (
                    "seal, a new customer's first order (key made, wrapped, stored)",
                    &f.seal_new_customer_us,
                ),
                (
                    "seal, a known customer (key read and unwrapped)",
                    &f.seal_known_customer_us,
                ),
                (
                    "open, for payments (key read by id and unwrapped)",
                    &f.open_us,
                ),
                (
                    "baseline: a one-row `SELECT` by primary key, same pool",
                    &f.select_baseline_us,
                ),
                (
                    "baseline: AES-256-GCM seal and open in memory",
                    &f.aes_seal_open_us,
                ),
            ] {
                line(format!("| {what} | {} |", spread.show(1)));
            }
            line(String::new());
        }
    }

    fn cluster_section(&self, line: &mut dyn FnMut(String)) {
        if let Some(c) = &self.cluster {
            line(
                concat!(
                    "**8. A three-node cluster**: the same work, alternating each round between ",
                    "one fresh NATS server (streams R1) and three fresh nodes as `cargo xtask up ",
                    "--cluster` runs them (mutual-TLS routes, every stream R3, a publish ",
                    "acknowledged once two nodes hold it, each service starting at a node of its ",
                    "own), all on this machine's cores: the price of replication, not a ",
                    "cluster's capacity"
                )
                .into(),
            );
            line(String::new());
            for row in comparison_rows(c, ["one server", "three nodes"]) {
                line(row);
            }
            line(String::new());
        }
    }
}

fn lat(l: &LatencySpread) -> String {
    format!(
        "{:.1} / {:.1} / {:.1}",
        l.p50.median, l.p95.median, l.p99.median
    )
}

/// The table of a [`Comparison`], its sides named `names`.
fn comparison_rows(c: &Comparison, names: [&str; 2]) -> Vec<String> {
    let [first, second] = names;
    let mut rows = vec![
        format!("| measure | {first} | {second} | {second} / {first} (per round) |"),
        "|---|---|---|---|".to_owned(),
    ];
    for (what, a, b, share) in [
        (
            "`POST /orders` /s",
            &c.first.commands_per_second,
            &c.second.commands_per_second,
            Some(&c.commands_share),
        ),
        (
            "sagas confirmed /s",
            &c.first.sagas_per_second,
            &c.second.sagas_per_second,
            Some(&c.sagas_share),
        ),
        (
            "CPU per saga, all processes, ms",
            &c.first.cpu_ms_per_saga,
            &c.second.cpu_ms_per_saga,
            None,
        ),
        (
            "of which NATS, ms",
            &c.first.nats_cpu_ms_per_saga,
            &c.second.nats_cpu_ms_per_saga,
            None,
        ),
        (
            "stream read (ordered consumer, 200,000 events) /s",
            &c.first.stream_read_per_second,
            &c.second.stream_read_per_second,
            Some(&c.stream_read_share),
        ),
    ] {
        let share = share.map_or(String::new(), |sh| {
            format!(
                "{:.0}% ({:.0}–{:.0}%)",
                sh.median * 100.0,
                sh.min * 100.0,
                sh.max * 100.0
            )
        });
        rows.push(format!(
            "| {what} | {} | {} | {share} |",
            a.show(1),
            b.show(1)
        ));
    }
    rows
}
