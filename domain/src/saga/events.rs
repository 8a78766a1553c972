//! The saga's stored events (`SagaEvent`, released format: never change its JSON shape) and the
//! outcomes, reasons and statuses they carry.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Step, StepResult};
use crate::order::{OrderLine, RejectionReason};
use crate::Sku;

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
        // Sensitive: no reader is shown it.
        #[schemars(extend("x-sensitive" = true))]
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
    /// An operator resumed a parked saga, saying why: it runs again (compensating, when it
    /// was), and `step` (the one it parked on) starts over.
    SagaResumed {
        step: Option<Step>,
        compensating: bool,
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
            Self::SagaResumed { .. } => "SagaResumed",
        }
        .into()
    }

    fn event_version(&self) -> String {
        "1".into()
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
