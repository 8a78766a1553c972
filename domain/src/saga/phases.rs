//! The flow, written once: the phase order ([`PHASES`]), which steps each phase needs
//! ([`Phase::steps`]), which phase a step belongs to ([`Step::phase`]), and what follows once a
//! phase has its answers (the next phase, compensation, or the end).
//!
//! Reserve stock for every line (prices come back) -> price the order -> authorise the payment
//! -> commit every line's stock and capture the payment -> confirm the order. A phase starts
//! once every step of the one before has a result; its steps go out together. Compensation is
//! one phase of its own, entered from any of them: release (or restock) the stock, void (or
//! refund) the payment, and reject the order unless the customer cancelled it.

use chrono::{DateTime, Utc};

use super::{CompensationReason, OrderSaga, SagaEvent, SagaOutcome, SagaStatus, Step, StepResult};
use crate::order::RejectionReason;
use crate::Sku;

/// A phase of the saga: steps that go out together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Reserve stock for every line; inventory answers with the unit prices.
    Reserve,
    /// Price the order with the reserved prices.
    Price,
    /// Authorise the payment for the total.
    Authorise,
    /// Commit every line's stock and capture the payment.
    Finish,
    /// Confirm the order.
    Confirm,
    /// Undo what was done (release or restock each line's stock, void or refund the payment)
    /// and reject the order unless the customer cancelled it.
    Compensate,
}

/// The phases of a saga that goes well, in order. The saga is confirmed when the last one has
/// its result; any phase may instead lead to [`Phase::Compensate`].
pub const PHASES: &[Phase] = &[
    Phase::Reserve,
    Phase::Price,
    Phase::Authorise,
    Phase::Finish,
    Phase::Confirm,
];

impl Phase {
    /// Every step this phase needs for `saga`, in the order they go out.
    pub fn steps(self, saga: &OrderSaga) -> Vec<Step> {
        let per_line = |step: fn(Sku) -> Step| saga.lines.iter().map(move |l| step(l.sku.clone()));
        match self {
            Self::Reserve => per_line(Step::Reserve).collect(),
            Self::Price => vec![Step::Price],
            Self::Authorise => vec![Step::Authorise],
            Self::Finish => per_line(Step::Commit).chain([Step::Capture]).collect(),
            Self::Confirm => vec![Step::Confirm],
            Self::Compensate => saga.compensation_steps(),
        }
    }
}

impl Step {
    /// The phase this step belongs to.
    pub fn phase(&self) -> Phase {
        match self {
            Self::Reserve(_) => Phase::Reserve,
            Self::Price => Phase::Price,
            Self::Authorise => Phase::Authorise,
            Self::Commit(_) | Self::Capture => Phase::Finish,
            Self::Confirm => Phase::Confirm,
            Self::Release(_) | Self::Restock(_) | Self::Void | Self::Refund | Self::Reject => {
                Phase::Compensate
            }
        }
    }

    /// Whether this step undoes or closes (compensation) rather than advances.
    pub fn is_compensation(&self) -> bool {
        self.phase() == Phase::Compensate
    }
}

impl OrderSaga {
    /// The phase the saga is in: while running, the first of [`PHASES`] with a step still
    /// without a result; while compensating, [`Phase::Compensate`]; none once it has ended.
    pub fn phase(&self) -> Option<Phase> {
        match self.status {
            SagaStatus::Running => PHASES.iter().copied().find(|p| !self.finished(*p)),
            SagaStatus::Compensating => Some(Phase::Compensate),
            _ => None,
        }
    }

    /// Whether every step of `phase` has a result.
    fn finished(&self, phase: Phase) -> bool {
        phase.steps(self).iter().all(|s| self.done(s))
    }

    /// The steps the current phase needs that have no result yet.
    pub fn due_steps(&self) -> Vec<Step> {
        let Some(phase) = self.phase() else {
            return vec![];
        };
        phase
            .steps(self)
            .into_iter()
            .filter(|s| !self.done(s) && !self.step(s).is_some_and(|st| st.gave_up))
            .collect()
    }

    /// What undoes what was done, and the closing rejection.
    fn compensation_steps(&self) -> Vec<Step> {
        // A forward step still in flight when compensation starts (a commit sent beside the
        // capture that was refused) is waited for: its answer decides what undoes it. It
        // stays in the phase, so the phase cannot finish before it, and it is retried with
        // its command id if its answer is lost.
        let in_flight = |step: &Step| {
            self.step(step)
                .is_some_and(|s| s.result.is_none() && s.attempts > 0 && !s.gave_up)
        };
        let mut steps = Vec::new();
        for line in &self.lines {
            let sku = line.sku.clone();
            let commit = Step::Commit(sku.clone());
            // Only a commit that went through is undone by a restock; a refused one left the
            // reservation in place, which a release gives back.
            if matches!(self.result(&commit), Some(StepResult::Done)) {
                steps.push(Step::Restock(sku));
            } else if in_flight(&commit) {
                steps.push(commit);
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
        // Likewise only a capture that went through is refunded; a refused one leaves an
        // authorisation to void.
        if self.captured() {
            steps.push(Step::Refund);
        } else if in_flight(&Step::Capture) {
            steps.push(Step::Capture);
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

    /// Events that follow from the state once a step's result is known: the next phase, or
    /// the end.
    pub(super) fn consequences(&self, now: DateTime<Utc>) -> Vec<SagaEvent> {
        match self.status {
            SagaStatus::Running => self.forward_consequences(now),
            SagaStatus::Compensating => self.compensation_consequences(now),
            _ => vec![],
        }
    }

    /// While running: compensation when an answer says no, confirmation when the last phase
    /// is done.
    fn forward_consequences(&self, now: DateTime<Utc>) -> Vec<SagaEvent> {
        if self.finished(Phase::Reserve) && !self.out_of_stock.is_empty() {
            let names: Vec<&str> = self.out_of_stock.iter().map(Sku::as_str).collect();
            return vec![SagaEvent::CompensationStarted {
                reason: CompensationReason::Rejected(RejectionReason::OutOfStock),
                detail: format!("out of stock: {}", names.join(", ")),
                skus: self.out_of_stock.clone(),
                at: now,
            }];
        }
        if let Some(StepResult::Declined { reason }) = self.result(&Step::Authorise) {
            return vec![SagaEvent::CompensationStarted {
                reason: CompensationReason::Rejected(RejectionReason::PaymentDeclined),
                detail: format!("payment declined: {reason}"),
                skus: vec![],
                at: now,
            }];
        }
        if let Some((step, reason)) = self.steps.iter().find_map(|(s, st)| match &st.result {
            Some(StepResult::Refused { reason }) if !s.is_compensation() => Some((s, reason)),
            _ => None,
        }) {
            // After the capture nothing is compensated: a refusal there needs a person.
            if self.captured() {
                return vec![SagaEvent::SagaNeedsAttention {
                    step: step.clone(),
                    reason: format!(
                        "{step} was refused after the payment was captured, so the saga can \
                         only go forward: {reason}"
                    ),
                    at: now,
                }];
            }
            return vec![SagaEvent::CompensationStarted {
                reason: CompensationReason::Rejected(RejectionReason::Failed),
                detail: format!("{step} was refused: {reason}"),
                skus: vec![],
                at: now,
            }];
        }
        if PHASES.last().is_some_and(|last| self.finished(*last)) {
            return vec![SagaEvent::SagaCompleted {
                outcome: SagaOutcome::Confirmed,
                at: now,
            }];
        }
        vec![]
    }

    /// While compensating: attention when an undo is refused, the end when every undo is done.
    fn compensation_consequences(&self, now: DateTime<Utc>) -> Vec<SagaEvent> {
        if let Some((step, reason)) = self.steps.iter().find_map(|(s, st)| match &st.result {
            Some(StepResult::Refused { reason }) if s.is_compensation() && *s != Step::Reject => {
                Some((s, reason))
            }
            _ => None,
        }) {
            return vec![SagaEvent::SagaNeedsAttention {
                step: step.clone(),
                reason: format!("compensation refused: {reason}"),
                at: now,
            }];
        }
        if self.finished(Phase::Compensate) {
            let outcome = match self.compensation {
                Some(CompensationReason::Cancelled) => SagaOutcome::Cancelled,
                _ => SagaOutcome::Rejected,
            };
            return vec![SagaEvent::SagaCompleted { outcome, at: now }];
        }
        vec![]
    }
}
