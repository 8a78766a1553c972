//! Who connects to NATS, and what each may publish and subscribe: the permissions that make a
//! forged event, a forged reply or a stolen command impossible, written once as code. The
//! server configuration (`cargo xtask up`, the tests, compose) is generated from it.
//!
//! Invariant: only a context's relay publishes `events.<context>.>`; only a context's service
//! subscribes to `cmd.<context>.>`, and it may publish to a reply subject only to answer a
//! request it received (`allow_responses`); only the orchestrator sends saga commands; nobody
//! but the administrator may delete or purge a stream. Anonymous connections are refused.
//!
//! Invariant: a durable consumer (`durables`) is reachable only by its owner. Readers (the
//! analysts, the gateway's live streams) create only consumers named in the request's
//! subject, never a durable's name, and cannot list consumers, so one reader cannot find
//! another's either.

use crate::{durables, BoundedContext, Namespace};

/// Everyone who connects to NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Identity {
    Orders,
    Inventory,
    Payments,
    Orchestrator,
    Projections,
    Gateway,
    /// Reads the streams and nothing else: analysts' tools and the `events` CLI. It logs in
    /// with a user and password (in the URL), which every NATS client library supports.
    Analyst,
}

impl Identity {
    pub const ALL: [Self; 7] = [
        Self::Orders,
        Self::Inventory,
        Self::Payments,
        Self::Orchestrator,
        Self::Projections,
        Self::Gateway,
        Self::Analyst,
    ];

    /// The identity's name: a service's is the topology's (`topology::Service::nats`).
    pub fn name(self) -> &'static str {
        let of = |s: &'static topology::Service| s.nats.expect("the service talks to NATS");
        match self {
            Self::Orders => of(&topology::ORDERS),
            Self::Inventory => of(&topology::INVENTORY),
            Self::Payments => of(&topology::PAYMENTS),
            Self::Orchestrator => of(&topology::ORCHESTRATOR),
            Self::Projections => of(&topology::PROJECTIONS),
            Self::Gateway => of(&topology::GATEWAY),
            Self::Analyst => "analyst",
        }
    }

    /// The identity of a context's command service.
    pub fn of_context(context: BoundedContext) -> Self {
        match context {
            BoundedContext::Orders => Self::Orders,
            BoundedContext::Inventory => Self::Inventory,
            BoundedContext::Payments => Self::Payments,
            BoundedContext::Sagas => Self::Orchestrator,
        }
    }

    /// The prefix of this identity's reply subjects: only it may subscribe there, so nobody
    /// else reads the answers to its requests.
    pub fn inbox_prefix(self) -> String {
        format!("_INBOX_{}", self.name())
    }

    /// What this identity may do in `scope`.
    pub fn permissions(self, scope: &Scope) -> Permissions {
        use BoundedContext::*;
        let mut p = Permissions {
            publish: vec!["$JS.API.INFO".to_owned()],
            deny_publish: Vec::new(),
            subscribe: vec![format!("{}.>", self.inbox_prefix())],
            allow_responses: false,
        };
        match self {
            Self::Orders | Self::Inventory | Self::Payments => {
                let context = match self {
                    Self::Orders => Orders,
                    Self::Inventory => Inventory,
                    _ => Payments,
                };
                p.owns(scope, context);
                p.serves(scope, context);
                match self {
                    // Orders keeps the customers' data keys and opens a sealed payment token
                    // for payments alone, which needs it for the provider.
                    Self::Orders => p
                        .subscribe
                        .extend(scope.subjects(&format!("keys.{}.open", Orders.token()))),
                    Self::Payments => p
                        .publish
                        .extend(scope.subjects(&format!("keys.{}.open", Orders.token()))),
                    _ => {}
                }
            }
            Self::Orchestrator => {
                p.owns(scope, Sagas);
                for context in durables::ORCHESTRATOR_INPUTS {
                    p.sends(scope, context);
                }
            }
            Self::Projections => {}
            Self::Gateway => {
                for context in [Orders, Sagas] {
                    p.reads(scope, context);
                }
            }
            Self::Analyst => {
                p.publish.extend([
                    "$JS.API.STREAM.NAMES".to_owned(),
                    "$JS.API.STREAM.LIST".to_owned(),
                ]);
                for context in BoundedContext::ALL {
                    p.reads(scope, context);
                }
            }
        }
        // Each durable consumer is its owner's alone: created, read, acknowledged, restored
        // (deleted and made again) only under its own name.
        for durable in durables::all().into_iter().filter(|d| d.owner == self) {
            p.consumes(scope, durable.context, &durable.name);
        }
        for list in [&mut p.publish, &mut p.deny_publish, &mut p.subscribe] {
            list.sort();
            list.dedup();
        }
        p
    }
}

/// The namespaces a configuration serves: one (a deployment), or any (the shared test
/// server, where every test has its own namespace). NATS wildcards match whole tokens, and
/// a namespaced stream name is one token (`T1A2_ORDERS`), so for any namespace a permission
/// names any stream; the subjects keep their context either way.
#[derive(Debug, Clone)]
pub enum Scope {
    Namespace(Namespace),
    AnyNamespace,
}

impl Scope {
    /// `rest` (`events.orders.>`) as subjects of this scope.
    fn subjects(&self, rest: &str) -> Vec<String> {
        match self {
            Self::Namespace(ns) if ns.as_str().is_empty() => vec![rest.to_owned()],
            Self::Namespace(ns) => vec![format!("{}.{rest}", ns.as_str())],
            Self::AnyNamespace => vec![rest.to_owned(), format!("*.{rest}")],
        }
    }

    fn stream(&self, context: BoundedContext) -> String {
        match self {
            Self::Namespace(ns) => ns.stream(context),
            Self::AnyNamespace => "*".to_owned(),
        }
    }
}

/// One identity's permissions, as nats-server's `permissions` block takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    /// Exceptions to `publish`: the server refuses these even where `publish` matches.
    pub deny_publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// May publish to the reply subject of a request it received, once.
    pub allow_responses: bool,
}

impl Permissions {
    /// Publishes the context's events (its relay) and creates its stream.
    fn owns(&mut self, scope: &Scope, context: BoundedContext) {
        let stream = scope.stream(context);
        self.publish
            .extend(scope.subjects(&format!("events.{}.>", context.token())));
        self.publish.extend([
            format!("$JS.API.STREAM.INFO.{stream}"),
            format!("$JS.API.STREAM.CREATE.{stream}"),
        ]);
    }

    /// Serves the context's commands, and answers them.
    fn serves(&mut self, scope: &Scope, context: BoundedContext) {
        self.subscribe
            .extend(scope.subjects(&format!("cmd.{}.>", context.token())));
        self.allow_responses = true;
    }

    /// Sends the context's commands.
    fn sends(&mut self, scope: &Scope, context: BoundedContext) {
        self.publish
            .extend(scope.subjects(&format!("cmd.{}.>", context.token())));
    }

    /// Reads the context's stream through its own durable pull consumer `name`: creates it
    /// (and restores it, deleting one that was changed), pulls from it and acknowledges what
    /// it took. No other consumer's name is in these subjects.
    fn consumes(&mut self, scope: &Scope, context: BoundedContext, name: &str) {
        let stream = scope.stream(context);
        self.publish.extend([
            format!("$JS.API.STREAM.INFO.{stream}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.{name}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.{name}.>"),
            format!("$JS.API.CONSUMER.INFO.{stream}.{name}"),
            format!("$JS.API.CONSUMER.DELETE.{stream}.{name}"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}"),
            format!("$JS.ACK.{stream}.{name}.>"),
        ]);
    }

    /// Reads the context's stream with ordered (ephemeral) consumers and single lookups. A
    /// reader names its consumers (`durables::reader_name`): the form of creation that takes
    /// the name from the request's body (`$JS.API.CONSUMER.CREATE.<stream>`, five tokens) is
    /// not granted, since that name could be a durable's, and every durable's name is denied.
    fn reads(&mut self, scope: &Scope, context: BoundedContext) {
        let stream = scope.stream(context);
        self.publish.extend([
            format!("$JS.API.STREAM.INFO.{stream}"),
            format!("$JS.API.STREAM.MSG.GET.{stream}"),
            format!("$JS.API.DIRECT.GET.{stream}"),
            format!("$JS.API.DIRECT.GET.{stream}.>"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.*"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.*.>"),
            format!("$JS.API.CONSUMER.INFO.{stream}.*"),
            // An ordered consumer deletes the one it replaces.
            format!("$JS.API.CONSUMER.DELETE.{stream}.*"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
            // Push consumers (other clients' ordered consumers) answer flow control.
            format!("$JS.FC.{stream}.>"),
        ]);
        for durable in durables::on(context) {
            let name = &durable.name;
            self.deny_publish.extend([
                format!("$JS.API.CONSUMER.CREATE.{stream}.{name}"),
                format!("$JS.API.CONSUMER.CREATE.{stream}.{name}.>"),
                format!("$JS.API.CONSUMER.INFO.{stream}.{name}"),
                format!("$JS.API.CONSUMER.DELETE.{stream}.{name}"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}"),
                format!("$JS.FC.{stream}.{name}.>"),
            ]);
        }
    }
}

/// A user of the server configuration: its identity (`None` for the administrator, who may
/// do everything: xtask, the tests' harness, the benchmark's driver) and how it logs in.
#[derive(Debug, Clone)]
pub struct User {
    pub identity: Option<Identity>,
    pub login: Login,
}

#[derive(Debug, Clone)]
pub enum Login {
    /// An nkey's public key (`U...`): the client proves it holds the seed.
    Nkey(String),
    /// A user and password (the analysts'), which every client library supports.
    Password { user: String, password: String },
}

/// nats-server's `authorization` block for `users` in `scope`. No `no_auth_user`: a client
/// that does not log in is refused.
pub fn authorization(users: &[User], scope: &Scope) -> String {
    let quoted = |items: &[String]| {
        items
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::from("authorization {\n  users = [\n");
    for user in users {
        let login = match &user.login {
            Login::Nkey(key) => format!("nkey: {key:?}"),
            Login::Password { user, password } => {
                format!("user: {user:?}, password: {password:?}")
            }
        };
        let name = user.identity.map_or("administrator", Identity::name);
        out.push_str(&format!("    # {name}\n"));
        match user.identity {
            None => out.push_str(&format!("    {{ {login} }}\n")),
            Some(identity) => {
                let p = identity.permissions(scope);
                out.push_str(&format!(
                    "    {{ {login}, permissions: {{\n      publish: {{ allow: [{}]{} }}\n      subscribe: {{ allow: [{}] }}\n{}    }} }}\n",
                    quoted(&p.publish),
                    if p.deny_publish.is_empty() {
                        String::new()
                    } else {
                        format!(", deny: [{}]", quoted(&p.deny_publish))
                    },
                    quoted(&p.subscribe),
                    if p.allow_responses {
                        "      allow_responses: true\n"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    out.push_str("  ]\n}\n");
    out
}

/// The markdown table of what each identity may use of the JetStream API in a deployment
/// (no namespace): the operators page's, kept equal to this by the schemas' drift check. Subjects of
/// one kind are folded (`$JS.API.CONSUMER.{CREATE,INFO}.ORDERS.orchestrator`) so a row stays
/// readable; `deny` lists what a wildcard above it does not reach.
pub fn jetstream_table() -> String {
    let scope = Scope::Namespace(Namespace::default());
    let mut out = String::from(
        "| identity | may use (JetStream API, acks and flow control) | refused although a wildcard matches |\n|---|---|---|\n",
    );
    for identity in Identity::ALL {
        let p = identity.permissions(&scope);
        let api: Vec<&String> = p.publish.iter().filter(|s| s.starts_with("$JS.")).collect();
        let deny: Vec<&String> = p.deny_publish.iter().collect();
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            identity.name(),
            fold(&api),
            if deny.is_empty() {
                "".to_owned()
            } else {
                fold(&deny)
            }
        ));
    }
    out
}

/// Subjects that differ in one token only, folded into `{a,b}`, each in backticks.
fn fold(subjects: &[&String]) -> String {
    // Group by every token but one, trying each position, and keep the fold that joins most.
    let mut groups: Vec<(Vec<String>, usize, Vec<String>)> = Vec::new();
    'next: for subject in subjects {
        let tokens: Vec<String> = subject.split('.').map(str::to_owned).collect();
        for (shape, at, values) in &mut groups {
            if shape.len() == tokens.len()
                && shape
                    .iter()
                    .zip(&tokens)
                    .enumerate()
                    .all(|(i, (a, b))| i == *at || a == b)
            {
                values.push(tokens[*at].clone());
                continue 'next;
            }
        }
        // A new group folds on the token that varies among its neighbours: the operation
        // for consumers (`CREATE`, `INFO`, …), else the last.
        let at = tokens
            .iter()
            .position(|t| t == "CONSUMER")
            .map_or(tokens.len() - 1, |i| i + 1)
            .min(tokens.len() - 1);
        groups.push((tokens.clone(), at, vec![tokens[at].clone()]));
    }
    groups
        .into_iter()
        .map(|(mut shape, at, values)| {
            shape[at] = if values.len() == 1 {
                values[0].clone()
            } else {
                format!("{{{}}}", values.join(","))
            };
            format!("`{}`", shape.join("."))
        })
        .collect::<Vec<_>>()
        .join("<br>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Scope {
        Scope::Namespace(Namespace::default())
    }

    #[test]
    fn every_service_of_the_topology_that_talks_to_nats_has_an_identity_and_no_other() {
        for service in topology::SERVICES {
            if let Some(name) = service.nats {
                assert!(
                    Identity::ALL.iter().any(|i| i.name() == name),
                    "{} has no messaging::Identity: add one, with its permissions",
                    service.name
                );
            }
        }
        for identity in Identity::ALL {
            assert!(
                identity == Identity::Analyst || topology::with_identity(identity.name()).is_some()
            );
        }
    }

    #[test]
    fn only_a_contexts_own_service_publishes_its_events_or_takes_its_commands() {
        for identity in Identity::ALL {
            let p = identity.permissions(&deployment());
            for context in BoundedContext::ALL {
                let events = format!("events.{}.>", context.token());
                let commands = format!("cmd.{}.>", context.token());
                assert_eq!(
                    p.publish.contains(&events),
                    Identity::of_context(context) == identity,
                    "{identity:?} publishing {events}"
                );
                assert_eq!(
                    p.subscribe.contains(&commands),
                    context != BoundedContext::Sagas && Identity::of_context(context) == identity,
                    "{identity:?} taking {commands}"
                );
                assert_eq!(
                    p.publish.contains(&commands),
                    identity == Identity::Orchestrator && context != BoundedContext::Sagas,
                    "{identity:?} sending {commands}"
                );
            }
            assert!(
                p.publish.iter().chain(&p.subscribe).all(|s| s != ">"
                    && !s.starts_with("_INBOX.")
                    && !s.contains("PURGE")
                    && !s.contains("STREAM.DELETE")
                    && !s.contains("STREAM.UPDATE")),
                "{identity:?}: {p:?}"
            );
        }
    }

    #[test]
    fn only_payments_asks_orders_to_open_a_sealed_token() {
        for identity in Identity::ALL {
            let p = identity.permissions(&deployment());
            let open = "keys.orders.open".to_owned();
            assert_eq!(
                p.publish.contains(&open),
                identity == Identity::Payments,
                "{identity:?}"
            );
            assert_eq!(
                p.subscribe.contains(&open),
                identity == Identity::Orders,
                "{identity:?}"
            );
        }
    }

    #[test]
    fn in_any_namespace_the_contexts_stay_apart() {
        let p = Identity::Inventory.permissions(&Scope::AnyNamespace);
        assert!(p.publish.contains(&"*.events.inventory.>".to_owned()));
        assert!(!p.publish.iter().any(|s| s.contains("events.orders")));
        assert!(p.subscribe.contains(&"*.cmd.inventory.>".to_owned()));
    }

    #[test]
    fn a_durable_is_reachable_by_its_owner_only() {
        for durable in durables::all() {
            let stream = deployment().stream(durable.context);
            let mine = [
                format!("$JS.API.CONSUMER.CREATE.{stream}.{}.>", durable.name),
                format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{}", durable.name),
                format!("$JS.API.CONSUMER.DELETE.{stream}.{}", durable.name),
                format!("$JS.ACK.{stream}.{}.>", durable.name),
            ];
            for identity in Identity::ALL {
                let p = identity.permissions(&deployment());
                for subject in &mine {
                    let granted = p.publish.contains(subject);
                    assert_eq!(
                        granted,
                        identity == durable.owner,
                        "{identity:?}: {subject}"
                    );
                }
                // Readers hold wildcards over consumer names: the durable's are denied.
                if matches!(identity, Identity::Analyst | Identity::Gateway)
                    && p.publish
                        .iter()
                        .any(|s| s.contains(&format!(".{stream}.*")))
                {
                    let denied = format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{}", durable.name);
                    assert!(p.deny_publish.contains(&denied), "{identity:?}: {denied}");
                }
            }
        }
    }

    #[test]
    fn no_reader_may_name_a_consumer_in_the_request_body() {
        for identity in Identity::ALL {
            let p = identity.permissions(&deployment());
            for context in BoundedContext::ALL {
                let legacy = format!("$JS.API.CONSUMER.CREATE.{}", context.stream_base());
                assert!(!p.publish.contains(&legacy), "{identity:?}: {legacy}");
                assert!(
                    !p.publish
                        .iter()
                        .any(|s| s.starts_with("$JS.API.CONSUMER.DURABLE")),
                    "{identity:?}"
                );
            }
        }
    }

    #[test]
    fn the_table_names_every_identity_and_each_durable_under_its_owner() {
        let table = jetstream_table();
        for identity in Identity::ALL {
            assert!(
                table.contains(&format!("| {} |", identity.name())),
                "{table}"
            );
        }
        let orchestrator = table
            .lines()
            .find(|l| l.starts_with("| orchestrator |"))
            .unwrap();
        assert!(
            orchestrator.contains(".ORDERS.orchestrator"),
            "{orchestrator}"
        );
        assert!(!orchestrator.contains("orders_view"), "{orchestrator}");
    }

    #[test]
    fn the_configuration_names_every_user() {
        let users = [
            User {
                identity: None,
                login: Login::Nkey("UADMIN".into()),
            },
            User {
                identity: Some(Identity::Orders),
                login: Login::Nkey("UORDERS".into()),
            },
        ];
        let config = authorization(&users, &deployment());
        assert!(config.contains(r#"{ nkey: "UADMIN" }"#), "{config}");
        assert!(config.contains(r#""events.orders.>""#), "{config}");
        assert!(config.contains("allow_responses: true"), "{config}");
        assert!(!config.contains("no_auth_user"));
    }
}
