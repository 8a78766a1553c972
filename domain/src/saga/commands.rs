//! What the orchestrator asks of a saga (`SagaCommand`) and why a saga refuses (`SagaError`).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Step, StepResult};
use crate::order::OrderLine;

/// Commands the orchestrator gives a saga.
#[derive(Debug, Clone, PartialEq)]
pub enum SagaCommand {
    Start {
        order_id: Uuid,
        customer_id: Uuid,
        lines: Vec<OrderLine>,
        payment_token: Option<String>,
        now: DateTime<Utc>,
        /// When given, the first steps are attempted in the same commit (see `Complete`).
        attempt_seed: Option<Uuid>,
    },
    /// About to send `step`'s command: record the attempt and its deadline first.
    /// `command_id` is a fresh random id, used only if the step has none yet.
    Attempt {
        step: Step,
        now: DateTime<Utc>,
        command_id: Uuid,
    },
    /// A reply or an event told the step's result. A repeat changes nothing.
    Complete {
        step: Step,
        result: StepResult,
        now: DateTime<Utc>,
        /// When given, the steps this result makes due are attempted in the same commit,
        /// each with the command id `Uuid::new_v5(seed, step)` (a fresh random seed per
        /// command keeps them unguessable); the caller then sends their commands.
        attempt_seed: Option<Uuid>,
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
    /// An operator removed the cause of a park: the parked step is tried again from scratch
    /// (a new command id, since the old one's refusal is what its target remembers).
    Resume { reason: String, now: DateTime<Utc> },
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
    #[error("an order of {0} lines cannot have been placed (1 to {max} may)", max = crate::order::MAX_LINES)]
    ImpossibleOrder(usize),
    #[error("the saga is not waiting for attention")]
    NotParked,
    #[error("a resumption needs a reason")]
    NoReason,
}

impl SagaError {
    /// The code of the refusal of an order that cannot have been placed (a forged or corrupt
    /// event): the orchestrator counts it rather than retrying.
    pub const IMPOSSIBLE_ORDER: &'static str = "impossible_order";
}

impl crate::Rejection for SagaError {
    fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::NotDue(_) => "not_due",
            Self::NoPaymentToken => "no_payment_token",
            Self::NotParked => "not_parked",
            Self::NoReason => "no_reason",
            Self::ImpossibleOrder(_) => SagaError::IMPOSSIBLE_ORDER,
        }
    }
}
