//! Checks docker-compose.yml without Docker: it must validate against the Compose
//! Specification's schema, and every service must point at hosts and ports the file defines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::services::SERVICES;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn compose_text() -> String {
    std::fs::read_to_string(workspace().join("docker-compose.yml")).unwrap()
}

fn compose() -> Value {
    let text = compose_text();
    let mut yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    yaml.apply_merge().unwrap();
    serde_json::to_value(yaml).unwrap()
}

fn services(compose: &Value) -> &serde_json::Map<String, Value> {
    compose["services"].as_object().expect("services")
}

/// Container ports each service declares under `expose`.
fn exposed(compose: &Value) -> BTreeMap<String, BTreeSet<u16>> {
    services(compose)
        .iter()
        .map(|(name, s)| {
            let ports = s["expose"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    p.as_str()
                        .and_then(|p| p.parse().ok())
                        .or(p.as_u64().map(|p| p as u16))
                })
                .collect();
            (name.clone(), ports)
        })
        .collect()
}

/// (host, port) of `scheme://[user@]host:port[/...]`.
fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit('@').next()?;
    let (host, port) = host_port.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

/// The service's volumes whose source is under `dir`.
fn mounts<'a>(service: &'a Value, dir: &str) -> Vec<&'a str> {
    service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|v| v.contains(dir))
        .collect()
}

#[test]
fn compose_file_matches_the_compose_specification() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/compose-spec.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the Compose schema compiles");
    let compose = compose();
    let errors: Vec<String> = validator
        .iter_errors(&compose)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "docker-compose.yml is invalid:\n{}",
        errors.join("\n")
    );
}

#[test]
fn every_service_points_at_hosts_and_ports_the_file_defines() {
    let compose = compose();
    let exposed = exposed(&compose);
    for (name, service) in services(&compose) {
        let Some(env) = service["environment"].as_object() else {
            continue;
        };
        for (key, value) in env {
            let value = value.as_str().unwrap_or_default();
            if key == "HTTP_ADDR" {
                let port: u16 = value.rsplit(':').next().unwrap().parse().unwrap();
                assert!(
                    exposed[name].contains(&port),
                    "{name} listens on {port} but does not expose it"
                );
            } else if let Some((host, port)) = host_port(value) {
                let target = exposed.get(&host).unwrap_or_else(|| {
                    panic!("{name}.{key} points at {host}, which is no service")
                });
                assert!(
                    target.contains(&port),
                    "{name}.{key} points at {host}:{port}, which {host} does not expose"
                );
            }
        }
    }
}

/// The rest of each service's block is generated from the topology (`crate::generate`); the
/// image must hold every service's binary.
#[test]
fn the_image_builds_every_service_and_no_database_trusts_a_connection() {
    let dockerfile = std::fs::read_to_string(workspace().join("Dockerfile")).unwrap();
    for s in SERVICES {
        assert!(
            dockerfile.contains(&format!("--package {}", s.name))
                && dockerfile.contains(&format!("target/release/{}", s.name)),
            "the Dockerfile builds and copies {}",
            s.name
        );
    }
    assert!(!compose_text().contains("trust"), "no trust authentication");
}

#[test]
fn only_the_gateway_the_mail_page_and_the_observability_uis_are_published() {
    let compose = compose();
    let published: BTreeSet<&str> = services(&compose)
        .iter()
        .filter(|(_, s)| s.get("ports").is_some())
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        published,
        BTreeSet::from(["gateway", "grafana", "jaeger", "mail", "prometheus"])
    );
    // The observability UIs and the mail page answer this machine only: published on all
    // interfaces, anyone on the network could reach Grafana (and through it every database)
    // or read the customers' emails.
    for ui in ["grafana", "jaeger", "mail", "prometheus"] {
        for port in services(&compose)[ui]["ports"].as_array().unwrap() {
            let port = port.as_str().unwrap();
            assert!(port.starts_with("127.0.0.1:"), "{ui} publishes {port}");
        }
    }
    // Anonymous visitors may look, never administer (an admin can add a data source that
    // reads any database with the committed password).
    let grafana = &services(&compose)["grafana"]["environment"];
    if grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "true" {
        assert_eq!(grafana["GF_AUTH_ANONYMOUS_ORG_ROLE"], "Viewer");
    }
}

#[test]
fn each_service_holds_only_its_own_nats_key() {
    // docker/nats/nats.conf itself is checked with the other generated files (generate.rs).
    let compose = compose();
    for (name, service) in services(&compose) {
        let environment = &service["environment"];
        if environment["NATS_URL"].is_null() {
            continue;
        }
        assert_eq!(
            environment["NATS_CREDENTIALS_DIR"], "/run/secrets/nats",
            "{name}"
        );
        let keys: Vec<&str> = mounts(service, "docker/nats/keys/");
        assert_eq!(
            keys,
            [format!(
                "./docker/nats/keys/{name}.nk:/run/secrets/nats/{name}.nk:ro"
            )],
            "{name} mounts its own key and no other"
        );
    }
}

#[test]
fn every_service_speaks_tls_with_its_own_certificate_and_no_other() {
    let compose = compose();
    let dir = crate::compose_keys::tls_dir(workspace());
    let mut holders = BTreeSet::new();
    for (name, service) in services(&compose) {
        let environment = &service["environment"];
        if environment["HTTP_ADDR"].is_null() {
            continue;
        }
        assert_eq!(environment["TLS_DIR"], "/run/tls", "{name} uses TLS");
        let holder = topology::service(name).map_or(name.as_str(), |s| s.certificate);
        let mounts: Vec<&str> = mounts(service, "docker/tls/");
        assert_eq!(
            mounts,
            [
                "./docker/tls/ca.pem:/run/tls/ca.pem:ro".to_owned(),
                format!("./docker/tls/{holder}.crt:/run/tls/{holder}.crt:ro"),
                format!("./docker/tls/{holder}.key:/run/tls/{holder}.key:ro"),
            ],
            "{name} mounts the CA and its own certificate and key, and no other"
        );
        // The committed files make a working client and server.
        let tls = service_kit::tls::TlsSettings::new(&dir, holder);
        tls.client_config()
            .unwrap_or_else(|e| panic!("{holder}: {e:#}"));
        tls.server_config()
            .unwrap_or_else(|e| panic!("{holder}: {e:#}"));
        holders.insert(holder.to_owned());
    }
    assert_eq!(holders.len(), SERVICES.len(), "{holders:?}");
    for (name, upstream) in services(&compose)["gateway"]["environment"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| {
            k.ends_with("_URL")
                && !k.starts_with("OIDC")
                && !k.starts_with("NATS")
                && !k.starts_with("OTEL")
        })
    {
        assert!(
            upstream.as_str().unwrap().starts_with("https://"),
            "the gateway calls {name} over HTTPS"
        );
    }
    let nats = std::fs::read_to_string(workspace().join("docker/nats/nats.conf")).unwrap();
    assert!(
        nats.contains("verify: true"),
        "NATS asks every client for a certificate"
    );
}
