//! The rule of each saga command (`decide`, run by `handle`): which events it records, or why
//! it is refused. What follows from a result (the next phase or the end) is in `phases`.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use uuid::Uuid;

use super::{
    CompensationReason, OrderSaga, Phase, Readiness, SagaCommand, SagaError, SagaEvent, SagaPolicy,
    SagaStatus, Step,
};
use crate::order::{RejectionReason, MAX_LINES};

impl OrderSaga {
    fn is_open(&self) -> bool {
        matches!(self.status, SagaStatus::Running | SagaStatus::Compensating)
    }

    /// `events`, followed by an attempt of every step they make ready at `now` when `seed` is
    /// given: a result and the next steps' attempts are then one commit. Each attempt is
    /// what `Attempt` would record, with the id `Uuid::new_v5(seed, step)` for a step that
    /// has none yet.
    fn with_attempts(
        &self,
        mut events: Vec<SagaEvent>,
        now: DateTime<Utc>,
        policy: &SagaPolicy,
        seed: Option<Uuid>,
    ) -> Vec<SagaEvent> {
        let Some(seed) = seed else {
            return events;
        };
        let mut next = self.clone();
        for event in &events {
            next.apply(event.clone());
        }
        if !next.is_open() {
            return events;
        }
        let deadline = now
            + chrono::Duration::from_std(policy.step_deadline)
                .unwrap_or(chrono::Duration::seconds(5));
        for step in next.due_steps() {
            let ready = next.readiness(&step, now) == Readiness::Ready;
            if !ready || (step == Step::Authorise && next.payment_token.is_none()) {
                continue;
            }
            events.push(SagaEvent::StepAttempted {
                command_id: next
                    .command_id(&step)
                    .unwrap_or_else(|| Uuid::new_v5(&seed, step.to_string().as_bytes())),
                attempt: next.step(&step).map_or(0, |s| s.attempts) + 1,
                step,
                at: now,
                deadline,
            });
        }
        events
    }

    /// The events `command` records, or why it is refused; `handle` writes them.
    pub(super) fn decide(
        &self,
        command: SagaCommand,
        policy: &SagaPolicy,
    ) -> Result<Vec<SagaEvent>, SagaError> {
        if self.order_id.is_none() && !matches!(command, SagaCommand::Start { .. }) {
            return Err(SagaError::NotFound);
        }
        match command {
            SagaCommand::Start {
                order_id,
                customer_id,
                lines,
                payment_token,
                now,
                attempt_seed,
            } => {
                let started = SagaEvent::SagaStarted {
                    order_id,
                    customer_id,
                    lines,
                    payment_token,
                    started_at: now,
                };
                self.start(started, now, policy, attempt_seed)
            }
            SagaCommand::Attempt {
                step,
                now,
                command_id,
            } => self.attempt(step, now, command_id, policy),
            SagaCommand::Complete {
                step,
                result,
                now,
                attempt_seed,
            } => self.complete(step, result, now, policy, attempt_seed),
            SagaCommand::Fail {
                step,
                reason,
                now,
                jitter_permille,
            } => self.fail(step, reason, now, policy, jitter_permille),
            SagaCommand::Resume { reason, now } => self.resume(reason, now),
            SagaCommand::Cancel { now } => self.cancel(now),
        }
    }

    /// A saga starts once (a second start changes nothing), for an order that can exist.
    fn start(
        &self,
        started: SagaEvent,
        now: DateTime<Utc>,
        policy: &SagaPolicy,
        attempt_seed: Option<Uuid>,
    ) -> Result<Vec<SagaEvent>, SagaError> {
        if self.order_id.is_some() {
            return Ok(vec![]);
        }
        let SagaEvent::SagaStarted { lines, .. } = &started else {
            unreachable!("a start records SagaStarted")
        };
        // The orders service never places such an order; one that claims to be placed is
        // forged or corrupt, and must not start a step per line.
        if lines.is_empty() || lines.len() > MAX_LINES {
            return Err(SagaError::ImpossibleOrder(lines.len()));
        }
        Ok(self.with_attempts(vec![started], now, policy, attempt_seed))
    }

    /// An attempt of a step that is due and ready.
    fn attempt(
        &self,
        step: Step,
        now: DateTime<Utc>,
        command_id: Uuid,
        policy: &SagaPolicy,
    ) -> Result<Vec<SagaEvent>, SagaError> {
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
            command_id: self.command_id(&step).unwrap_or(command_id),
            step,
            attempt,
            at: now,
            deadline,
        }])
    }

    /// A step's result: recorded once, with what follows from it.
    fn complete(
        &self,
        step: Step,
        result: super::StepResult,
        now: DateTime<Utc>,
        policy: &SagaPolicy,
        attempt_seed: Option<Uuid>,
    ) -> Result<Vec<SagaEvent>, SagaError> {
        if self.done(&step) || !self.is_open() {
            return Ok(vec![]);
        }
        // A result can only come from a command the saga sent. One for a step it never
        // attempted (an order confirmed before its payment was captured, stock released
        // by hand) contradicts what the saga knows: it stops, and a person decides.
        if self.step(&step).is_none_or(|s| s.attempts == 0) {
            return Ok(vec![SagaEvent::SagaNeedsAttention {
                reason: format!(
                    "{} {step} came to {} without this saga asking for it, which \
                         contradicts its state",
                    Self::CONTRADICTION,
                    result.name()
                ),
                step,
                at: now,
            }]);
        }
        let event = SagaEvent::StepCompleted {
            step,
            result,
            at: now,
        };
        let events = self.with_consequences(event, now);
        Ok(self.with_attempts(events, now, policy, attempt_seed))
    }

    /// A failed attempt: retried later, or, past the business deadline before the pivot, the
    /// order is rejected.
    fn fail(
        &self,
        step: Step,
        reason: String,
        now: DateTime<Utc>,
        policy: &SagaPolicy,
        jitter_permille: u16,
    ) -> Result<Vec<SagaEvent>, SagaError> {
        // Only an attempt in flight can fail: a stale timeout seen by a second driver,
        // or a late reply after a retry was scheduled, changes nothing.
        let in_flight = self.step(&step).is_some_and(|s| s.deadline.is_some());
        if self.done(&step) || !self.is_open() || !in_flight {
            return Ok(vec![]);
        }
        let attempts = self.step(&step).map_or(0, |s| s.attempts);
        // A target that does not answer is waited for: compensations and the steps
        // after the pivot until they succeed (giving up on them would leave stock held
        // or money taken), the steps before it until the business deadline.
        let before_deadline = self.started_at.is_none_or(|started| {
            now < started
                + chrono::Duration::from_std(policy.business_deadline)
                    .unwrap_or(chrono::Duration::MAX)
        });
        let keep_trying = step.is_compensation()
            || self.phase() == Some(Phase::Compensate)
            || self.past_pivot()
            || before_deadline;
        if keep_trying {
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
        // The business deadline passed before the pivot: the order is rejected, and
        // what may have been done (a reservation or an authorisation whose answer was
        // lost) is undone.
        Ok(vec![
            SagaEvent::StepGaveUp {
                step: step.clone(),
                attempts,
                reason: reason.clone(),
                at: now,
            },
            SagaEvent::CompensationStarted {
                reason: CompensationReason::Rejected(RejectionReason::Timeout),
                detail: format!(
                    "{step} did not succeed within the business deadline \
                         ({attempts} attempts): {reason}"
                ),
                skus: vec![],
                at: now,
            },
        ])
    }

    /// A parked saga goes on, for a reason a person gives.
    fn resume(&self, reason: String, now: DateTime<Utc>) -> Result<Vec<SagaEvent>, SagaError> {
        if self.status != SagaStatus::NeedsAttention {
            return Err(SagaError::NotParked);
        }
        if reason.trim().is_empty() {
            return Err(SagaError::NoReason);
        }
        Ok(vec![SagaEvent::SagaResumed {
            step: self.parked_step.clone(),
            compensating: self.compensation.is_some(),
            reason,
            at: now,
        }])
    }

    /// A running saga is cancelled by its customer: what was done is undone.
    fn cancel(&self, now: DateTime<Utc>) -> Result<Vec<SagaEvent>, SagaError> {
        if self.status != SagaStatus::Running {
            return Ok(vec![]);
        }
        let event = SagaEvent::CompensationStarted {
            reason: CompensationReason::Cancelled,
            detail: "cancelled by the customer".into(),
            skus: vec![],
            at: now,
        };
        Ok(self.with_consequences(event, now))
    }
}

impl OrderSaga {
    /// How the reason of a park for an input the saga did not cause begins: the orchestrator
    /// counts those apart (`saga_contradictions_total`), as an alert.
    pub const CONTRADICTION: &'static str = "contradiction:";

    /// `event` and what follows from the state it leaves (the next phase, or the end), decided
    /// on a copy: `apply` runs again when the events are committed.
    fn with_consequences(&self, event: SagaEvent, now: DateTime<Utc>) -> Vec<SagaEvent> {
        let mut after = self.clone();
        after.apply(event.clone());
        let mut events = vec![event];
        events.extend(after.consequences(now));
        events
    }
}
