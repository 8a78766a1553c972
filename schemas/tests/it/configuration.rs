//! The configuration page (`docs/configuration.md`) against the settings types: every
//! variable a service reads is documented there, and every variable documented is read by a
//! service. Each service's settings are read here the way its `main` reads them, from an
//! environment holding only what must be given, and `Env::asked` says which names they read.

use std::collections::BTreeSet;

use service_kit::env::Env;

/// What must be given for every service's settings to read to the end (the rest has
/// defaults), in two forms: the secrets as values with TLS off, and the secrets in files with
/// TLS on (the compose stack's committed certificates).
fn required() -> [Env; 2] {
    let repository = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let dir = std::env::temp_dir().join(format!("streamshop-configuration-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    [
        Env::from_pairs([
            ("TLS", "off".to_owned()),
            (
                "DATA_KEYS_MASTER_KEY",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
            ),
            ("STRIPE_SECRET_KEY", "sk_test_configuration".to_owned()),
            ("STRIPE_WEBHOOK_SECRET", "whsec_configuration".to_owned()),
        ]),
        Env::from_pairs([
            ("TLS_DIR", format!("{repository}/docker/tls")),
            (
                "DATA_KEYS_MASTER_KEY_FILE",
                format!("{repository}/docker/keys/data-keys-master.key"),
            ),
            (
                "STRIPE_SECRET_KEY_FILE",
                file("stripe-key", "sk_test_configuration"),
            ),
            (
                "STRIPE_WEBHOOK_SECRET_FILE",
                file("webhook-secret", "whsec_configuration"),
            ),
        ]),
    ]
}

/// `Ok` when the settings were read, else why not.
fn done<T, E: std::fmt::Display>(read: Result<T, E>) -> Result<(), String> {
    read.map(|_| ()).map_err(|e| e.to_string())
}

/// Every name the services' settings read, each service's as its `main` reads them.
fn read_by_the_services() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut read = |name: &str, reading: &dyn Fn(&Env) -> Result<(), String>| {
        for env in required() {
            reading(&env).unwrap_or_else(|e| panic!("{name}'s settings: {e}"));
            names.extend(env.asked());
        }
    };
    read("orders", &|env| {
        done(command_kit::settings::<orders::OrdersSpec>(env))?;
        done(orders::OrdersSpec::from_env(env))?;
        done(orders::keys::master_key(env))
    });
    read("inventory", &|env| {
        done(command_kit::settings::<inventory::InventorySpec>(env))?;
        done(inventory::InventorySpec::from_env(env))
    });
    read("payments", &|env| done(payments::settings(env)));
    read("orchestrator", &|env| {
        done(orchestrator::Settings::from_env(env))
    });
    read("projections", &|env| {
        done(projections::Settings::from_env(env))
    });
    read("query-api", &|env| done(query_api::Settings::from_env(env)));
    read("notifications", &|env| {
        done(notifications::Settings::from_env(env))
    });
    read("gateway", &|env| done(gateway::Settings::from_env(env)));
    names
}

/// The variables of the page's table: every `NAME` in a row's first column.
fn documented() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    let page = std::fs::read_to_string(path).expect("docs/configuration.md");
    page.lines()
        .filter_map(|line| line.strip_prefix("| "))
        .filter_map(|row| row.split(" | ").next())
        .flat_map(|first| first.split('`'))
        .filter(|word| {
            !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_setting_a_service_reads_is_documented_and_every_documented_one_is_read() {
    let read = read_by_the_services();
    let documented = documented();
    assert!(
        read.len() > 50 && documented.len() > 50,
        "{read:?} {documented:?}"
    );
    let undocumented: Vec<&String> = read.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "read by a service but missing from docs/configuration.md: {undocumented:?}"
    );
    let unread: Vec<&String> = documented.difference(&read).collect();
    assert!(
        unread.is_empty(),
        "documented in docs/configuration.md but read by no service: {unread:?}"
    );
}
