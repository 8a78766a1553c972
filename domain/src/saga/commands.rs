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
    #[error("an order of {0} lines cannot have been placed (1 to {max} may)", max = crate::order::MAX_LINES)]
    ImpossibleOrder(usize),
    #[error("step {0} was never attempted, so nothing can have completed it")]
    NotAttempted(Step),
}

impl SagaError {
    /// The codes of the refusals of an input the saga cannot have caused or taken (a forged
    /// or stray event): the orchestrator counts them rather than retrying.
    pub const NOT_ATTEMPTED: &'static str = "not_attempted";
    pub const IMPOSSIBLE_ORDER: &'static str = "impossible_order";
}

impl crate::Rejection for SagaError {
    fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::NotDue(_) => "not_due",
            Self::NoPaymentToken => "no_payment_token",
            Self::NotAttempted(_) => SagaError::NOT_ATTEMPTED,
            Self::ImpossibleOrder(_) => SagaError::IMPOSSIBLE_ORDER,
        }
    }
}
