//! One event as the tool hands it on: the CloudEvents envelope plus where it sits in
//! JetStream (stream and stream sequence).

use messaging::Envelope;
use serde_json::{Map, Value};

/// An event read from a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The stream's base name (`ORDERS`), whatever the namespace.
    pub stream: String,
    pub stream_sequence: u64,
    pub envelope: Envelope,
}

/// Every column of an exported event, in order: where it sits, then the envelope's fields.
pub const COLUMNS: [&str; 15] = [
    "stream",
    "stream_sequence",
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "sequence",
    "aggregatetype",
    "correlationid",
    "causationid",
    "data",
];

impl Record {
    /// The JSON-lines form: the envelope's fields with `stream` and `stream_sequence` added.
    pub fn to_json(&self) -> Value {
        let mut object = match serde_json::to_value(&self.envelope) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        object.insert("stream".into(), Value::from(self.stream.clone()));
        object.insert("stream_sequence".into(), Value::from(self.stream_sequence));
        Value::Object(object)
    }

    /// Reads the JSON-lines form back.
    pub fn from_json(value: Value) -> Result<Self, String> {
        let Value::Object(mut object) = value else {
            return Err("a line is not a JSON object".into());
        };
        let stream = match object.remove("stream") {
            Some(Value::String(s)) => s,
            _ => return Err("stream is missing".into()),
        };
        let stream_sequence = object
            .remove("stream_sequence")
            .and_then(|v| v.as_u64())
            .ok_or("stream_sequence is missing")?;
        let envelope = serde_json::from_value(Value::Object(object)).map_err(|e| e.to_string())?;
        Ok(Self {
            stream,
            stream_sequence,
            envelope,
        })
    }

    /// The CSV row, in `COLUMNS` order; `data` is its JSON text, absent options are empty.
    pub fn to_row(&self) -> [String; 15] {
        let e = &self.envelope;
        [
            self.stream.clone(),
            self.stream_sequence.to_string(),
            e.specversion.clone(),
            e.id.to_string(),
            e.source.clone(),
            e.event_type.clone(),
            e.subject.clone(),
            e.time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            e.datacontenttype.clone(),
            e.dataschema.clone(),
            e.sequence.to_string(),
            e.aggregatetype.clone(),
            e.correlationid.clone().unwrap_or_default(),
            e.causationid.clone().unwrap_or_default(),
            e.data.to_string(),
        ]
    }

    /// Reads a CSV row back.
    pub fn from_row(row: &[String]) -> Result<Self, String> {
        if row.len() != COLUMNS.len() {
            return Err(format!("{} columns, not {}", row.len(), COLUMNS.len()));
        }
        let optional = |s: &String| (!s.is_empty()).then(|| s.clone());
        let number = |s: &String| s.parse::<u64>().map_err(|e| format!("{s:?}: {e}"));
        Ok(Self {
            stream: row[0].clone(),
            stream_sequence: number(&row[1])?,
            envelope: messaging::Envelope {
                specversion: row[2].clone(),
                id: row[3].parse().map_err(|e| format!("id: {e}"))?,
                source: row[4].clone(),
                event_type: row[5].clone(),
                subject: row[6].clone(),
                time: chrono::DateTime::parse_from_rfc3339(&row[7])
                    .map_err(|e| format!("time: {e}"))?
                    .with_timezone(&chrono::Utc),
                datacontenttype: row[8].clone(),
                dataschema: row[9].clone(),
                sequence: number(&row[10])?,
                aggregatetype: row[11].clone(),
                correlationid: optional(&row[12]),
                causationid: optional(&row[13]),
                data: serde_json::from_str(&row[14]).map_err(|e| format!("data: {e}"))?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(correlation: Option<&str>) -> Record {
        Record {
            stream: "ORDERS".into(),
            stream_sequence: 42,
            envelope: Envelope {
                specversion: "1.0".into(),
                id: "9040850c-33f9-5c98-8c56-1be604a1d6d3".parse().unwrap(),
                source: "/streamshop/orders".into(),
                event_type: "streamshop.orders.OrderPlaced.v2".into(),
                subject: "01a1fdf3-1942-7793-9fd7-be01785c7fe0".into(),
                time: "2026-11-21T11:52:09.794750Z".parse().unwrap(),
                datacontenttype: "application/json".into(),
                dataschema: "streamshop:schemas/events/orders/OrderPlaced.v2.json".into(),
                sequence: 1,
                aggregatetype: "Order".into(),
                correlationid: correlation.map(str::to_owned),
                causationid: None,
                data: serde_json::json!({"lines": [{"sku": "A,\"B\"", "quantity": 2}]}),
            },
        }
    }

    #[test]
    fn json_lines_and_csv_rows_read_back_unchanged() {
        for record in [sample(Some("01a1")), sample(None)] {
            assert_eq!(Record::from_json(record.to_json()).unwrap(), record);
            assert_eq!(Record::from_row(&record.to_row()).unwrap(), record);
            assert_eq!(record.to_json()["stream_sequence"], 42);
        }
    }

    #[test]
    fn malformed_rows_are_refused_with_a_reason() {
        let mut row = sample(None).to_row();
        row[1] = "x".into();
        assert!(Record::from_row(&row).unwrap_err().contains("\"x\""));
        assert!(Record::from_row(&row[..3]).is_err());
        assert!(Record::from_json(serde_json::json!([1])).is_err());
    }
}
