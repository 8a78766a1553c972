//! The CloudEvents 1.0 JSON envelope every event travels in on JetStream.
//!
//! `type` is `streamshop.<context>.<EventType>.v<major>`; `subject` is the aggregate id;
//! `sequence` the aggregate's event sequence; `id` a UUID derived from
//! (aggregate type, aggregate id, sequence), so a re-published event keeps its id.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::BoundedContext;

/// UUID namespace for event ids (v5 of `<aggregate_type>:<aggregate_id>:<sequence>`).
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1e_2b0c_8d5a_4c33_9a57_1d2e_3f40_5a6b);

/// Metadata keys stored with each event in the event store.
pub mod meta {
    pub const CORRELATION_ID: &str = "correlation_id";
    pub const CAUSATION_ID: &str = "causation_id";
    pub const TRACEPARENT: &str = "traceparent";
}

/// A CloudEvents 1.0 structured-mode event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Always `1.0`.
    pub specversion: String,
    pub id: Uuid,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub subject: String,
    pub time: DateTime<Utc>,
    pub datacontenttype: String,
    pub dataschema: String,
    /// Extension: the event's sequence within its aggregate (1, 2, ...).
    pub sequence: u64,
    /// Extension: the aggregate type (`Order`, `Product`, ...).
    pub aggregatetype: String,
    /// Extension: the business correlation id (the order id for the order flow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlationid: Option<String>,
    /// Extension: the id of the command that caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causationid: Option<String>,
    pub data: Value,
}

/// Why bytes could not be read as an envelope.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a CloudEvents envelope: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported specversion {0:?}")]
    SpecVersion(String),
    #[error("event type {0:?} is not of the form streamshop.<context>.<Event>.v<N>")]
    Type(String),
}

/// What an event store row holds, the input for building an envelope.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub context: BoundedContext,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: u64,
    pub event_type: String,
    /// cqrs-es event version, such as `1` or `2.0`.
    pub event_version: String,
    pub payload: Value,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

/// The major version of a semantic version string: `2.1` gives 2.
fn major(version: &str) -> u32 {
    version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(1)
}

/// The deterministic event id.
pub fn event_id(aggregate_type: &str, aggregate_id: &str, sequence: u64) -> Uuid {
    Uuid::new_v5(
        &EVENT_ID_NAMESPACE,
        msg_id(aggregate_type, aggregate_id, sequence).as_bytes(),
    )
}

/// The JetStream de-duplication id: `<aggregate_type>:<aggregate_id>:<sequence>`.
pub fn msg_id(aggregate_type: &str, aggregate_id: &str, sequence: u64) -> String {
    format!("{aggregate_type}:{aggregate_id}:{sequence}")
}

/// The schema file of an event version, relative to `schemas/`.
pub fn schema_path(context: BoundedContext, event_type: &str, major: u32) -> String {
    format!("events/{}/{event_type}.v{major}.json", context.token())
}

impl Envelope {
    /// Wraps a stored event. cqrs-es stores an enum variant as `{"EventType": {...}}`; `data`
    /// is the inner object, since `type` already names the variant.
    pub fn from_stored(event: &StoredEvent) -> Self {
        let data = match &event.payload {
            Value::Object(map) if map.len() == 1 && map.contains_key(&event.event_type) => {
                map[&event.event_type].clone()
            }
            other => other.clone(),
        };
        let major = major(&event.event_version);
        Self {
            specversion: "1.0".into(),
            id: event_id(&event.aggregate_type, &event.aggregate_id, event.sequence),
            source: format!("/streamshop/{}", event.context.token()),
            event_type: format!(
                "streamshop.{}.{}.v{major}",
                event.context.token(),
                event.event_type
            ),
            subject: event.aggregate_id.clone(),
            time: event.recorded_at,
            datacontenttype: "application/json".into(),
            dataschema: format!(
                "streamshop:schemas/{}",
                schema_path(event.context, &event.event_type, major)
            ),
            sequence: event.sequence,
            aggregatetype: event.aggregate_type.clone(),
            correlationid: event.correlation_id.clone(),
            causationid: event.causation_id.clone(),
            data,
        }
    }

    /// Parses and checks an envelope from a message body.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let envelope: Self = serde_json::from_slice(bytes)?;
        if envelope.specversion != "1.0" {
            return Err(EnvelopeError::SpecVersion(envelope.specversion));
        }
        envelope.type_parts()?;
        Ok(envelope)
    }

    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serialises")
    }

    /// (context token, event type, major version) from `type`.
    pub fn type_parts(&self) -> Result<(&str, &str, u32), EnvelopeError> {
        let bad = || EnvelopeError::Type(self.event_type.clone());
        let mut parts = self.event_type.split('.');
        let (Some("streamshop"), Some(context), Some(name), Some(version), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        let major = version
            .strip_prefix('v')
            .and_then(|v| v.parse().ok())
            .ok_or_else(bad)?;
        Ok((context, name, major))
    }

    /// The event type without context or version: `OrderPlaced`.
    pub fn name(&self) -> &str {
        self.type_parts().map(|(_, name, _)| name).unwrap_or("")
    }

    /// The event's major version.
    pub fn version(&self) -> u32 {
        self.type_parts().map(|(_, _, v)| v).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored() -> StoredEvent {
        StoredEvent {
            context: BoundedContext::Orders,
            aggregate_type: "Order".into(),
            aggregate_id: "0192".into(),
            sequence: 3,
            event_type: "OrderPlaced".into(),
            event_version: "1".into(),
            payload: json!({"OrderPlaced": {"order_id": "0192"}}),
            correlation_id: Some("0192".into()),
            causation_id: Some("cmd-1".into()),
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn stored_events_become_cloudevents() {
        let env = Envelope::from_stored(&stored());
        assert_eq!(env.event_type, "streamshop.orders.OrderPlaced.v1");
        assert_eq!(env.data, json!({"order_id": "0192"}));
        assert_eq!(env.subject, "0192");
        assert_eq!(env.sequence, 3);
        assert_eq!(env.id, event_id("Order", "0192", 3));
        assert_eq!(
            env.dataschema,
            "streamshop:schemas/events/orders/OrderPlaced.v1.json"
        );
        let back = Envelope::from_slice(&env.to_vec()).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.name(), "OrderPlaced");
        assert_eq!(back.version(), 1);
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(event_id("Order", "a", 1), event_id("Order", "a", 1));
        assert_ne!(event_id("Order", "a", 1), event_id("Order", "a", 2));
        assert_eq!(msg_id("Order", "a", 1), "Order:a:1");
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(Envelope::from_slice(b"{not json").is_err());
        let mut env = Envelope::from_stored(&stored());
        env.event_type = "OrderPlaced".into();
        assert!(matches!(
            Envelope::from_slice(&env.to_vec()),
            Err(EnvelopeError::Type(_))
        ));
    }
}
