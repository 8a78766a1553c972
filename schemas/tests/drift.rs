//! The committed schema files are exactly what the code generates.

use std::collections::BTreeSet;
use std::path::Path;

fn files_under(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, base, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.insert(
                path.strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
}

#[test]
fn schema_files_match_the_code() {
    let dir = schemas::dir();
    let generated = schemas::generate();
    for (path, schema) in &generated {
        let on_disk = std::fs::read_to_string(dir.join(path)).unwrap_or_default();
        assert_eq!(
            on_disk,
            schemas::render(schema),
            "{path} is stale: run `cargo run -p schemas`"
        );
    }
    let mut present = BTreeSet::new();
    files_under(&dir.join("events"), &dir, &mut present);
    let expected: BTreeSet<String> = generated
        .keys()
        .filter(|p| p.starts_with("events/"))
        .cloned()
        .collect();
    assert_eq!(
        present, expected,
        "schema files without an event type, or missing ones"
    );
}

#[test]
fn every_event_type_and_version_has_a_schema() {
    let generated = schemas::generate();
    for path in [
        "events/orders/OrderPlaced.v1.json",
        "events/orders/OrderPlaced.v2.json",
        "events/orders/OrderPriced.v1.json",
        "events/orders/OrderConfirmed.v1.json",
        "events/orders/OrderRejected.v1.json",
        "events/orders/OrderCancelled.v1.json",
        "events/inventory/ProductCreated.v1.json",
        "events/inventory/ProductRestocked.v1.json",
        "events/inventory/PriceChanged.v1.json",
        "events/inventory/StockReserved.v1.json",
        "events/inventory/ReservationReleased.v1.json",
        "events/inventory/ReservationCommitted.v1.json",
        "events/payments/PaymentAuthorised.v1.json",
        "events/payments/PaymentDeclined.v1.json",
        "events/payments/PaymentCaptured.v1.json",
        "events/payments/PaymentVoided.v1.json",
        "events/payments/PaymentRefunded.v1.json",
        "events/sagas/SagaStarted.v1.json",
        "events/sagas/StepAttempted.v1.json",
        "events/sagas/StepCompleted.v1.json",
        "events/sagas/StepFailed.v1.json",
        "events/sagas/StepGaveUp.v1.json",
        "events/sagas/CompensationStarted.v1.json",
        "events/sagas/SagaCompleted.v1.json",
        "events/sagas/SagaNeedsAttention.v1.json",
        "envelope.json",
        "openapi/query-api.json",
    ] {
        assert!(generated.contains_key(path), "no schema {path}");
    }
    assert_eq!(generated.len(), 27);
}

#[test]
fn the_openapi_document_references_only_defined_schemas() {
    let doc = &schemas::generate()["openapi/query-api.json"];
    let defined = doc["components"]["schemas"].as_object().unwrap();
    let text = doc.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(defined.contains_key(name), "dangling $ref to {name}");
    }
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/orders/{id}"]["get"].is_object());
}
