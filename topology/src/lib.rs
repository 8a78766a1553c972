//! The one declaration of streamshop's services: name, port, database and roles, NATS
//! identity and what it may do, certificate, what each calls and waits for, what it needs mounted, and how many
//! replicas it runs. xtask, the test harness, the load generator, the gateway's upstreams and
//! every service's default address read it, and `cargo xtask generate` writes
//! docker-compose.yml, the compose stack's Postgres init script and Prometheus targets from it.
//! Adding a service is one entry in [`SERVICES`] (and [`DATABASES`] if it has its own) plus
//! its crate.
#![forbid(unsafe_code)]

/// A service of the system: one crate, one binary, one host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// Its crate, binary and host name (compose service, Kubernetes Service).
    pub name: &'static str,
    /// One line on what it does, written above it in generated files.
    pub about: &'static str,
    /// The port it serves on: HTTPS inside, or plain HTTP for the public entry.
    pub port: u16,
    /// The database it connects to and as whom.
    pub database: Option<Access>,
    /// Its NATS identity and what that identity may do; `None` when it never talks to NATS.
    pub nats: Option<Nats>,
    /// The name of its certificate of the local CA (`<certificate>.crt`, `.key`).
    pub certificate: &'static str,
    /// The setting through which a caller is told its base URL (`ORDERS_URL`).
    pub url_setting: Option<&'static str>,
    /// The services it calls over HTTPS; it starts after they are ready.
    pub calls: &'static [&'static str],
    /// Further services that must be ready before it starts (streams they create, tables
    /// their migrations make).
    pub after: &'static [&'static str],
    /// What it needs beside Postgres and NATS.
    pub needs: &'static [Need],
    /// A second, internal listener for `/metrics` (the public entry's).
    pub metrics_port: Option<u16>,
    /// The public entry: plain HTTP, published, started last.
    pub public: bool,
    /// Its `app.kubernetes.io/component` label in the Kubernetes manifests.
    pub component: &'static str,
    /// How many replicas the Kubernetes base runs, or which autoscaler decides.
    pub scaling: Scaling,
}

/// How many replicas of a service the Kubernetes base runs (the overlays raise the bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scaling {
    /// This many, always.
    Fixed(u16),
    /// A HorizontalPodAutoscaler on CPU: 1 to `max` replicas, out at 70% of the CPU request.
    /// `why` is written above it.
    Cpu { max: u16, why: &'static str },
    /// KEDA's NATS JetStream scaler on the lag of the durable consumers its identity owns
    /// (`messaging::durables`, rebuilds aside): 1 to `max` replicas, one per `lag` pending
    /// messages. `why` is written above it.
    Lag {
        max: u16,
        lag: u32,
        why: &'static str,
    },
}

/// A service's NATS identity (`messaging::Identity`) and what it may do there, from which
/// `messaging` makes its permissions. Contexts are named by their token (`orders`). Durable
/// consumers are declared in `messaging::durables`, each with its owner's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nats {
    /// Its user, its credentials file and the prefix of its reply subjects (`_INBOX_<it>`).
    pub identity: &'static str,
    /// The context whose events its outbox relay publishes; it creates that stream.
    pub owns: Option<&'static str>,
    /// The context whose commands it serves and answers.
    pub serves: Option<&'static str>,
    /// The contexts it sends commands to.
    pub sends: &'static [&'static str],
    /// The contexts whose streams it reads with consumers of its own naming, never a
    /// durable's (the gateway's live views).
    pub reads: &'static [&'static str],
    /// Other request subjects it answers (`keys.orders.open`).
    pub answers: &'static [&'static str],
    /// Other request subjects it sends (`keys.orders.open`).
    pub asks: &'static [&'static str],
}

impl Nats {
    /// An identity that may do nothing but use its own inbox, to start a declaration from.
    pub const fn nothing(identity: &'static str) -> Self {
        Self {
            identity,
            owns: None,
            serves: None,
            sends: &[],
            reads: &[],
            answers: &[],
            asks: &[],
        }
    }

    /// A context's command service: it owns the context's stream and serves its commands.
    const fn context(identity: &'static str) -> Self {
        Self {
            owns: Some(identity),
            serves: Some(identity),
            ..Self::nothing(identity)
        }
    }
}

/// The subject on which orders opens a customer's sealed payment token for payments.
const OPEN_KEYS: &str = "keys.orders.open";
/// The subject on which orders opens a customer's sealed email address for notifications.
const OPEN_EMAIL: &str = "keys.orders.email";

/// A service's connection to its database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub database: &'static str,
    /// The role it runs as (`DATABASE_URL`).
    pub role: &'static str,
    /// The role it migrates as at start-up (`DATABASE_OWNER_URL`), when not `role`.
    pub migrates_as: Option<&'static str>,
    /// Its connection pool's default size (`DATABASE_MAX_CONNECTIONS`).
    pub pool: u32,
}

/// What a service needs besides Postgres and NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The master key of the customers' data keys (sealing payment tokens and email).
    DataKeys,
    /// The payment provider's API (Stripe; localstripe locally) and its secret key.
    Stripe,
    /// The OpenID provider whose tokens it verifies.
    Oidc,
    /// An SMTP server to send customers' emails through (maildev locally).
    Smtp,
}

/// A database and its roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Database {
    pub name: &'static str,
    /// Owns the tables; its service migrates as it.
    pub owner: &'static str,
    /// The role the service runs as, granted what the schema allows; `None` when the service
    /// runs as the owner.
    pub runtime: Option<&'static str>,
    /// A role that may only read (the query API's, on the read database).
    pub reader: Option<&'static str>,
}

impl Database {
    const fn store(name: &'static str, owner: &'static str, runtime: &'static str) -> Self {
        Self {
            name,
            owner,
            runtime: Some(runtime),
            reader: None,
        }
    }

    /// Every role of the database, the owner first.
    pub fn roles(&self) -> impl Iterator<Item = &'static str> {
        [Some(self.owner), self.runtime, self.reader]
            .into_iter()
            .flatten()
    }
}

const fn store(database: &'static str, owner: &'static str, pool: u32) -> Option<Access> {
    Some(Access {
        database,
        role: database,
        migrates_as: Some(owner),
        pool,
    })
}

pub const ORDERS: Service = Service {
    name: "orders",
    about: "The Order aggregate, its event store and its outbox relay to the ORDERS stream.",
    port: 8081,
    database: store("orders", "orders_owner", 10),
    nats: Some(Nats {
        answers: &[OPEN_KEYS, OPEN_EMAIL],
        ..Nats::context("orders")
    }),
    certificate: "orders",
    url_setting: Some("ORDERS_URL"),
    calls: &[],
    after: &[],
    needs: &[Need::DataKeys],
    metrics_port: None,
    public: false,
    component: "command-service",
    scaling: Scaling::Fixed(1),
};

pub const INVENTORY: Service = Service {
    name: "inventory",
    about: "The Product aggregate (stock and prices), its event store and outbox relay.",
    port: 8082,
    database: store("inventory", "inventory_owner", 10),
    nats: Some(Nats::context("inventory")),
    certificate: "inventory",
    url_setting: Some("INVENTORY_URL"),
    calls: &[],
    after: &[],
    needs: &[],
    metrics_port: None,
    public: false,
    component: "command-service",
    scaling: Scaling::Fixed(1),
};

pub const PAYMENTS: Service = Service {
    name: "payments",
    about: "The Payment aggregate and the payment provider's adapter, with its outbox relay.",
    port: 8083,
    database: store("payments", "payments_owner", 10),
    nats: Some(Nats {
        asks: &[OPEN_KEYS],
        ..Nats::context("payments")
    }),
    certificate: "payments",
    url_setting: Some("PAYMENTS_URL"),
    calls: &[],
    after: &[],
    needs: &[Need::Stripe],
    metrics_port: None,
    public: false,
    component: "command-service",
    scaling: Scaling::Fixed(1),
};

pub const ORCHESTRATOR: Service = Service {
    name: "orchestrator",
    about: "Runs every order's saga over NATS; its readiness asks for its input streams.",
    port: 8084,
    database: store("orchestrator", "orchestrator_owner", 20),
    nats: Some(Nats {
        owns: Some("sagas"),
        sends: &["orders", "inventory", "payments"],
        ..Nats::nothing("orchestrator")
    }),
    certificate: "orchestrator",
    url_setting: Some("ORCHESTRATOR_URL"),
    calls: &[],
    after: &["orders", "inventory", "payments"],
    needs: &[],
    metrics_port: None,
    public: false,
    component: "saga-orchestrator",
    scaling: Scaling::Lag {
        max: 2,
        lag: 100,
        why: "one fetch batch (inputs.rs fetches 100) per replica. Replicas share the \
              consumers and the database; a saga's events are applied under optimistic \
              concurrency, so two replicas never both act on one state. Never 0: it also \
              serves HTTP and runs timers (saga deadlines and recovery).",
    },
};

pub const PROJECTIONS: Service = Service {
    name: "projections",
    about: "Projects the streams into the read models; owns the read database.",
    port: 8085,
    database: Some(Access {
        database: "read",
        role: "projections",
        migrates_as: None,
        pool: 10,
    }),
    nats: Some(Nats::nothing("projections")),
    certificate: "projections",
    url_setting: Some("PROJECTIONS_URL"),
    calls: &[],
    after: &[],
    needs: &[],
    metrics_port: None,
    public: false,
    component: "projection-worker",
    scaling: Scaling::Lag {
        max: 2,
        lag: 500,
        why: "one PROJECTION_BATCH_SIZE per replica. Workers share each consumer; per \
              aggregate the order holds with several running (projections/tests/it/scale.rs). \
              Never 0: it also serves HTTP and runs timers (dead-letter retention).",
    },
};

pub const QUERY_API: Service = Service {
    name: "query-api",
    about: "Serves the read models; no NATS, and it only reads the projections' tables.",
    port: 8080,
    database: Some(Access {
        database: "read",
        role: "query_api",
        migrates_as: None,
        pool: 20,
    }),
    nats: None,
    certificate: "query",
    url_setting: Some("QUERY_URL"),
    calls: &[],
    after: &["projections"],
    needs: &[],
    metrics_port: None,
    public: false,
    component: "query-api",
    scaling: Scaling::Cpu {
        max: 2,
        why: "CPU-bound and stateless: reads are served from Postgres, a replica holds nothing.",
    },
};

pub const NOTIFICATIONS: Service = Service {
    name: "notifications",
    about: "Tells the world what happened: order emails to customers, signed webhooks to partners.",
    port: 8086,
    database: store("notifications", "notifications_owner", 10),
    nats: Some(Nats {
        asks: &[OPEN_EMAIL],
        ..Nats::nothing("notifications")
    }),
    certificate: "notifications",
    url_setting: Some("NOTIFICATIONS_URL"),
    calls: &[],
    after: &["orders"],
    needs: &[Need::Smtp],
    metrics_port: None,
    public: false,
    component: "notifications",
    scaling: Scaling::Lag {
        max: 4,
        lag: 200,
        why: "its work arrives on its consumer: a replica per 200 pending events. Replicas \
              share the consumer (an order's events are recorded in sequence whatever replica \
              reads them) and the deliveries (each claimed by one replica for a lease). \
              Never 0: it also sends what is due and serves HTTP.",
    },
};

pub const GATEWAY: Service = Service {
    name: "gateway",
    about: "The public entry: tokens, ownership, rate limits, live order streams.",
    port: 8000,
    database: None,
    nats: Some(Nats {
        reads: &["orders", "sagas"],
        ..Nats::nothing("gateway")
    }),
    certificate: "gateway",
    url_setting: None,
    calls: &[
        "orders",
        "inventory",
        "payments",
        "orchestrator",
        "projections",
        "query-api",
        "notifications",
    ],
    after: &[],
    needs: &[Need::Oidc],
    metrics_port: Some(9000),
    public: true,
    component: "gateway",
    scaling: Scaling::Cpu {
        max: 2,
        why: "CPU-bound and stateless: every proxied request costs the gateway CPU \
              (docs/benchmark.md, figure 6).",
    },
};

/// Every service, in the order they start: those that create streams first, the public
/// entry last.
pub const SERVICES: &[Service] = &[
    ORDERS,
    INVENTORY,
    PAYMENTS,
    ORCHESTRATOR,
    PROJECTIONS,
    QUERY_API,
    NOTIFICATIONS,
    GATEWAY,
];

/// The databases. An event store's service runs as a role that may append events and never
/// change one; the projections own the read database (a rebuild moves tables, and all of it
/// can be rebuilt from the log), which the query API only reads.
pub const DATABASES: &[Database] = &[
    Database::store("orders", "orders_owner", "orders"),
    Database::store("inventory", "inventory_owner", "inventory"),
    Database::store("payments", "payments_owner", "payments"),
    Database::store("orchestrator", "orchestrator_owner", "orchestrator"),
    Database::store("notifications", "notifications_owner", "notifications"),
    Database {
        name: "read",
        owner: "projections",
        runtime: None,
        reader: Some("query_api"),
    },
];

/// The service named `name`.
pub fn service(name: &str) -> Option<&'static Service> {
    SERVICES.iter().find(|s| s.name == name)
}

/// The service whose NATS identity is `identity`.
pub fn with_identity(identity: &str) -> Option<&'static Service> {
    SERVICES.iter().find(|s| s.identity() == Some(identity))
}

impl Service {
    /// Its NATS identity's name.
    pub fn identity(&self) -> Option<&'static str> {
        self.nats.map(|n| n.identity)
    }

    /// Serves HTTPS with its certificate (every service but the public entry).
    pub fn serves_tls(&self) -> bool {
        !self.public
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.serves_tls() {
            "https"
        } else {
            "http"
        }
    }

    /// Its base URL on this machine, on its own port.
    pub fn local_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.port)
    }

    /// Every service that must be ready before it starts: those it calls, then the others.
    pub fn waits_for(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.calls.iter().chain(self.after).copied()
    }

    pub fn needs(&self, need: Need) -> bool {
        self.needs.contains(&need)
    }

    /// The role it migrates as, its own when it owns the tables.
    pub fn owner_role(&self) -> Option<&'static str> {
        self.database.and_then(|a| a.migrates_as)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_port_identity_and_certificate_is_one_service_s() {
        for (i, a) in SERVICES.iter().enumerate() {
            for b in &SERVICES[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.port, b.port, "{} and {}", a.name, b.name);
                assert_ne!(a.certificate, b.certificate);
                assert!(a.identity().is_none() || a.identity() != b.identity());
                assert!(a.url_setting.is_none() || a.url_setting != b.url_setting);
            }
        }
    }

    #[test]
    fn every_context_sent_to_or_read_has_one_owner_and_every_request_an_answerer() {
        let nats: Vec<Nats> = SERVICES.iter().filter_map(|s| s.nats).collect();
        for n in &nats {
            for context in n.sends.iter().chain(n.reads) {
                let owners = nats.iter().filter(|o| o.owns == Some(context)).count();
                assert_eq!(owners, 1, "{}: {context} has {owners} owners", n.identity);
            }
            for context in n.sends {
                assert!(
                    nats.iter().any(|o| o.serves == Some(context)),
                    "{}: nobody serves {context}'s commands",
                    n.identity
                );
            }
            for subject in n.asks {
                assert!(
                    nats.iter().any(|o| o.answers.contains(subject)),
                    "{}: nobody answers {subject}",
                    n.identity
                );
            }
        }
    }

    #[test]
    fn every_service_waits_only_for_services_that_start_before_it() {
        for (i, s) in SERVICES.iter().enumerate() {
            for other in s.waits_for() {
                let j = SERVICES.iter().position(|t| t.name == other);
                assert!(
                    j.is_some_and(|j| j < i),
                    "{} waits for {other}, which is not started before it",
                    s.name
                );
            }
            for called in s.calls {
                assert!(
                    service(called).is_some_and(|c| c.url_setting.is_some()),
                    "{} calls {called}, which has no URL setting",
                    s.name
                );
            }
        }
        assert!(
            SERVICES.last().unwrap().public,
            "the public entry starts last"
        );
    }

    #[test]
    fn every_database_access_names_a_database_and_one_of_its_roles() {
        for s in SERVICES {
            let Some(access) = s.database else { continue };
            let db = DATABASES
                .iter()
                .find(|d| d.name == access.database)
                .unwrap_or_else(|| panic!("{}: no database {}", s.name, access.database));
            assert!(db.roles().any(|r| r == access.role), "{}", s.name);
            if let Some(owner) = access.migrates_as {
                assert_eq!(owner, db.owner, "{} migrates as the owner", s.name);
            }
        }
        for db in DATABASES {
            assert!(
                SERVICES
                    .iter()
                    .any(|s| s.database.is_some_and(|a| a.database == db.name)),
                "no service uses {}",
                db.name
            );
        }
    }
}
