//! The OrderSaga aggregate (one per order): the persisted state of the order -> stock ->
//! payment flow and of its compensation.
//!
//! The saga decides, the orchestrator acts. [`OrderSaga::due_steps`] says which steps the
//! current phase needs; the orchestrator records an attempt (with its deadline) before it sends
//! a step's command, then records the result, a failure (retried with exponential backoff and
//! jitter) or a timeout. Every attempt, deadline, retry and compensation is an event, so the
//! saga resumes where it stopped after a crash and its timeline can be shown.
//!
//! Layout: this file is the aggregate (its state, `apply`, and the `Aggregate` impl whose
//! `handle` runs `decide`); `phases.rs` is the flow (the phase order, written once in
//! [`PHASES`], and what each phase needs and leads to); `decide.rs` is the rule of each command;
//! `step.rs`, `events.rs`, `commands.rs` and `policy.rs` are the types (steps, stored events,
//! commands, timing); `tests.rs` the given/when/then tests.

mod commands;
mod decide;
mod events;
mod phases;
mod policy;
mod step;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::order::OrderLine;
use crate::{Money, Sku};

pub use commands::{SagaCommand, SagaError};
pub use events::{CompensationReason, SagaEvent, SagaOutcome, SagaStatus};
pub use phases::{Phase, PHASES};
pub use policy::{Readiness, SagaPolicy};
pub use step::{Step, StepResult, StepState};

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
    /// The SKUs whose reservation inventory refused for want of stock, in line order. `apply`
    /// assigns it as the reservations' answers come in.
    #[serde(default)]
    pub out_of_stock: Vec<Sku>,
    /// The step the saga stopped on while it needs attention, and why.
    #[serde(default)]
    pub parked_step: Option<Step>,
    #[serde(default)]
    pub parked_reason: Option<String>,
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

    /// Whether the payment was captured: from then on the saga only goes forward.
    pub fn captured(&self) -> bool {
        matches!(self.result(&Step::Capture), Some(StepResult::Done))
    }

    /// Whether the saga has passed its pivot: the capture was sent and not refused. Its
    /// answer may be lost, but the money may be taken, so every later step is retried until
    /// it succeeds and nothing before is compensated for want of an answer.
    pub fn past_pivot(&self) -> bool {
        self.step(&Step::Capture).is_some_and(|s| {
            s.attempts > 0 && !matches!(s.result, Some(StepResult::Refused { .. }))
        })
    }

    /// The command id of a step, once it has been attempted: chosen at random by the first
    /// attempt (so nobody can send it first) and carried by every later one, so a retry of a
    /// command that did go through gets the first answer instead of acting twice.
    pub fn command_id(&self, step: &Step) -> Option<Uuid> {
        self.step(step).and_then(|s| s.command_id)
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

    /// Records the answer to `sku`'s reservation in `out_of_stock`, which stays in line order
    /// whatever order the answers come in.
    fn note_reservation(&mut self, sku: &Sku, result: &StepResult) {
        self.out_of_stock.retain(|s| s != sku);
        if !matches!(result, StepResult::OutOfStock) {
            return;
        }
        let line = |s: &Sku| self.lines.iter().position(|l| &l.sku == s);
        let Some(at) = line(sku) else {
            return;
        };
        let index = self
            .out_of_stock
            .partition_point(|s| line(s).is_some_and(|l| l < at));
        self.out_of_stock.insert(index, sku.clone());
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
                command_id,
                deadline,
                ..
            } => {
                let state = self.steps.entry(step).or_default();
                state.attempts = attempt;
                state.command_id = Some(command_id);
                state.deadline = Some(deadline);
                state.retry_at = None;
            }
            SagaEvent::StepCompleted { step, result, .. } => {
                if let Step::Reserve(sku) = &step {
                    self.note_reservation(sku, &result);
                }
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
            SagaEvent::SagaNeedsAttention { step, reason, .. } => {
                self.status = SagaStatus::NeedsAttention;
                self.parked_step = Some(step);
                self.parked_reason = Some(reason);
            }
            SagaEvent::SagaResumed {
                step, compensating, ..
            } => {
                self.status = if compensating {
                    SagaStatus::Compensating
                } else {
                    SagaStatus::Running
                };
                if let Some(step) = step {
                    self.steps.remove(&step);
                }
                for state in self.steps.values_mut() {
                    state.gave_up = false;
                }
                self.parked_step = None;
                self.parked_reason = None;
            }
        }
    }
}
