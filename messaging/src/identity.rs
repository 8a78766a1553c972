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

/// Someone who connects to NATS: a service of the topology, by its identity's name, or the
/// analysts. The constants are the services the code itself talks as; [`Identity::all`] is
/// every one, read from the topology, so a service added there has an identity, and its
/// permissions are what its `topology::Nats` declares.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity(&'static str);

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The identity of a service of the topology that talks to NATS.
const fn of(service: &topology::Service) -> Identity {
    match service.nats {
        Some(nats) => Identity(nats.identity),
        None => panic!("the service does not talk to NATS"),
    }
}

impl Identity {
    pub const ORDERS: Self = of(&topology::ORDERS);
    pub const INVENTORY: Self = of(&topology::INVENTORY);
    pub const PAYMENTS: Self = of(&topology::PAYMENTS);
    pub const ORCHESTRATOR: Self = of(&topology::ORCHESTRATOR);
    pub const PROJECTIONS: Self = of(&topology::PROJECTIONS);
    pub const NOTIFICATIONS: Self = of(&topology::NOTIFICATIONS);
    pub const GATEWAY: Self = of(&topology::GATEWAY);
    /// Reads the streams and nothing else: analysts' tools and the `events` CLI. It logs in
    /// with a user and password (in the URL), which every NATS client library supports.
    pub const ANALYST: Self = Self("analyst");

    /// Every identity: each service of the topology that talks to NATS, then the analysts.
    pub fn all() -> Vec<Self> {
        topology::SERVICES
            .iter()
            .filter_map(topology::Service::identity)
            .map(Self)
            .chain([Self::ANALYST])
            .collect()
    }

    /// The identity's name: a service's is the topology's (`topology::Nats::identity`).
    pub fn name(self) -> &'static str {
        self.0
    }

    /// The identity whose relay publishes the context's events (and creates its stream).
    pub fn of_context(context: BoundedContext) -> Self {
        topology::SERVICES
            .iter()
            .filter_map(|s| s.nats)
            .find(|n| n.owns == Some(context.token()))
            .map(|n| Self(n.identity))
            .unwrap_or_else(|| panic!("no service of the topology owns {context}"))
    }

    /// The prefix of this identity's reply subjects: only it may subscribe there, so nobody
    /// else reads the answers to its requests.
    pub fn inbox_prefix(self) -> String {
        format!("_INBOX_{}", self.name())
    }

    /// What this identity may do in `scope`: what its service's declaration says, or for the
    /// analysts, read every stream.
    pub fn permissions(self, scope: &Scope) -> Permissions {
        if let Some(declared) = topology::with_identity(self.0).and_then(|s| s.nats) {
            return Permissions::declared(&declared, scope);
        }
        assert_eq!(self, Self::ANALYST, "only the analysts are not a service");
        let mut p = Permissions::inbox(self.0);
        p.publish.extend([
            "$JS.API.STREAM.NAMES".to_owned(),
            "$JS.API.STREAM.LIST".to_owned(),
        ]);
        for context in BoundedContext::ALL {
            p.reads(scope, context);
        }
        p.finish(self.0, scope)
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
    /// What a service's declaration in the topology allows in `scope` (a service the code
    /// does not know yet, such as one a test adds to the topology, included).
    pub fn declared(declared: &topology::Nats, scope: &Scope) -> Self {
        let context = |token: &str| -> BoundedContext {
            token
                .parse()
                .unwrap_or_else(|e| panic!("{} in the topology: {e}", declared.identity))
        };
        let mut p = Self::inbox(declared.identity);
        if let Some(owned) = declared.owns {
            p.owns(scope, context(owned));
        }
        if let Some(served) = declared.serves {
            p.serves(scope, context(served));
        }
        for sent in declared.sends {
            p.sends(scope, context(sent));
        }
        for read in declared.reads {
            p.reads(scope, context(read));
        }
        for subject in declared.answers {
            p.subscribe.extend(scope.subjects(subject));
            p.allow_responses = true;
        }
        for subject in declared.asks {
            p.publish.extend(scope.subjects(subject));
        }
        p.finish(declared.identity, scope)
    }

    /// What everyone may: ask the server for JetStream's limits, and read its own replies.
    fn inbox(identity: &str) -> Self {
        Self {
            publish: vec!["$JS.API.INFO".to_owned()],
            deny_publish: Vec::new(),
            subscribe: vec![format!("_INBOX_{identity}.>")],
            allow_responses: false,
        }
    }

    /// Adds the durable consumers `identity` owns, each its owner's alone: created, read,
    /// acknowledged, restored (deleted and made again) only under its own name. Then sorts.
    fn finish(mut self, identity: &str, scope: &Scope) -> Self {
        for durable in durables::all()
            .into_iter()
            .filter(|d| d.owner.name() == identity)
        {
            self.consumes(scope, durable.context, &durable.name);
        }
        for list in [
            &mut self.publish,
            &mut self.deny_publish,
            &mut self.subscribe,
        ] {
            list.sort();
            list.dedup();
        }
        self
    }

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

/// A user of the server configuration: its name, what it may do (`None` for the
/// administrator, who may do everything: xtask, the tests' harness, the benchmark's driver)
/// and how it logs in.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub permissions: Option<Permissions>,
    pub login: Login,
}

impl User {
    pub fn administrator(login: Login) -> Self {
        Self {
            name: "administrator".into(),
            permissions: None,
            login,
        }
    }

    /// `identity`, with its permissions in `scope`.
    pub fn of(identity: Identity, scope: &Scope, login: Login) -> Self {
        Self {
            name: identity.name().into(),
            permissions: Some(identity.permissions(scope)),
            login,
        }
    }

    /// A service of the topology by its declaration (one the code may not know yet).
    pub fn declared(declared: &topology::Nats, scope: &Scope, login: Login) -> Self {
        Self {
            name: declared.identity.into(),
            permissions: Some(Permissions::declared(declared, scope)),
            login,
        }
    }
}

/// The users of a server configuration in `scope` for `services` (the topology's, or a
/// test's with one more): the administrator and every service that talks to NATS by their
/// nkeys (`public_key` of a key's name: `admin`, or the identity's), and the analysts by
/// `analyst_password`.
pub fn users<E>(
    services: &[topology::Service],
    scope: &Scope,
    mut public_key: impl FnMut(&str) -> Result<String, E>,
    analyst_password: &str,
) -> Result<Vec<User>, E> {
    let mut users = vec![User::administrator(Login::Nkey(public_key("admin")?))];
    for declared in services.iter().filter_map(|s| s.nats.as_ref()) {
        let login = Login::Nkey(public_key(declared.identity)?);
        users.push(User::declared(declared, scope, login));
    }
    let analysts = Login::Password {
        user: Identity::ANALYST.name().into(),
        password: analyst_password.to_owned(),
    };
    users.push(User::of(Identity::ANALYST, scope, analysts));
    Ok(users)
}

#[derive(Debug, Clone)]
pub enum Login {
    /// An nkey's public key (`U...`): the client proves it holds the seed.
    Nkey(String),
    /// A user and password (the analysts'), which every client library supports.
    Password { user: String, password: String },
}

/// nats-server's `authorization` block for `users`. No `no_auth_user`: a client that does not
/// log in is refused.
pub fn authorization(users: &[User]) -> String {
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
        out.push_str(&format!("    # {}\n", user.name));
        match &user.permissions {
            None => out.push_str(&format!("    {{ {login} }}\n")),
            Some(p) => {
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
    for identity in Identity::all() {
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
    fn every_service_of_the_topology_that_talks_to_nats_is_an_identity_and_no_other() {
        let names: Vec<&str> = Identity::all().into_iter().map(Identity::name).collect();
        let declared: Vec<&str> = topology::SERVICES
            .iter()
            .filter_map(topology::Service::identity)
            .chain(["analyst"])
            .collect();
        assert_eq!(names, declared);
        for identity in Identity::all() {
            // Every declaration names contexts that exist.
            identity.permissions(&deployment());
        }
    }

    #[test]
    fn a_service_declared_with_nothing_but_its_durables_may_only_consume_them() {
        let p = Identity::PROJECTIONS.permissions(&deployment());
        assert_eq!(p.subscribe, ["_INBOX_projections.>"]);
        assert!(!p.allow_responses);
        assert!(
            p.publish
                .iter()
                .all(|s| s.starts_with("$JS.API.") || s.starts_with("$JS.ACK.")),
            "{p:?}"
        );
    }

    #[test]
    fn only_a_contexts_own_service_publishes_its_events_or_takes_its_commands() {
        for identity in Identity::all() {
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
                    identity == Identity::ORCHESTRATOR && context != BoundedContext::Sagas,
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
        for identity in Identity::all() {
            let p = identity.permissions(&deployment());
            let open = "keys.orders.open".to_owned();
            assert_eq!(
                p.publish.contains(&open),
                identity == Identity::PAYMENTS,
                "{identity:?}"
            );
            assert_eq!(
                p.subscribe.contains(&open),
                identity == Identity::ORDERS,
                "{identity:?}"
            );
        }
    }

    #[test]
    fn only_notifications_asks_orders_to_open_a_sealed_email_address() {
        for identity in Identity::all() {
            let p = identity.permissions(&deployment());
            let open = "keys.orders.email".to_owned();
            assert_eq!(
                p.publish.contains(&open),
                identity == Identity::NOTIFICATIONS,
                "{identity:?}"
            );
            assert_eq!(
                p.subscribe.contains(&open),
                identity == Identity::ORDERS,
                "{identity:?}"
            );
        }
    }

    #[test]
    fn in_any_namespace_the_contexts_stay_apart() {
        let p = Identity::INVENTORY.permissions(&Scope::AnyNamespace);
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
            for identity in Identity::all() {
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
                if matches!(identity, Identity::ANALYST | Identity::GATEWAY)
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
        for identity in Identity::all() {
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
        for identity in Identity::all() {
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
        let scratch = topology::Nats {
            sends: &["inventory"],
            ..topology::Nats::nothing("scratch")
        };
        let users = [
            User::administrator(Login::Nkey("UADMIN".into())),
            User::of(
                Identity::ORDERS,
                &deployment(),
                Login::Nkey("UORDERS".into()),
            ),
            User::declared(&scratch, &deployment(), Login::Nkey("USCRATCH".into())),
        ];
        let config = authorization(&users);
        assert!(config.contains(r#"{ nkey: "UADMIN" }"#), "{config}");
        assert!(config.contains(r#""events.orders.>""#), "{config}");
        assert!(config.contains("allow_responses: true"), "{config}");
        assert!(config.contains("# scratch"), "{config}");
        assert!(
            config.contains(r#"allow: ["$JS.API.INFO", "cmd.inventory.>"]"#),
            "{config}"
        );
        assert!(config.contains(r#""_INBOX_scratch.>""#), "{config}");
        assert!(!config.contains("no_auth_user"));
    }
}
