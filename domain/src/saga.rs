//! The OrderSaga aggregate (one per order): the persisted state of the order -> stock ->
//! payment flow and of its compensation.
//!
//! The saga decides, the orchestrator acts. [`OrderSaga::due_steps`] says which steps the
//! current phase needs; the orchestrator records an attempt (with its deadline) before it sends
//! a step's command, then records the result, a failure (retried with exponential backoff and
//! jitter) or a timeout. Every attempt, deadline, retry and compensation is an event, so the
//! saga resumes where it stopped after a crash and its timeline can be shown.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::order::{OrderLine, RejectionReason};
use crate::{Money, Sku};

/// UUID namespace of step command ids.
const COMMAND_ID_NAMESPACE: Uuid = Uuid::from_u128(0x3c6e_0f0a_4d2b_4b8e_9d11_7a55_2e90_c4f1);

/// Deadlines and retries of saga steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SagaPolicy {
    /// How long one attempt of a step may take before it counts as timed out.
    pub step_deadline: Duration,
    /// Attempts of one step before the saga gives it up.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each time, up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for SagaPolicy {
    fn default() -> Self {
        Self {
            step_deadline: Duration::from_secs(5),
            max_attempts: 5,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
        }
    }
}

impl SagaPolicy {
    /// The wait before attempt `attempt + 1`: exponential, capped, with "equal jitter" (half
    /// fixed, half scaled by `jitter_permille` / 1000) so retries of many sagas spread out.
    pub fn backoff(&self, attempt: u32, jitter_permille: u16) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.backoff_max);
        let half = capped / 2;
        half + half.mul_f64(f64::from(jitter_permille.min(1000)) / 1000.0)
    }
}

/// One step of the flow, each a command to one context.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    Reserve(Sku),
    Price,
    Authorise,
    Commit(Sku),
    Capture,
    Confirm,
    // Compensations.
    Release(Sku),
    Restock(Sku),
    Void,
    Refund,
    Reject,
}

impl Step {
    /// Whether this step undoes or closes (compensation) rather than advances.
    pub fn is_compensation(&self) -> bool {
        matches!(
            self,
            Self::Release(_) | Self::Restock(_) | Self::Void | Self::Refund | Self::Reject
        )
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reserve(s) => write!(f, "reserve:{s}"),
            Self::Price => f.write_str("price"),
            Self::Authorise => f.write_str("authorise"),
            Self::Commit(s) => write!(f, "commit:{s}"),
            Self::Capture => f.write_str("capture"),
            Self::Confirm => f.write_str("confirm"),
            Self::Release(s) => write!(f, "release:{s}"),
            Self::Restock(s) => write!(f, "restock:{s}"),
            Self::Void => f.write_str("void"),
            Self::Refund => f.write_str("refund"),
            Self::Reject => f.write_str("reject"),
        }
    }
}

impl FromStr for Step {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let sku = |v: &str| Sku::parse(v).map_err(|e| e.to_string());
        Ok(match s.split_once(':') {
            Some(("reserve", v)) => Self::Reserve(sku(v)?),
            Some(("commit", v)) => Self::Commit(sku(v)?),
            Some(("release", v)) => Self::Release(sku(v)?),
            Some(("restock", v)) => Self::Restock(sku(v)?),
            None => match s {
                "price" => Self::Price,
                "authorise" => Self::Authorise,
                "capture" => Self::Capture,
                "confirm" => Self::Confirm,
                "void" => Self::Void,
                "refund" => Self::Refund,
                "reject" => Self::Reject,
                _ => return Err(format!("unknown step {s:?}")),
            },
            _ => return Err(format!("unknown step {s:?}")),
        })
    }
}

impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Step {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Step".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(reserve|commit|release|restock):[A-Z0-9][A-Z0-9-]{0,31}$|^(price|authorise|capture|confirm|void|refund|reject)$",
            "description": "A saga step: a command to one context"
        })
    }
}

/// What a step's command came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum StepResult {
    /// Stock reserved, at this unit price.
    Reserved {
        unit_price: Money,
    },
    OutOfStock,
    Authorised,
    Declined {
        reason: String,
    },
    /// The command was accepted (or had already been done).
    Done,
    /// The command was refused for good.
    Refused {
        reason: String,
    },
}

/// How a saga ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SagaOutcome {
    Confirmed,
    Rejected,
    Cancelled,
}

/// Why the saga compensates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CompensationReason {
    Rejected(RejectionReason),
    /// The customer cancelled the order.
    Cancelled,
}

/// Everything that happens to a saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum SagaEvent {
    SagaStarted {
        order_id: Uuid,
        customer_id: Uuid,
        lines: Vec<OrderLine>,
        payment_token: Option<String>,
        started_at: DateTime<Utc>,
    },
    StepAttempted {
        step: Step,
        attempt: u32,
        command_id: Uuid,
        at: DateTime<Utc>,
        deadline: DateTime<Utc>,
    },
    StepCompleted {
        step: Step,
        result: StepResult,
        at: DateTime<Utc>,
    },
    StepFailed {
        step: Step,
        attempt: u32,
        reason: String,
        at: DateTime<Utc>,
        retry_at: DateTime<Utc>,
    },
    StepGaveUp {
        step: Step,
        attempts: u32,
        reason: String,
        at: DateTime<Utc>,
    },
    CompensationStarted {
        reason: CompensationReason,
        detail: String,
        skus: Vec<Sku>,
        at: DateTime<Utc>,
    },
    SagaCompleted {
        outcome: SagaOutcome,
        at: DateTime<Utc>,
    },
    SagaNeedsAttention {
        step: Step,
        reason: String,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for SagaEvent {
    fn event_type(&self) -> String {
        match self {
            Self::SagaStarted { .. } => "SagaStarted",
            Self::StepAttempted { .. } => "StepAttempted",
            Self::StepCompleted { .. } => "StepCompleted",
            Self::StepFailed { .. } => "StepFailed",
            Self::StepGaveUp { .. } => "StepGaveUp",
            Self::CompensationStarted { .. } => "CompensationStarted",
            Self::SagaCompleted { .. } => "SagaCompleted",
            Self::SagaNeedsAttention { .. } => "SagaNeedsAttention",
        }
        .into()
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

/// Commands the orchestrator gives a saga.
#[derive(Debug, Clone, PartialEq)]
pub enum SagaCommand {
    Start {
        order_id: Uuid,
        customer_id: Uuid,
        lines: Vec<OrderLine>,
        payment_token: Option<String>,
        now: DateTime<Utc>,
    },
    /// About to send `step`'s command: record the attempt and its deadline first.
    Attempt { step: Step, now: DateTime<Utc> },
    /// A reply or an event told the step's result. A repeat changes nothing.
    Complete {
        step: Step,
        result: StepResult,
        now: DateTime<Utc>,
    },
    /// The current attempt failed in a way worth retrying, or passed its deadline.
    Fail {
        step: Step,
        reason: String,
        now: DateTime<Utc>,
        jitter_permille: u16,
    },
    /// The customer cancelled the order.
    Cancel { now: DateTime<Utc> },
}

/// Why a saga command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SagaError {
    #[error("no such saga")]
    NotFound,
    #[error("step {0} is not due now")]
    NotDue(Step),
    #[error("the order has no payment token")]
    NoPaymentToken,
}

impl crate::Rejection for SagaError {
    fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::NotDue(_) => "not_due",
            Self::NoPaymentToken => "no_payment_token",
        }
    }
}

/// Where a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    #[default]
    New,
    Running,
    Compensating,
    Completed,
    NeedsAttention,
}

/// One step's progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepState {
    pub attempts: u32,
    pub deadline: Option<DateTime<Utc>>,
    pub retry_at: Option<DateTime<Utc>>,
    pub result: Option<StepResult>,
    pub gave_up: bool,
}

/// When a step can next be attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Send it now.
    Ready,
    /// An attempt is in flight until this deadline.
    InFlight(DateTime<Utc>),
    /// The attempt in flight passed its deadline: record the timeout (`Fail`).
    TimedOut,
    /// Waiting for its retry time.
    Waiting(DateTime<Utc>),
}

/// The OrderSaga aggregate's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderSaga {
    pub order_id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    pub lines: Vec<OrderLine>,
    pub payment_token: Option<String>,
    /// When the saga started, so its duration can be told when it ends.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    pub status: SagaStatus,
    pub compensation: Option<CompensationReason>,
    pub outcome: Option<SagaOutcome>,
    pub steps: BTreeMap<Step, StepState>,
}

impl OrderSaga {
    fn step(&self, step: &Step) -> Option<&StepState> {
        self.steps.get(step)
    }

    fn result(&self, step: &Step) -> Option<&StepResult> {
        self.step(step).and_then(|s| s.result.as_ref())
    }

    fn done(&self, step: &Step) -> bool {
        self.result(step).is_some()
    }

    /// The deterministic command id of a step: every attempt of it carries the same id, so a
    /// retry of a command that did go through gets the first answer instead of acting twice.
    pub fn command_id(&self, step: &Step) -> Uuid {
        let order = self.order_id.unwrap_or_default();
        Uuid::new_v5(&COMMAND_ID_NAMESPACE, format!("{order}:{step}").as_bytes())
    }

    /// The unit prices inventory answered, per SKU.
    pub fn unit_prices(&self) -> Vec<(Sku, Money)> {
        self.lines
            .iter()
            .filter_map(|l| match self.result(&Step::Reserve(l.sku.clone())) {
                Some(StepResult::Reserved { unit_price }) => Some((l.sku.clone(), *unit_price)),
                _ => None,
            })
            .collect()
    }

    /// The SKUs whose reservation inventory refused for want of stock, in line order.
    pub fn out_of_stock(&self) -> Vec<Sku> {
        self.lines
            .iter()
            .filter(|l| {
                matches!(
                    self.result(&Step::Reserve(l.sku.clone())),
                    Some(StepResult::OutOfStock)
                )
            })
            .map(|l| l.sku.clone())
            .collect()
    }

    /// The order's total from the reserved prices, once every line is priced.
    pub fn total(&self) -> Option<Money> {
        let prices = self.unit_prices();
        if prices.len() != self.lines.len() {
            return None;
        }
        let mut total: Option<Money> = None;
        for (line, (_, price)) in self.lines.iter().zip(prices) {
            let line_total = price.times(line.quantity).ok()?;
            total = Some(match total {
                None => line_total,
                Some(t) => t.checked_add(line_total).ok()?,
            });
        }
        total
    }

    /// The steps the current phase needs that have no result yet.
    pub fn due_steps(&self) -> Vec<Step> {
        let pending = |steps: Vec<Step>| -> Vec<Step> {
            steps
                .into_iter()
                .filter(|s| !self.done(s) && !self.step(s).is_some_and(|st| st.gave_up))
                .collect()
        };
        match self.status {
            SagaStatus::Running => {
                let reserves: Vec<Step> = self
                    .lines
                    .iter()
                    .map(|l| Step::Reserve(l.sku.clone()))
                    .collect();
                let open = pending(reserves);
                if !open.is_empty() {
                    return open;
                }
                for gate in [Step::Price, Step::Authorise] {
                    if !self.done(&gate) {
                        return pending(vec![gate]);
                    }
                }
                let mut finishing: Vec<Step> = self
                    .lines
                    .iter()
                    .map(|l| Step::Commit(l.sku.clone()))
                    .collect();
                finishing.push(Step::Capture);
                let open = pending(finishing);
                if !open.is_empty() {
                    return open;
                }
                pending(vec![Step::Confirm])
            }
            SagaStatus::Compensating => pending(self.compensation_steps()),
            _ => vec![],
        }
    }

    /// What undoes what was done, and the closing rejection.
    fn compensation_steps(&self) -> Vec<Step> {
        let mut steps = Vec::new();
        for line in &self.lines {
            let sku = line.sku.clone();
            if self.done(&Step::Commit(sku.clone())) {
                steps.push(Step::Restock(sku));
            } else if matches!(
                self.result(&Step::Reserve(sku.clone())),
                Some(StepResult::Reserved { .. })
            ) || self
                .step(&Step::Reserve(sku.clone()))
                .is_some_and(|s| s.result.is_none() && s.attempts > 0)
            {
                // Reserved, or maybe reserved (an attempt without an answer): release.
                steps.push(Step::Release(sku));
            }
        }
        if self.done(&Step::Capture) {
            steps.push(Step::Refund);
        } else if self.step(&Step::Authorise).is_some_and(|s| s.attempts > 0)
            && !matches!(
                self.result(&Step::Authorise),
                Some(StepResult::Declined { .. })
            )
        {
            // Authorised, or maybe authorised (it timed out): void.
            steps.push(Step::Void);
        }
        if matches!(self.compensation, Some(CompensationReason::Rejected(_))) {
            steps.push(Step::Reject);
        }
        steps
    }

    /// When `step` can next be attempted, seen at `now`.
    pub fn readiness(&self, step: &Step, now: DateTime<Utc>) -> Readiness {
        let Some(state) = self.step(step) else {
            return Readiness::Ready;
        };
        if let Some(deadline) = state.deadline {
            return if now >= deadline {
                Readiness::TimedOut
            } else {
                Readiness::InFlight(deadline)
            };
        }
        match state.retry_at {
            Some(at) if now < at => Readiness::Waiting(at),
            _ => Readiness::Ready,
        }
    }

    /// The earliest time something becomes due (a deadline or a retry), if any.
    pub fn next_wake(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.due_steps()
            .iter()
            .map(|s| match self.readiness(s, now) {
                Readiness::InFlight(at) | Readiness::Waiting(at) => at,
                Readiness::Ready | Readiness::TimedOut => now,
            })
            .min()
    }

    /// Events that follow from the state once a step's result is known: the next phase, or
    /// the end.
    fn consequences(&self, now: DateTime<Utc>) -> Vec<SagaEvent> {
        match self.status {
            SagaStatus::Running => {
                let reserves: Vec<Step> = self
                    .lines
                    .iter()
                    .map(|l| Step::Reserve(l.sku.clone()))
                    .collect();
                if reserves.iter().all(|s| self.done(s)) {
                    let out = self.out_of_stock();
                    if !out.is_empty() {
                        let names: Vec<&str> = out.iter().map(Sku::as_str).collect();
                        return vec![SagaEvent::CompensationStarted {
                            reason: CompensationReason::Rejected(RejectionReason::OutOfStock),
                            detail: format!("out of stock: {}", names.join(", ")),
                            skus: out,
                            at: now,
                        }];
                    }
                }
                if let Some(StepResult::Declined { reason }) = self.result(&Step::Authorise) {
                    return vec![SagaEvent::CompensationStarted {
                        reason: CompensationReason::Rejected(RejectionReason::PaymentDeclined),
                        detail: format!("payment declined: {reason}"),
                        skus: vec![],
                        at: now,
                    }];
                }
                if let Some((step, reason)) =
                    self.steps.iter().find_map(|(s, st)| match &st.result {
                        Some(StepResult::Refused { reason }) if !s.is_compensation() => {
                            Some((s, reason))
                        }
                        _ => None,
                    })
                {
                    return vec![SagaEvent::CompensationStarted {
                        reason: CompensationReason::Rejected(RejectionReason::Failed),
                        detail: format!("{step} was refused: {reason}"),
                        skus: vec![],
                        at: now,
                    }];
                }
                if self.done(&Step::Confirm) {
                    return vec![SagaEvent::SagaCompleted {
                        outcome: SagaOutcome::Confirmed,
                        at: now,
                    }];
                }
                vec![]
            }
            SagaStatus::Compensating => {
                if let Some((step, reason)) =
                    self.steps.iter().find_map(|(s, st)| match &st.result {
                        Some(StepResult::Refused { reason })
                            if s.is_compensation() && *s != Step::Reject =>
                        {
                            Some((s, reason))
                        }
                        _ => None,
                    })
                {
                    return vec![SagaEvent::SagaNeedsAttention {
                        step: step.clone(),
                        reason: format!("compensation refused: {reason}"),
                        at: now,
                    }];
                }
                if self.compensation_steps().iter().all(|s| self.done(s)) {
                    let outcome = match self.compensation {
                        Some(CompensationReason::Cancelled) => SagaOutcome::Cancelled,
                        _ => SagaOutcome::Rejected,
                    };
                    return vec![SagaEvent::SagaCompleted { outcome, at: now }];
                }
                vec![]
            }
            _ => vec![],
        }
    }

    fn is_open(&self) -> bool {
        matches!(self.status, SagaStatus::Running | SagaStatus::Compensating)
    }

    fn decide(
        &self,
        command: SagaCommand,
        policy: &SagaPolicy,
    ) -> Result<Vec<SagaEvent>, SagaError> {
        if let SagaCommand::Start {
            order_id,
            customer_id,
            lines,
            payment_token,
            now,
        } = command
        {
            if self.order_id.is_some() {
                return Ok(vec![]);
            }
            return Ok(vec![SagaEvent::SagaStarted {
                order_id,
                customer_id,
                lines,
                payment_token,
                started_at: now,
            }]);
        }
        if self.order_id.is_none() {
            return Err(SagaError::NotFound);
        }
        match command {
            SagaCommand::Start { .. } => unreachable!("handled above"),
            SagaCommand::Attempt { step, now } => {
                if !self.is_open() || !self.due_steps().contains(&step) {
                    return Err(SagaError::NotDue(step));
                }
                if self.readiness(&step, now) != Readiness::Ready {
                    return Err(SagaError::NotDue(step));
                }
                if step == Step::Authorise && self.payment_token.is_none() {
                    return Err(SagaError::NoPaymentToken);
                }
                let attempt = self.step(&step).map_or(0, |s| s.attempts) + 1;
                let deadline = now
                    + chrono::Duration::from_std(policy.step_deadline)
                        .unwrap_or(chrono::Duration::seconds(5));
                Ok(vec![SagaEvent::StepAttempted {
                    command_id: self.command_id(&step),
                    step,
                    attempt,
                    at: now,
                    deadline,
                }])
            }
            SagaCommand::Complete { step, result, now } => {
                if self.done(&step) || !self.is_open() {
                    return Ok(vec![]);
                }
                let event = SagaEvent::StepCompleted {
                    step,
                    result,
                    at: now,
                };
                let mut after = self.clone();
                after.apply(event.clone());
                let mut events = vec![event];
                events.extend(after.consequences(now));
                Ok(events)
            }
            SagaCommand::Fail {
                step,
                reason,
                now,
                jitter_permille,
            } => {
                // Only an attempt in flight can fail: a stale timeout seen by a second driver,
                // or a late reply after a retry was scheduled, changes nothing.
                let in_flight = self.step(&step).is_some_and(|s| s.deadline.is_some());
                if self.done(&step) || !self.is_open() || !in_flight {
                    return Ok(vec![]);
                }
                let attempts = self.step(&step).map_or(0, |s| s.attempts);
                if attempts < policy.max_attempts {
                    let wait = policy.backoff(attempts.max(1), jitter_permille);
                    let retry_at =
                        now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::zero());
                    return Ok(vec![SagaEvent::StepFailed {
                        step,
                        attempt: attempts,
                        reason,
                        at: now,
                        retry_at,
                    }]);
                }
                let gave_up = SagaEvent::StepGaveUp {
                    step: step.clone(),
                    attempts,
                    reason: reason.clone(),
                    at: now,
                };
                let next = if step.is_compensation() || self.status == SagaStatus::Compensating {
                    SagaEvent::SagaNeedsAttention {
                        step: step.clone(),
                        reason: format!("gave up after {attempts} attempts: {reason}"),
                        at: now,
                    }
                } else {
                    SagaEvent::CompensationStarted {
                        reason: CompensationReason::Rejected(RejectionReason::Timeout),
                        detail: format!("{step} gave up after {attempts} attempts: {reason}"),
                        skus: vec![],
                        at: now,
                    }
                };
                Ok(vec![gave_up, next])
            }
            SagaCommand::Cancel { now } => {
                if self.status != SagaStatus::Running {
                    return Ok(vec![]);
                }
                let event = SagaEvent::CompensationStarted {
                    reason: CompensationReason::Cancelled,
                    detail: "cancelled by the customer".into(),
                    skus: vec![],
                    at: now,
                };
                let mut after = self.clone();
                after.apply(event.clone());
                let mut events = vec![event];
                events.extend(after.consequences(now));
                Ok(events)
            }
        }
    }
}

impl Aggregate for OrderSaga {
    const TYPE: &'static str = "OrderSaga";
    type Command = SagaCommand;
    type Event = SagaEvent;
    type Error = SagaError;
    type Services = SagaPolicy;

    async fn handle(
        &mut self,
        command: Self::Command,
        policy: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command, policy)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            SagaEvent::SagaStarted {
                order_id,
                customer_id,
                lines,
                payment_token,
                started_at,
            } => {
                self.order_id = Some(order_id);
                self.customer_id = Some(customer_id);
                self.lines = lines;
                self.payment_token = payment_token;
                self.started_at = Some(started_at);
                self.status = SagaStatus::Running;
            }
            SagaEvent::StepAttempted {
                step,
                attempt,
                deadline,
                ..
            } => {
                let state = self.steps.entry(step).or_default();
                state.attempts = attempt;
                state.deadline = Some(deadline);
                state.retry_at = None;
            }
            SagaEvent::StepCompleted { step, result, .. } => {
                let state = self.steps.entry(step).or_default();
                state.result = Some(result);
                state.deadline = None;
                state.retry_at = None;
            }
            SagaEvent::StepFailed { step, retry_at, .. } => {
                let state = self.steps.entry(step).or_default();
                state.deadline = None;
                state.retry_at = Some(retry_at);
            }
            SagaEvent::StepGaveUp { step, .. } => {
                let state = self.steps.entry(step).or_default();
                state.deadline = None;
                state.retry_at = None;
                state.gave_up = true;
            }
            SagaEvent::CompensationStarted { reason, .. } => {
                self.status = SagaStatus::Compensating;
                self.compensation = Some(reason);
            }
            SagaEvent::SagaCompleted { outcome, .. } => {
                self.status = SagaStatus::Completed;
                self.outcome = Some(outcome);
            }
            SagaEvent::SagaNeedsAttention { .. } => self.status = SagaStatus::NeedsAttention,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::eur;
    use cqrs_es::test::TestFramework;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn sku(s: &str) -> Sku {
        Sku::parse(s).unwrap()
    }

    fn policy() -> SagaPolicy {
        SagaPolicy {
            step_deadline: Duration::from_secs(5),
            max_attempts: 3,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
        }
    }

    fn started(skus: &[&str]) -> SagaEvent {
        SagaEvent::SagaStarted {
            order_id: Uuid::from_u128(1),
            customer_id: Uuid::from_u128(2),
            lines: skus
                .iter()
                .map(|s| OrderLine {
                    sku: sku(s),
                    quantity: 2,
                })
                .collect(),
            payment_token: Some("tok_ok".into()),
            started_at: t(0),
        }
    }

    /// A saga driven by the real `decide`/`apply`, for scenario tests.
    struct Run(OrderSaga);

    impl Run {
        fn new(skus: &[&str]) -> Self {
            let mut saga = OrderSaga::default();
            saga.apply(started(skus));
            Self(saga)
        }

        fn send(&mut self, command: SagaCommand) -> Vec<SagaEvent> {
            let events = self.0.decide(command, &policy()).expect("command accepted");
            for e in events.clone() {
                self.0.apply(e);
            }
            events
        }

        /// Attempts and completes every due step with the given result.
        fn answer(&mut self, now: i64, result: impl Fn(&Step) -> StepResult) -> Vec<Step> {
            let due = self.0.due_steps();
            for step in &due {
                self.send(SagaCommand::Attempt {
                    step: step.clone(),
                    now: t(now),
                });
                self.send(SagaCommand::Complete {
                    step: step.clone(),
                    result: result(step),
                    now: t(now),
                });
            }
            due
        }
    }

    fn ok(step: &Step) -> StepResult {
        match step {
            Step::Reserve(_) => StepResult::Reserved {
                unit_price: eur(250),
            },
            Step::Authorise => StepResult::Authorised,
            _ => StepResult::Done,
        }
    }

    #[test]
    fn the_happy_path_reserves_prices_authorises_finishes_and_confirms() {
        let mut run = Run::new(&["A", "B"]);
        assert_eq!(
            run.answer(0, ok),
            [Step::Reserve(sku("A")), Step::Reserve(sku("B"))]
        );
        assert_eq!(run.0.total(), Some(eur(1000)));
        assert_eq!(run.answer(1, ok), [Step::Price]);
        assert_eq!(run.answer(2, ok), [Step::Authorise]);
        assert_eq!(
            run.answer(3, ok),
            [
                Step::Commit(sku("A")),
                Step::Commit(sku("B")),
                Step::Capture
            ]
        );
        assert_eq!(run.answer(4, ok), [Step::Confirm]);
        assert_eq!(run.0.outcome, Some(SagaOutcome::Confirmed));
        assert!(run.0.due_steps().is_empty());
    }

    #[test]
    fn one_line_out_of_stock_releases_the_others_and_rejects() {
        let mut run = Run::new(&["A", "B", "C"]);
        run.answer(0, |s| match s {
            Step::Reserve(x) if x.as_str() == "B" => StepResult::OutOfStock,
            other => ok(other),
        });
        assert_eq!(
            run.0.compensation,
            Some(CompensationReason::Rejected(RejectionReason::OutOfStock))
        );
        assert_eq!(
            run.answer(1, ok),
            [
                Step::Release(sku("A")),
                Step::Release(sku("C")),
                Step::Reject
            ]
        );
        assert_eq!(run.0.outcome, Some(SagaOutcome::Rejected));
    }

    #[test]
    fn a_decline_releases_all_stock_and_rejects_without_a_void() {
        let mut run = Run::new(&["A"]);
        run.answer(0, ok);
        run.answer(1, ok);
        run.answer(2, |_| StepResult::Declined {
            reason: "card_declined".into(),
        });
        assert_eq!(run.answer(3, ok), [Step::Release(sku("A")), Step::Reject]);
        assert_eq!(run.0.outcome, Some(SagaOutcome::Rejected));
    }

    #[test]
    fn a_step_that_keeps_timing_out_is_retried_then_compensated_with_a_void() {
        let mut run = Run::new(&["A"]);
        run.answer(0, ok);
        run.answer(1, ok);
        let mut now = 2;
        for attempt in 1..=3 {
            assert_eq!(run.0.readiness(&Step::Authorise, t(now)), Readiness::Ready);
            let e = run.send(SagaCommand::Attempt {
                step: Step::Authorise,
                now: t(now),
            });
            assert!(matches!(&e[0], SagaEvent::StepAttempted { attempt: a, .. } if *a == attempt));
            assert_eq!(
                run.0.readiness(&Step::Authorise, t(now + 1)),
                Readiness::InFlight(t(now + 5))
            );
            assert_eq!(
                run.0.readiness(&Step::Authorise, t(now + 5)),
                Readiness::TimedOut
            );
            now += 5;
            run.send(SagaCommand::Fail {
                step: Step::Authorise,
                reason: "deadline passed".into(),
                now: t(now),
                jitter_permille: 1000,
            });
            if attempt < 3 {
                // Exponential: 1 s after the first failure, 2 s after the second.
                let wait = 1i64 << (attempt - 1);
                assert_eq!(
                    run.0.readiness(&Step::Authorise, t(now)),
                    Readiness::Waiting(t(now + wait))
                );
                now += wait;
            }
        }
        assert_eq!(
            run.0.compensation,
            Some(CompensationReason::Rejected(RejectionReason::Timeout))
        );
        // The payment may have gone through: it is voided, and the stock released.
        assert_eq!(
            run.answer(now, ok),
            [Step::Release(sku("A")), Step::Void, Step::Reject]
        );
        assert_eq!(run.0.outcome, Some(SagaOutcome::Rejected));
    }

    #[test]
    fn a_cancel_mid_saga_compensates_and_ends_cancelled_without_rejecting() {
        let mut run = Run::new(&["A"]);
        run.answer(0, ok);
        run.answer(1, ok);
        run.answer(2, ok);
        run.answer(3, ok); // committed and captured
        run.send(SagaCommand::Cancel { now: t(4) });
        assert_eq!(run.answer(5, ok), [Step::Restock(sku("A")), Step::Refund]);
        assert_eq!(run.0.outcome, Some(SagaOutcome::Cancelled));
    }

    #[test]
    fn a_compensation_that_cannot_succeed_needs_attention() {
        let mut run = Run::new(&["A"]);
        run.answer(0, ok);
        run.send(SagaCommand::Cancel { now: t(1) });
        for n in 0..3 {
            run.send(SagaCommand::Attempt {
                step: Step::Release(sku("A")),
                now: t(100 * (n + 1)),
            });
            run.send(SagaCommand::Fail {
                step: Step::Release(sku("A")),
                reason: "inventory unavailable".into(),
                now: t(100 * (n + 1) + 5),
                jitter_permille: 0,
            });
        }
        assert_eq!(run.0.status, SagaStatus::NeedsAttention);
        assert!(run.0.due_steps().is_empty());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_equal_jitter() {
        let p = policy();
        assert_eq!(p.backoff(1, 0), Duration::from_millis(500));
        assert_eq!(p.backoff(1, 1000), Duration::from_secs(1));
        assert_eq!(p.backoff(3, 1000), Duration::from_secs(4));
        assert_eq!(p.backoff(10, 1000), Duration::from_secs(8));
        assert_eq!(p.backoff(10, 500), Duration::from_secs(6));
    }

    #[test]
    fn steps_round_trip_as_strings() {
        for step in [
            Step::Reserve(sku("A-1")),
            Step::Price,
            Step::Restock(sku("Z")),
            Step::Reject,
        ] {
            assert_eq!(step.to_string().parse::<Step>(), Ok(step.clone()));
        }
        assert!("ship".parse::<Step>().is_err());
    }

    // Given/when/then for each command's success and rejections.

    fn saga_test() -> TestFramework<OrderSaga> {
        TestFramework::with(policy())
    }

    #[tokio::test]
    async fn start_begins_once() {
        let SagaEvent::SagaStarted {
            order_id,
            customer_id,
            lines,
            payment_token,
            ..
        } = started(&["A"])
        else {
            unreachable!()
        };
        let start = SagaCommand::Start {
            order_id,
            customer_id,
            lines,
            payment_token,
            now: t(0),
        };
        saga_test()
            .given_no_previous_events()
            .when_async(start.clone())
            .await
            .then_expect_events(vec![started(&["A"])]);
        saga_test()
            .given(vec![started(&["A"])])
            .when_async(start)
            .await
            .then_expect_events(vec![]);
    }

    #[tokio::test]
    async fn attempt_records_the_deadline_and_refuses_steps_not_due() {
        let step = Step::Reserve(sku("A"));
        let command_id = {
            let mut s = OrderSaga::default();
            s.apply(started(&["A"]));
            s.command_id(&step)
        };
        saga_test()
            .given(vec![started(&["A"])])
            .when_async(SagaCommand::Attempt {
                step: step.clone(),
                now: t(1),
            })
            .await
            .then_expect_events(vec![SagaEvent::StepAttempted {
                step: step.clone(),
                attempt: 1,
                command_id,
                at: t(1),
                deadline: t(6),
            }]);
        saga_test()
            .given(vec![started(&["A"])])
            .when_async(SagaCommand::Attempt {
                step: Step::Capture,
                now: t(1),
            })
            .await
            .then_expect_error(SagaError::NotDue(Step::Capture));
        saga_test()
            .given_no_previous_events()
            .when_async(SagaCommand::Attempt { step, now: t(1) })
            .await
            .then_expect_error(SagaError::NotFound);
    }

    #[tokio::test]
    async fn complete_is_recorded_once() {
        let step = Step::Reserve(sku("A"));
        let done = SagaEvent::StepCompleted {
            step: step.clone(),
            result: StepResult::Reserved { unit_price: eur(1) },
            at: t(2),
        };
        let complete = SagaCommand::Complete {
            step: step.clone(),
            result: StepResult::Reserved { unit_price: eur(1) },
            now: t(2),
        };
        saga_test()
            .given(vec![started(&["A"])])
            .when_async(complete.clone())
            .await
            .then_expect_events(vec![done.clone()]);
        saga_test()
            .given(vec![started(&["A"]), done])
            .when_async(complete)
            .await
            .then_expect_events(vec![]);
    }

    #[tokio::test]
    async fn fail_schedules_a_retry_and_cancel_starts_compensation() {
        let step = Step::Reserve(sku("A"));
        let attempted = {
            let mut s = OrderSaga::default();
            s.apply(started(&["A"]));
            SagaEvent::StepAttempted {
                step: step.clone(),
                attempt: 1,
                command_id: s.command_id(&step),
                at: t(5),
                deadline: t(10),
            }
        };
        let fail = SagaCommand::Fail {
            step: step.clone(),
            reason: "unavailable".into(),
            now: t(10),
            jitter_permille: 1000,
        };
        saga_test()
            .given(vec![started(&["A"]), attempted])
            .when_async(fail.clone())
            .await
            .then_expect_events(vec![SagaEvent::StepFailed {
                step: step.clone(),
                attempt: 1,
                reason: "unavailable".into(),
                at: t(10),
                retry_at: t(11),
            }]);
        // Nothing in flight: a stale failure changes nothing.
        saga_test()
            .given(vec![started(&["A"])])
            .when_async(fail)
            .await
            .then_expect_events(vec![]);
        saga_test()
            .given(vec![started(&["A"])])
            .when_async(SagaCommand::Cancel { now: t(3) })
            .await
            .then_expect_events(vec![
                SagaEvent::CompensationStarted {
                    reason: CompensationReason::Cancelled,
                    detail: "cancelled by the customer".into(),
                    skus: vec![],
                    at: t(3),
                },
                SagaEvent::SagaCompleted {
                    outcome: SagaOutcome::Cancelled,
                    at: t(3),
                },
            ]);
        saga_test()
            .given_no_previous_events()
            .when_async(SagaCommand::Cancel { now: t(3) })
            .await
            .then_expect_error(SagaError::NotFound);
    }
}
