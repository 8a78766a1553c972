//! Who connects to NATS, and what each may publish and subscribe: the permissions that make a
//! forged event, a forged reply or a stolen command impossible, written once as code. The
//! server configuration (`cargo xtask up`, the tests, compose) is generated from it.
//!
//! Invariant: only a context's relay publishes `events.<context>.>`; only a context's service
//! subscribes to `cmd.<context>.>`, and it may publish to a reply subject only to answer a
//! request it received (`allow_responses`); only the orchestrator sends saga commands; nobody
//! but the administrator may delete or purge a stream. Anonymous connections are refused.

use crate::{BoundedContext, Namespace};

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

    pub fn name(self) -> &'static str {
        match self {
            Self::Orders => "orders",
            Self::Inventory => "inventory",
            Self::Payments => "payments",
            Self::Orchestrator => "orchestrator",
            Self::Projections => "projections",
            Self::Gateway => "gateway",
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
            }
            Self::Orchestrator => {
                p.owns(scope, Sagas);
                for context in [Orders, Inventory, Payments] {
                    p.sends(scope, context);
                    p.consumes(scope, context);
                }
            }
            Self::Projections => {
                for context in BoundedContext::ALL {
                    p.consumes(scope, context);
                    // A rebuild's cut-over deletes the live durable consumer, which the
                    // worker then re-creates from the new checkpoint.
                    p.publish.push(format!(
                        "$JS.API.CONSUMER.DELETE.{}.*",
                        scope.stream(context)
                    ));
                }
            }
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
        p.publish.sort();
        p.publish.dedup();
        p.subscribe.sort();
        p.subscribe.dedup();
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

    /// Reads the context's stream with durable pull consumers, acknowledging what it took
    /// (deleting none: another reader's consumer is not its to remove).
    fn consumes(&mut self, scope: &Scope, context: BoundedContext) {
        let stream = scope.stream(context);
        self.publish.extend([
            format!("$JS.API.STREAM.INFO.{stream}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
            format!("$JS.API.CONSUMER.INFO.{stream}.*"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
            format!("$JS.ACK.{stream}.>"),
        ]);
    }

    /// Reads the context's stream with ordered (ephemeral) consumers and single lookups.
    fn reads(&mut self, scope: &Scope, context: BoundedContext) {
        let stream = scope.stream(context);
        self.publish.extend([
            format!("$JS.API.STREAM.INFO.{stream}"),
            format!("$JS.API.STREAM.MSG.GET.{stream}"),
            format!("$JS.API.DIRECT.GET.{stream}"),
            format!("$JS.API.DIRECT.GET.{stream}.>"),
            format!("$JS.API.CONSUMER.CREATE.{stream}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
            format!("$JS.API.CONSUMER.INFO.{stream}.*"),
            format!("$JS.API.CONSUMER.DELETE.{stream}.*"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
            // Push consumers (other clients' ordered consumers) answer flow control.
            format!("$JS.FC.{stream}.>"),
        ]);
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
                    "    {{ {login}, permissions: {{\n      publish: {{ allow: [{}] }}\n      subscribe: {{ allow: [{}] }}\n{}    }} }}\n",
                    quoted(&p.publish),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Scope {
        Scope::Namespace(Namespace::default())
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
    fn in_any_namespace_the_contexts_stay_apart() {
        let p = Identity::Inventory.permissions(&Scope::AnyNamespace);
        assert!(p.publish.contains(&"*.events.inventory.>".to_owned()));
        assert!(!p.publish.iter().any(|s| s.contains("events.orders")));
        assert!(p.subscribe.contains(&"*.cmd.inventory.>".to_owned()));
    }

    #[test]
    fn only_the_projections_delete_durable_consumers_of_others_streams() {
        let deletes = |identity: Identity| {
            identity
                .permissions(&deployment())
                .publish
                .iter()
                .any(|s| s.starts_with("$JS.API.CONSUMER.DELETE.ORDERS"))
        };
        assert!(deletes(Identity::Projections), "a rebuild's cut-over");
        assert!(!deletes(Identity::Orchestrator));
        assert!(!deletes(Identity::Orders));
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
