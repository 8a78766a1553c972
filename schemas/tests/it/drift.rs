//! The committed schema files are exactly what the code generates, released event schemas
//! never change, and every OpenAPI document is valid OpenAPI 3.1.

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

/// A folder removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A copy of the committed schema files (and the lock) in a fresh folder.
fn copy_of_schemas() -> Scratch {
    let dir = schemas::dir();
    let copy = Scratch(std::env::temp_dir().join(format!("schemas-{}", uuid::Uuid::new_v4())));
    let mut files = BTreeSet::new();
    for folder in ["events", "commands", "openapi"] {
        files_under(&dir.join(folder), &dir, &mut files);
    }
    files.insert("envelope.json".into());
    files.insert(schemas::RELEASED.into());
    for file in files {
        let to = copy.path().join(&file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(dir.join(&file), to).unwrap();
    }
    copy
}

#[test]
fn schema_files_match_the_code_and_released_schemas_are_unchanged() {
    let dir = schemas::dir();
    let problems = schemas::check(&dir);
    assert!(problems.is_empty(), "{problems:#?}");
    let generated = schemas::generate();
    for folder in ["events", "commands", "openapi"] {
        let mut present = BTreeSet::new();
        files_under(&dir.join(folder), &dir, &mut present);
        let expected: BTreeSet<String> = generated
            .keys()
            .filter(|p| p.starts_with(&format!("{folder}/")))
            .cloned()
            .collect();
        assert_eq!(
            present, expected,
            "files under {folder}/ without a source, or missing ones"
        );
    }
}

#[test]
fn a_changed_historic_schema_fails_the_check() {
    let copy = copy_of_schemas();
    let historic = "events/orders/OrderPlaced.v1.json";
    assert!(schemas::check(copy.path()).is_empty());

    // Someone edits the released v1 file by hand.
    let file = copy.path().join(historic);
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replacen("\"order_id\"", "\"order_ref\"", 1)).unwrap();
    let problems = schemas::check(copy.path());
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with(&format!("released: {historic} changed"))),
        "{problems:#?}"
    );
    assert!(problems
        .iter()
        .any(|p| p.starts_with(&format!("stale: {historic}"))));

    // The code changes the v1 type: what it generates no longer matches the lock, which
    // stands here for the code as it was released. Writing the files refuses to rewrite it.
    std::fs::write(&file, &text).unwrap();
    let lock_file = copy.path().join(schemas::RELEASED);
    let mut lock = schemas::released(copy.path());
    lock.insert(
        historic.into(),
        schemas::digest("the schema as it was released"),
    );
    std::fs::write(&lock_file, serde_json::to_string_pretty(&lock).unwrap()).unwrap();
    let problems = schemas::check(copy.path());
    assert!(
        problems.iter().any(|p| p.starts_with(&format!(
            "released: the code now generates a different {historic}"
        ))),
        "{problems:#?}"
    );
    let (_, refused) = schemas::write(copy.path()).unwrap();
    assert_eq!(refused, vec![historic.to_owned()]);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        text,
        "a released file is never rewritten"
    );
}

#[test]
fn a_new_event_schema_must_be_locked() {
    let copy = copy_of_schemas();
    let mut lock = schemas::released(copy.path());
    lock.remove("events/orders/OrderPlaced.v2.json");
    std::fs::write(
        copy.path().join(schemas::RELEASED),
        serde_json::to_string_pretty(&lock).unwrap(),
    )
    .unwrap();
    let problems = schemas::check(copy.path());
    assert_eq!(
        problems,
        vec![format!(
            "unreleased: events/orders/OrderPlaced.v2.json is not locked in {} (run `cargo run -p schemas`)",
            schemas::RELEASED
        )]
    );
    let (written, refused) = schemas::write(copy.path()).unwrap();
    assert!(refused.is_empty());
    assert_eq!(written, vec![schemas::RELEASED.to_owned()]);
    assert!(schemas::check(copy.path()).is_empty());
}

#[test]
fn an_event_s_file_holds_only_the_definitions_it_uses() {
    let generated = schemas::generate();
    let cancelled = &generated["events/orders/OrderCancelled.v1.json"];
    assert!(cancelled.get("$defs").is_none(), "{cancelled}");
    let placed = &generated["events/orders/OrderPlaced.v2.json"];
    let defs: Vec<&String> = placed["$defs"].as_object().unwrap().keys().collect();
    assert_eq!(defs, ["OrderLine", "Sku"], "{placed}");
}

#[test]
fn every_event_type_version_and_command_has_a_schema() {
    let generated = schemas::generate();
    for path in [
        "events/orders/OrderPlaced.v1.json",
        "events/orders/OrderPlaced.v2.json",
        "events/orders/OrderPlaced.v3.json",
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
        "events/sagas/SagaResumed.v1.json",
        "envelope.json",
    ] {
        assert!(generated.contains_key(path), "no schema {path}");
    }
    for command in contracts::all() {
        let base = format!("commands/{}/{}", command.context.token(), command.name);
        assert!(generated.contains_key(&format!("{base}.json")), "no {base}");
        assert!(
            generated.contains_key(&format!("{base}.reply.json")),
            "no {base} reply"
        );
    }
    // The OpenAPI documents: one per service of the topology (the gateway's among them).
    assert_eq!(
        generated.len(),
        30 + 2 * contracts::all().len() + topology::SERVICES.len()
    );
}

#[test]
fn every_openapi_document_is_valid_openapi_3_1_and_references_only_defined_schemas() {
    let python_path = testkit::infra().python_path.clone().expect(
        "STREAMSHOP_TEST_PYTHONPATH names where openapi-spec-validator is installed: run the tests with `cargo xtask test`",
    );
    let dir = schemas::dir();
    for (service, doc) in schemas::openapi_documents() {
        assert_eq!(doc["openapi"], "3.1.0", "{service}");
        let defined = doc["components"]["schemas"].as_object().unwrap();
        let text = doc.to_string();
        for reference in text.split("\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap();
            assert!(
                defined.contains_key(name),
                "{service}: dangling $ref to {name}"
            );
        }
        for common in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
            // The gateway serves /metrics on its internal listener only, so its
            // public document does not list it.
            if service == "gateway" && common == "/metrics" {
                assert!(doc["paths"][common].is_null(), "gateway lists {common}");
                continue;
            }
            assert!(
                doc["paths"][common]["get"].is_object(),
                "{service} lacks {common}"
            );
        }
        let file = dir.join(format!("openapi/{service}.json"));
        let output = std::process::Command::new("python3")
            .env("PYTHONPATH", &python_path)
            .args([
                "-c",
                "import json, sys\n\
                 from openapi_spec_validator import validate\n\
                 from openapi_spec_validator.validation import OpenAPIV31SpecValidator\n\
                 validate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator)",
            ])
            .arg(&file)
            .output()
            .expect("python3 runs");
        assert!(
            output.status.success(),
            "{service}: not valid OpenAPI 3.1:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn every_event_version_has_a_committed_example_that_matches_its_schema() {
    let examples = testkit::schemas::examples();
    let mut covered = BTreeSet::new();
    for envelope in &examples {
        testkit::schemas::assert_valid(envelope);
        covered.insert(format!(
            "events/{}/{}.v{}.json",
            envelope.type_parts().unwrap().0,
            envelope.name(),
            envelope.version()
        ));
    }
    let released: BTreeSet<String> = schemas::released(&schemas::dir()).into_keys().collect();
    assert_eq!(
        covered, released,
        "examples without a schema, or schemas without an example"
    );
}

#[test]
fn a_nats_request_and_its_reply_match_the_committed_command_schemas() {
    use contracts::inventory::{ReserveStock, StockAnswer};
    use contracts::{Command, NatsCommand, Reply};
    let reserve = ReserveStock {
        sku: domain::Sku::parse("SKU-1").unwrap(),
        order_id: uuid::Uuid::now_v7(),
        quantity: 2,
        customer_id: Some(uuid::Uuid::now_v7()),
    };
    let request = serde_json::to_value(NatsCommand {
        command_id: "c-1",
        command: &reserve,
    })
    .unwrap();
    let path = format!("commands/inventory/{}.json", ReserveStock::NAME);
    assert_eq!(
        testkit::schemas::check(&path, &request),
        Vec::<String>::new()
    );
    // Without its command id, a NATS request is refused, as the service refuses it.
    let bare = serde_json::to_value(&reserve).unwrap();
    assert!(!testkit::schemas::check(&path, &bare).is_empty());

    let reply: Reply<StockAnswer> = Reply::rejected("out_of_stock", "only 1 left", false);
    let reply_path = format!("commands/inventory/{}.reply.json", ReserveStock::NAME);
    let reply = serde_json::to_value(reply).unwrap();
    assert_eq!(
        testkit::schemas::check(&reply_path, &reply),
        Vec::<String>::new()
    );
}

#[test]
fn the_operators_page_s_generated_tables_are_the_code_s() {
    assert_eq!(
        schemas::page_problems(&schemas::operators_page()),
        Vec::<String>::new()
    );
}
