//! Drives sagas: sends the commands of due steps (after recording each attempt and its
//! deadline), turns replies into results or failures, and wakes each saga at its next
//! deadline or retry time.
//!
//! Invariant: an attempt is recorded (with its deadline) before its command is sent, so a
//! crash never leaves a command in flight that the saga does not know of. Every attempt of a
//! step carries the same command id, so a retry of a command that went through gets the
//! first answer from the target's idempotency store.
//! Invariant: the OrderSaga aggregate guards every transition (optimistic concurrency plus
//! "not due" / "not in flight" rules), so several drivers (replicas) cannot send a step twice
//! concurrently or fail it twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use cqrs_es::Aggregate;
use domain::saga::{OrderSaga, Readiness, SagaCommand, SagaError, SagaPolicy, SagaStatus, Step};
use event_store::{BusError, CommandBus, CommandMetadata, Executed};
use messaging::Namespace;
use rand::Rng;
use service_kit::breaker::Breaker;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::settings::Containment;
use crate::steps::{command_for, reply_outcome, target, Input};
use crate::timers::Timers;
use crate::traces::SagaTraces;

/// Drives every saga of this replica.
pub struct Driver {
    bus: CommandBus<OrderSaga>,
    pool: PgPool,
    nats: async_nats::Client,
    namespace: Namespace,
    policy: SagaPolicy,
    timers: Timers<Uuid>,
    /// Sagas being driven, and whether another drive was asked for meanwhile: drives of one
    /// saga never overlap, and a burst of requests collapses into one more drive.
    driving: Mutex<HashMap<Uuid, bool>>,
    traces: SagaTraces,
    /// Per target context: its circuit, and the bound on its commands in flight.
    contexts: HashMap<messaging::BoundedContext, (Breaker, Arc<tokio::sync::Semaphore>)>,
    /// Each customer's share of every context's places.
    shares: crate::shares::CustomerShares,
    shutdown: CancellationToken,
}

/// `saga_target_circuit{context}`, `saga_target_rejected_total{context}`.
const TARGET: service_kit::breaker::Metrics = service_kit::breaker::Metrics {
    state: "saga_target_circuit",
    rejected: "saga_target_rejected_total",
    label: "context",
};

fn metadata(order_id: Uuid) -> CommandMetadata {
    CommandMetadata {
        command_id: Uuid::now_v7(),
        correlation_id: order_id.to_string(),
        traceparent: service_kit::trace::outgoing(None),
        idempotency: None,
    }
}

impl Driver {
    pub fn new(
        bus: CommandBus<OrderSaga>,
        pool: PgPool,
        nats: async_nats::Client,
        namespace: Namespace,
        policy: SagaPolicy,
        containment: Containment,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let contexts = [
            messaging::BoundedContext::Orders,
            messaging::BoundedContext::Inventory,
            messaging::BoundedContext::Payments,
        ]
        .into_iter()
        .map(|context| {
            let breaker = Breaker::new(
                context.token(),
                containment.breaker_failures,
                containment.breaker_open_for,
                TARGET,
            );
            let bulkhead = Arc::new(tokio::sync::Semaphore::new(containment.max_in_flight));
            (context, (breaker, bulkhead))
        })
        .collect();
        Arc::new(Self {
            contexts,
            shares: crate::shares::CustomerShares::new(containment.max_in_flight_per_customer),
            bus,
            pool,
            nats,
            namespace,
            policy,
            timers: Timers::new(shutdown.clone()),
            driving: Mutex::new(HashMap::new()),
            traces: SagaTraces::default(),
            shutdown,
        })
    }

    async fn execute(
        &self,
        order_id: Uuid,
        command: SagaCommand,
    ) -> Result<Executed<OrderSaga>, BusError> {
        let executed = self
            .bus
            .execute(&order_id.to_string(), command, &metadata(order_id))
            .await?;
        if let Executed::Accepted { events, state, .. } = &executed {
            for event in events {
                count(event, state);
            }
            // Whichever replica ends the saga forgets its trace.
            if !matches!(state.status, SagaStatus::Running | SagaStatus::Compensating) {
                self.traces.forget(order_id);
            }
        }
        Ok(executed)
    }

    /// Applies an input from an event stream to its saga, then drives it.
    pub async fn input(self: &Arc<Self>, order_id: Uuid, input: Input) -> Result<(), BusError> {
        let now = Utc::now();
        let command = match input {
            Input::Start(placed) => SagaCommand::Start {
                order_id,
                customer_id: placed.customer_id,
                lines: placed.lines,
                payment_token: placed.payment_token,
                now,
                attempt_seed: Some(Uuid::new_v4()),
            },
            Input::Cancel => SagaCommand::Cancel { now },
            Input::Completed(step, result) => SagaCommand::Complete {
                step,
                result,
                now,
                attempt_seed: Some(Uuid::new_v4()),
            },
        };
        match self.execute(order_id, command).await? {
            // Events about orders that have no saga (a manual reservation, say) are not ours.
            Executed::Rejected {
                not_found: true, ..
            } => Ok(()),
            Executed::Rejected {
                reason, message, ..
            } if reason == SagaError::IMPOSSIBLE_ORDER => {
                // Not an order anyone can have placed: counted and logged, never applied.
                metrics::counter!("saga_unexpected_inputs_total").increment(1);
                tracing::warn!(%order_id, message, "an event the saga cannot have taken; ignored");
                Ok(())
            }
            executed => {
                if let Executed::Accepted { events, state, .. } = &executed {
                    let parked_now = events
                        .iter()
                        .any(|e| matches!(e, domain::saga::SagaEvent::SagaNeedsAttention { .. }));
                    if parked_now
                        && state
                            .parked_reason
                            .as_deref()
                            .is_some_and(|r| r.starts_with(OrderSaga::CONTRADICTION))
                    {
                        // An input the saga did not cause, against what it knows: an alert.
                        metrics::counter!("saga_contradictions_total").increment(1);
                        tracing::error!(%order_id, reason = state.parked_reason.as_deref().unwrap_or_default(), "a saga stopped on an input it did not cause");
                    }
                }
                if let Some(traceparent) =
                    service_kit::trace::traceparent_of(&tracing::Span::current())
                {
                    self.traces.remember(order_id, traceparent);
                }
                self.send_attempted(order_id, &executed);
                self.spawn_drive(order_id);
                Ok(())
            }
        }
    }

    /// The saga as its events make it.
    pub async fn load(
        &self,
        order_id: Uuid,
    ) -> Result<(OrderSaga, Vec<cqrs_es::EventEnvelope<OrderSaga>>), BusError> {
        let events = self.bus.load_events(&order_id.to_string()).await?;
        let mut saga = OrderSaga::default();
        for e in &events {
            saga.apply(e.payload.clone());
        }
        Ok((saga, events))
    }

    /// Drives the saga soon. If a drive of it is running, one more follows it instead.
    pub fn spawn_drive(self: &Arc<Self>, order_id: Uuid) {
        {
            let mut driving = self.driving.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(again) = driving.get_mut(&order_id) {
                *again = true;
                return;
            }
            driving.insert(order_id, false);
        }
        let driver = self.clone();
        let span = tracing::info_span!("saga.drive", %order_id);
        service_kit::trace::join(&span, self.traces.of(order_id).as_deref());
        let drives = async move {
            loop {
                if let Err(e) = driver.drive(order_id).await {
                    tracing::warn!(%order_id, error = %service_kit::problem::ErrorChain(&e), "driving the saga failed; it is retried");
                    driver.wake_at(order_id, Duration::from_secs(1));
                }
                let mut driving = driver.driving.lock().unwrap_or_else(|p| p.into_inner());
                if driving.get(&order_id) == Some(&true) {
                    driving.insert(order_id, false);
                } else {
                    driving.remove(&order_id);
                    return;
                }
            }
        };
        tokio::spawn(drives.instrument(span));
    }

    /// Acts on every due step of the saga and sets its next wake-up.
    pub async fn drive(self: &Arc<Self>, order_id: Uuid) -> Result<(), BusError> {
        if self.shutdown.is_cancelled() {
            return Ok(());
        }
        // From memory when this replica wrote it last: a stale view can only propose a step
        // that the aggregate then refuses, never send one twice.
        let (saga, _) = self.bus.state(&order_id.to_string()).await?;
        if !matches!(saga.status, SagaStatus::Running | SagaStatus::Compensating) {
            self.clear_timer(order_id);
            self.traces.forget(order_id);
            return Ok(());
        }
        let now = Utc::now();
        let (mut sent, mut failed) = (false, false);
        for step in saga.due_steps() {
            match saga.readiness(&step, now) {
                Readiness::Ready => {
                    sent = true;
                    let driver = self.clone();
                    let span = tracing::info_span!("saga.step", %order_id, %step);
                    tokio::spawn(
                        async move { driver.attempt(order_id, step).await }.instrument(span),
                    );
                }
                Readiness::TimedOut => {
                    failed = true;
                    self.fail(order_id, step, "no answer before the deadline".into())
                        .await?;
                }
                Readiness::InFlight(_) | Readiness::Waiting(_) => {}
            }
        }
        if sent {
            // Each attempt drives the saga again when it lands.
        } else if failed {
            // The failures set retry times: look again to schedule them.
            self.spawn_drive(order_id);
        } else if let Some(at) = saga.next_wake(now) {
            let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            self.wake_at(order_id, wait + Duration::from_millis(5));
        }
        Ok(())
    }

    async fn fail(&self, order_id: Uuid, step: Step, reason: String) -> Result<(), BusError> {
        let jitter_permille = rand::rng().random_range(0..=1000);
        tracing::info!(%order_id, %step, reason, "saga step failed");
        self.execute(
            order_id,
            SagaCommand::Fail {
                step,
                reason,
                now: Utc::now(),
                jitter_permille,
            },
        )
        .await
        .map(|_| ())
    }

    /// Records the attempt, sends the step's command, and records what came of it.
    async fn attempt(self: Arc<Self>, order_id: Uuid, step: Step) {
        let result = self.attempt_inner(order_id, step.clone()).await;
        if let Err(e) = result {
            tracing::warn!(%order_id, %step, error = %service_kit::problem::ErrorChain(&e), "saga step could not be recorded");
        }
        self.spawn_drive(order_id);
    }

    /// Records the attempt of a step the drive found due, then sends its command.
    async fn attempt_inner(self: &Arc<Self>, order_id: Uuid, step: Step) -> Result<(), BusError> {
        let attempt = SagaCommand::Attempt {
            step: step.clone(),
            now: Utc::now(),
            // Random, so nobody can predict a step's id and send a command under it first.
            command_id: Uuid::new_v4(),
        };
        match self.execute(order_id, attempt).await? {
            Executed::Accepted { state, .. } => self.send(order_id, step, &state).await,
            // Not due any more: another driver or a reply got there first.
            Executed::Rejected { .. } => Ok(()),
        }
    }

    /// Sends the commands of the steps `executed` attempted along with a result (the next
    /// steps, recorded in the result's commit), each in its own task.
    fn send_attempted(self: &Arc<Self>, order_id: Uuid, executed: &Executed<OrderSaga>) {
        let Executed::Accepted { events, state, .. } = executed else {
            return;
        };
        for event in events {
            if let domain::saga::SagaEvent::StepAttempted { step, .. } = event {
                let (driver, step, saga) = (self.clone(), step.clone(), state.clone());
                let span = tracing::info_span!("saga.step", %order_id, %step);
                tokio::spawn(
                    async move {
                        if let Err(e) = driver.send(order_id, step.clone(), &saga).await {
                            tracing::warn!(%order_id, %step, error = %service_kit::problem::ErrorChain(&e), "saga step could not be recorded");
                        }
                        driver.spawn_drive(order_id);
                    }
                    .instrument(span),
                );
            }
        }
    }

    /// Sends the command of a step whose attempt is recorded, and records what came of it
    /// (with the attempts of the steps that result makes due, whose commands it sends next).
    async fn send(
        self: &Arc<Self>,
        order_id: Uuid,
        step: Step,
        saga: &OrderSaga,
    ) -> Result<(), BusError> {
        let context = target(&step);
        let (breaker, bulkhead) = &self.contexts[&context];
        // While the context's circuit is open the attempt fails at once, without waiting for
        // a timeout; its retry, the business deadline and the rest go on as for any failure.
        if let Err(secs) = breaker.admit() {
            let reason = format!(
                "{context}'s circuit is open after repeated failures (probed again in {secs} s)"
            );
            return self.fail(order_id, step, reason).await;
        }
        // Waits here, not in the target, when the customer (first) or the context already has
        // its share in flight: a customer over their share holds none of the context's places.
        let _customers = match saga.customer_id {
            Some(customer) => Some(self.shares.place(customer, context).await),
            None => None,
        };
        let _in_flight = bulkhead.clone().acquire_owned().await.ok();
        service_kit::failpoint::reached("saga.after_attempt").await;
        let Some(outgoing) = command_for(saga, &step) else {
            breaker.abandoned();
            return self
                .fail(
                    order_id,
                    step,
                    "the saga lacks what the command needs".into(),
                )
                .await;
        };
        let subject = self
            .namespace
            .command_subject(outgoing.context, outgoing.name);
        tracing::debug!(%order_id, %step, %subject, "sending saga command");
        // The target's handler joins this step's span.
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            service_kit::trace::TRACEPARENT,
            service_kit::trace::outgoing(None).as_str(),
        );
        let request = self
            .nats
            .request_with_headers(subject, headers, outgoing.body.into());
        let (outcome, fault) = match tokio::time::timeout(self.policy.step_deadline, request).await
        {
            Err(_) => (Err("no answer before the deadline".to_owned()), true),
            Ok(Err(e)) => (Err(format!("request failed: {e}")), true),
            Ok(Ok(reply)) => {
                let outcome = reply_outcome(&step, &reply.payload);
                let fault =
                    matches!(&outcome, Err(reason) if reason == contracts::reasons::UNAVAILABLE);
                (outcome, fault)
            }
        };
        // Any answer shows the context is there; no answer, or "unavailable" (its database),
        // counts against it. A retryable rejection is an answer: one customer's payments that
        // their provider times out on (`provider_timeout`) must not stop everyone's, and
        // payments keeps the circuit of its provider's faults itself.
        if fault {
            breaker.failed();
        } else {
            breaker.succeeded();
        }
        match outcome {
            Ok(result) => {
                let executed = self
                    .execute(
                        order_id,
                        SagaCommand::Complete {
                            step,
                            result,
                            now: Utc::now(),
                            attempt_seed: Some(Uuid::new_v4()),
                        },
                    )
                    .await?;
                service_kit::failpoint::reached("saga.after_result").await;
                self.send_attempted(order_id, &executed);
                Ok(())
            }
            Err(reason) => self.fail(order_id, step, reason).await,
        }
    }

    fn wake_at(self: &Arc<Self>, order_id: Uuid, wait: Duration) {
        let driver = self.clone();
        self.timers.schedule(order_id, wait, move || async move {
            driver.spawn_drive(order_id);
        });
    }

    fn clear_timer(&self, order_id: Uuid) {
        self.timers.cancel(&order_id);
    }

    /// Sagas not yet completed nor parked for attention (a resumed one is open again): the
    /// `open_sagas` table that the event store's trigger keeps, so the list costs what is in
    /// flight, not the whole history.
    pub async fn open_sagas(&self) -> Result<Vec<Uuid>, sqlx::Error> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT aggregate_id FROM open_sagas WHERE NOT parked")
                .fetch_all(&self.pool)
                .await?;
        Ok(ids.iter().filter_map(|s| Uuid::parse_str(s).ok()).collect())
    }

    /// Every saga parked for attention, with the step and reason it stopped on, oldest first.
    pub async fn parked_sagas(&self) -> Result<Vec<Parked>, sqlx::Error> {
        // Each parked saga's last SagaNeedsAttention, found by its key.
        let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
            "SELECT o.aggregate_id, e.payload FROM open_sagas o \
             CROSS JOIN LATERAL (SELECT payload FROM events \
               WHERE aggregate_type = 'OrderSaga' AND aggregate_id = o.aggregate_id \
                 AND event_type = 'SagaNeedsAttention' \
               ORDER BY sequence DESC LIMIT 1) e \
             WHERE o.parked",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut parked: Vec<Parked> = rows
            .into_iter()
            .filter_map(|(id, payload)| {
                match serde_json::from_value::<domain::saga::SagaEvent>(payload).ok()? {
                    domain::saga::SagaEvent::SagaNeedsAttention { step, reason, at } => {
                        Some(Parked {
                            order_id: Uuid::parse_str(&id).ok()?,
                            step: step.to_string(),
                            reason,
                            at,
                        })
                    }
                    _ => None,
                }
            })
            .collect();
        parked.sort_by_key(|p| p.at);
        Ok(parked)
    }

    /// Resumes a parked saga on an operator's word, and drives it.
    pub async fn resume(
        self: &Arc<Self>,
        order_id: Uuid,
        reason: String,
    ) -> Result<Executed<OrderSaga>, BusError> {
        let executed = self
            .execute(
                order_id,
                SagaCommand::Resume {
                    reason,
                    now: Utc::now(),
                },
            )
            .await?;
        if matches!(executed, Executed::Accepted { .. }) {
            self.spawn_drive(order_id);
        }
        Ok(executed)
    }

    /// Drives every open saga now and then every `interval`: resumes sagas after a restart
    /// (their deadlines are stored) and takes over those of a replica that died.
    pub async fn recover(self: Arc<Self>, interval: Duration) {
        loop {
            let listed_at = std::time::Instant::now();
            match self.open_sagas().await {
                Ok(ids) => {
                    self.traces.forget_closed(&ids, listed_at);
                    if !ids.is_empty() {
                        tracing::debug!(open = ids.len(), "checking open sagas");
                    }
                    for id in ids {
                        self.spawn_drive(id);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %service_kit::problem::ErrorChain(&e), "cannot list open sagas")
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

/// A saga parked for attention: `GET /sagas?status=needs_attention`.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct Parked {
    pub order_id: Uuid,
    /// The step it stopped on.
    pub step: String,
    pub reason: String,
    pub at: chrono::DateTime<Utc>,
}

/// Saga metrics, from the events the saga just recorded and the state they left.
fn count(event: &domain::saga::SagaEvent, saga: &OrderSaga) {
    use domain::saga::SagaEvent;
    let duration = |at: &chrono::DateTime<Utc>| {
        saga.started_at
            .and_then(|started| (*at - started).to_std().ok())
            .map(|d| d.as_secs_f64())
    };
    match event {
        SagaEvent::SagaStarted { .. } => metrics::counter!("sagas_started_total").increment(1),
        SagaEvent::StepFailed { step, .. } => {
            metrics::counter!("saga_step_retries_total", "step" => step_kind(step)).increment(1);
        }
        SagaEvent::CompensationStarted { .. } => {
            metrics::counter!("saga_compensations_total").increment(1);
        }
        SagaEvent::SagaCompleted { outcome, at } => {
            let outcome = serde_json::to_value(outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            if let Some(seconds) = duration(at) {
                metrics::histogram!("saga_duration_seconds", "outcome" => outcome.clone())
                    .record(seconds);
            }
            metrics::counter!("sagas_completed_total", "outcome" => outcome).increment(1);
        }
        SagaEvent::SagaResumed { .. } => {
            metrics::counter!("sagas_resumed_total").increment(1);
        }
        SagaEvent::SagaNeedsAttention { at, .. } => {
            if let Some(seconds) = duration(at) {
                metrics::histogram!("saga_duration_seconds", "outcome" => "needs_attention")
                    .record(seconds);
            }
            metrics::counter!("sagas_needing_attention_total").increment(1);
        }
        _ => {}
    }
}

/// A step's kind without its SKU, so labels stay few.
fn step_kind(step: &Step) -> String {
    step.to_string()
        .split(':')
        .next()
        .unwrap_or_default()
        .to_owned()
}
