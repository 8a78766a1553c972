//! Events as their consumers read them: [`decode`] turns an envelope into the domain's event
//! type, upcasting old versions on the way, so every consumer (projections, the orchestrator,
//! the `events` tool) reads history the same way and the upcast is written once.

use std::borrow::Cow;

use domain::order::OrderEvent;
use domain::payment::PaymentEvent;
use domain::product::ProductEvent;
use domain::saga::SagaEvent;
use messaging::{BoundedContext, Envelope};
use serde::de::value::{MapAccessDeserializer, MapDeserializer};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// An event enum of one context's stream, as cqrs-es stores it (externally tagged).
pub trait LogEvent: DeserializeOwned {
    /// The stream it travels on.
    const CONTEXT: BoundedContext;

    /// `data` of `name` at major `version` in the shape of the current version; `None` when
    /// the version is not one this code knows.
    fn upcast<'a>(name: &str, version: u32, data: &'a Value) -> Option<Cow<'a, Value>>;
}

/// Why an envelope's event cannot be read, now or ever.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0:?} is not a streamshop event type")]
    Type(String),
    #[error("{name} is an event of the {found} stream, not of {expected}")]
    Context {
        name: String,
        found: String,
        expected: &'static str,
    },
    #[error("unknown event type {name} v{version}")]
    Unknown { name: String, version: u32 },
    #[error("{name} v{version} does not decode: {reason}")]
    Body {
        name: String,
        version: u32,
        reason: String,
    },
}

/// The envelope's event as `E`, upcast to the current version.
pub fn decode<E: LogEvent>(envelope: &Envelope) -> Result<E, DecodeError> {
    let (context, name, version) = envelope
        .type_parts()
        .map_err(|_| DecodeError::Type(envelope.event_type.clone()))?;
    if context != E::CONTEXT.token() {
        return Err(DecodeError::Context {
            name: name.to_owned(),
            found: context.to_owned(),
            expected: E::CONTEXT.token(),
        });
    }
    decode_data(name, version, &envelope.data)
}

/// `data` of the event `name` at major `version` as `E`, upcast to the current version.
pub fn decode_data<E: LogEvent>(name: &str, version: u32, data: &Value) -> Result<E, DecodeError> {
    let data = E::upcast(name, version, data).ok_or_else(|| DecodeError::Unknown {
        name: name.to_owned(),
        version,
    })?;
    // `{name: data}` as a map access, so the body is read where it lies instead of copied.
    let tagged = MapDeserializer::<_, serde_json::Error>::new(std::iter::once((name, &*data)));
    E::deserialize(MapAccessDeserializer::new(tagged)).map_err(|e| {
        let reason = e.to_string();
        // Only the event's own name as an unknown variant means an unknown type; an unknown
        // value inside the body (a reason, a currency) is a body that does not decode.
        if reason.starts_with(&format!("unknown variant `{name}`")) {
            DecodeError::Unknown {
                name: name.to_owned(),
                version,
            }
        } else {
            DecodeError::Body {
                name: name.to_owned(),
                version,
                reason,
            }
        }
    })
}

/// Every event at version 1, none upcast.
fn only_v1(version: u32, data: &Value) -> Option<Cow<'_, Value>> {
    (version == 1).then_some(Cow::Borrowed(data))
}

impl LogEvent for OrderEvent {
    const CONTEXT: BoundedContext = BoundedContext::Orders;

    fn upcast<'a>(name: &str, version: u32, data: &'a Value) -> Option<Cow<'a, Value>> {
        match (name, version) {
            ("OrderPlaced", 1) => Some(Cow::Owned(domain::order::order_placed_v2_to_v3(
                domain::order::order_placed_v1_to_v2(data.clone()),
            ))),
            ("OrderPlaced", 2) => Some(Cow::Owned(domain::order::order_placed_v2_to_v3(
                data.clone(),
            ))),
            ("OrderPlaced", 3) => Some(Cow::Borrowed(data)),
            ("OrderPlaced", _) => None,
            _ => only_v1(version, data),
        }
    }
}

impl LogEvent for ProductEvent {
    const CONTEXT: BoundedContext = BoundedContext::Inventory;

    fn upcast<'a>(name: &str, version: u32, data: &'a Value) -> Option<Cow<'a, Value>> {
        match (name, version) {
            ("StockReserved", 1) => Some(Cow::Owned(domain::product::stock_reserved_v1_to_v2(
                data.clone(),
            ))),
            ("StockReserved", 2) => Some(Cow::Borrowed(data)),
            ("StockReserved", _) => None,
            _ => only_v1(version, data),
        }
    }
}

impl LogEvent for PaymentEvent {
    const CONTEXT: BoundedContext = BoundedContext::Payments;

    fn upcast<'a>(_: &str, version: u32, data: &'a Value) -> Option<Cow<'a, Value>> {
        only_v1(version, data)
    }
}

impl LogEvent for SagaEvent {
    const CONTEXT: BoundedContext = BoundedContext::Sagas;

    fn upcast<'a>(_: &str, version: u32, data: &'a Value) -> Option<Cow<'a, Value>> {
        only_v1(version, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_unknown_type_and_a_bad_body_are_told_apart() {
        let unknown = decode_data::<OrderEvent>("OrderShipped", 1, &json!({}));
        assert!(
            matches!(unknown, Err(DecodeError::Unknown { .. })),
            "{unknown:?}"
        );
        let body = json!({"order_id": "0193a1b2-7c3d-7e4f-8a5b-6c7d8e9f0a1b", "reason": "bored",
                          "detail": "", "skus": []});
        let bad = decode_data::<OrderEvent>("OrderRejected", 1, &body);
        assert!(matches!(bad, Err(DecodeError::Body { .. })), "{bad:?}");
        let version = decode_data::<OrderEvent>("OrderPlaced", 4, &json!({}));
        assert!(
            matches!(version, Err(DecodeError::Unknown { version: 4, .. })),
            "{version:?}"
        );
    }

    #[test]
    fn order_placed_v1_and_v2_arrive_without_an_email() {
        let v2 = json!({"order_id": "0193a1b2-7c3d-7e4f-8a5b-6c7d8e9f0a1b",
                        "customer_id": "0193a1b2-0000-7000-8000-000000000001",
                        "lines": [{"sku": "SKU-1", "quantity": 2}], "payment_token": "tok_ok",
                        "placed_at": "2026-11-30T10:00:00Z"});
        let mut v1 = v2.clone();
        v1.as_object_mut().unwrap().remove("payment_token");
        for (version, data, token) in [(1, v1, None), (2, v2, Some("tok_ok".to_owned()))] {
            match decode_data::<OrderEvent>("OrderPlaced", version, &data).unwrap() {
                OrderEvent::OrderPlaced(placed) => {
                    assert_eq!((placed.payment_token, placed.email), (token, None));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn stock_reserved_v1_arrives_without_a_customer() {
        let v1 = json!({"sku": "SKU-1", "order_id": "0193a1b2-7c3d-7e4f-8a5b-6c7d8e9f0a1b",
                        "quantity": 2, "available": 8,
                        "unit_price": {"amount_minor": 250, "currency": "EUR"}});
        match decode_data::<ProductEvent>("StockReserved", 1, &v1).unwrap() {
            ProductEvent::StockReserved { customer_id, .. } => assert_eq!(customer_id, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn order_placed_v1_arrives_without_a_payment_token() {
        let v1 = json!({"order_id": "0193a1b2-7c3d-7e4f-8a5b-6c7d8e9f0a1b",
                        "customer_id": "0193a1b2-0000-7000-8000-000000000001",
                        "lines": [{"sku": "SKU-1", "quantity": 2}],
                        "placed_at": "2026-11-30T10:00:00Z"});
        match decode_data::<OrderEvent>("OrderPlaced", 1, &v1).unwrap() {
            OrderEvent::OrderPlaced(placed) => assert_eq!(placed.payment_token, None),
            other => panic!("{other:?}"),
        }
    }
}
