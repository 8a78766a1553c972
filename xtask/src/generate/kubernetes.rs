//! Each service's Kubernetes manifest (`deploy/kubernetes/base/<service>.yaml`: its
//! ConfigMap, Deployment, Service, PodDisruptionBudget and autoscaler), the base's
//! kustomization and its Postgres cluster, from the topology. The shared settings stay
//! hand-written beside them.

use std::fmt::Write as _;

use topology::{Database, Need, Scaling, Service};

/// Where a variable's value comes from: the service's ConfigMap, the shared one, or a Secret.
enum From {
    Own,
    Shared,
    Secret(&'static str),
    /// A Secret the operator makes when they want what it enables (`<name>-<suffix>`).
    OptionalSecret(&'static str),
}

/// A mounted Secret: volume name, mount path, the Secret's name suffix, its keys, and why.
struct Mount {
    volume: &'static str,
    path: &'static str,
    secret: String,
    keys: Vec<String>,
    why: String,
}

/// `deploy/kubernetes/base/kustomization.yaml`: the hand-written parts, then every service.
pub fn kustomization(services: &[Service], generated: &str) -> String {
    let mut out = format!(
        "# {generated}\n\
         # The streamshop services, their Postgres cluster and their autoscalers, without a namespace\n\
         # or environment: overlays/local and overlays/production add those. NATS comes from the\n\
         # official Helm chart (../nats/values.yaml); the Secrets are made outside (../README.md).\n\
         #\n\
         # Only these kustomize features are used here and in the overlays (deploy/check.py renders\n\
         # them without kustomize): resources, namespace, labels (metadata only), images, replicas,\n\
         # and patches given by path (strategic merge for built-in kinds, merge for custom resources).\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         resources:\n  - shared-config.yaml\n  - postgres.yaml\n"
    );
    for s in services {
        let _ = writeln!(out, "  - {}.yaml", s.name);
    }
    out
}

/// One service's manifest.
pub fn manifest(s: &Service, generated: &str) -> String {
    let name = s.name;
    let (port_name, scheme) = if s.serves_tls() {
        ("https", "HTTPS")
    } else {
        ("http", "HTTP")
    };
    // The service's own settings (its ConfigMap), with a comment where one helps.
    let mut own: Vec<(&str, String, &str)> = vec![("HTTP_ADDR", format!("0.0.0.0:{}", s.port), "")];
    if let Some(metrics) = s.metrics_port {
        own.push((
            "METRICS_ADDR",
            format!("0.0.0.0:{metrics}"),
            "Its metrics, apart from the public side: HTTPS to the scraper's certificate, on a port\n  # the Ingress never routes.",
        ));
    }
    if s.needs(Need::Oidc) {
        own.push((
            "OIDC_ISSUER_URL",
            "http://oidc:8090".into(),
            "The OpenID provider; the local overlay runs the local one, production names yours.",
        ));
    }
    for called in s.calls.iter().filter_map(|c| topology::service(c)) {
        if let Some(setting) = called.url_setting {
            own.push((
                setting,
                format!("{}://{}:{}", called.scheme(), called.name, called.port),
                "",
            ));
        }
    }
    if s.needs(Need::DataKeys) {
        own.push((
            "DATA_KEYS_MASTER_KEY_FILE",
            "/run/secrets/keys/master.key".into(),
            "",
        ));
    }
    if s.needs(Need::Stripe) {
        own.push((
            "PAYMENT_PROVIDER",
            "stripe".into(),
            "Payments go to Stripe's API; a test-mode key (sk_test_) in payments-stripe keeps them\n  # in test mode.",
        ));
        own.push(("STRIPE_API_BASE", "https://api.stripe.com".into(), ""));
        own.push((
            "STRIPE_SECRET_KEY_FILE",
            "/run/secrets/stripe/secret-key".into(),
            "",
        ));
    }

    // Every variable of the container, in compose's order.
    let mut env: Vec<(&str, From)> = vec![("HTTP_ADDR", From::Own)];
    if s.metrics_port.is_some() {
        env.push(("METRICS_ADDR", From::Own));
    }
    env.push(("TLS_DIR", From::Shared));
    if let Some(a) = s.database {
        env.push(("DATABASE_URL", From::Secret("database")));
        if a.migrates_as.is_some() {
            env.push(("DATABASE_OWNER_URL", From::Secret("database")));
        }
    }
    if s.nats.is_some() {
        for v in ["NATS_URL", "NATS_CREDENTIALS_DIR", "NATS_STREAM_REPLICAS"] {
            env.push((v, From::Shared));
        }
    }
    for (k, _, _) in &own[1..] {
        if *k != "METRICS_ADDR" {
            env.push((k, From::Own));
        }
    }
    if s.needs(Need::Smtp) {
        // Order emails: the SMTP server's URL holds its password, so it is a Secret; without
        // one the service sends no emails (webhooks go on).
        env.push(("SMTP_URL", From::OptionalSecret("smtp")));
    }
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", From::Shared));

    // The Secrets mounted as files, each the service's alone.
    let mut mounts = vec![Mount {
        volume: "tls",
        path: "/run/tls",
        secret: format!("{name}-tls"),
        keys: vec![
            "ca.pem".into(),
            format!("{}.crt", s.certificate),
            format!("{}.key", s.certificate),
        ],
        why: "the local CA and its own certificate and key, and no other".into(),
    }];
    if let Some(identity) = s.identity() {
        mounts.push(Mount {
            volume: "nats-credentials",
            path: "/run/secrets/nats",
            secret: format!("{name}-nats"),
            keys: vec![format!("{identity}.nk")],
            why: "its own NATS key, and no other".into(),
        });
    }
    // A secret file in this service alone: (need, volume, path, key, what it is).
    for (need, volume, path, key, what) in [
        (
            Need::DataKeys,
            "data-keys",
            "/run/secrets/keys",
            "master.key",
            "the master key of the customers' data keys",
        ),
        (
            Need::Stripe,
            "stripe",
            "/run/secrets/stripe",
            "secret-key",
            "the Stripe secret key",
        ),
    ] {
        if s.needs(need) {
            mounts.push(Mount {
                volume,
                path,
                secret: format!("{name}-{volume}"),
                keys: vec![key.into()],
                why: format!("{what}, in {name} alone"),
            });
        }
    }

    let mut o = String::new();
    let _ = writeln!(o, "# {generated}");
    let _ = writeln!(o, "# {name}: {}", s.about);
    let _ = write!(
        o,
        "#\n\
         # Environment: the same variable names as its service in docker-compose.yml (deploy/check.py\n\
         # compares them). Plain settings come from ConfigMaps ({name}-config below, and streamshop-shared\n\
         # in shared-config.yaml); what holds a password, key or seed comes from Secrets made outside\n\
         # these manifests (deploy/kubernetes/README.md, make-secrets.sh, i.e.\n\
         # cargo xtask k8s-secrets):\n"
    );
    if let Some(a) = s.database {
        let keys = if a.migrates_as.is_some() {
            "DATABASE_URL, DATABASE_OWNER_URL"
        } else {
            "DATABASE_URL"
        };
        let _ = writeln!(o, "#   Secret {name}-database: {keys}");
    }
    for m in &mounts {
        let _ = writeln!(
            o,
            "#   Secret {}: {}, mounted in {}",
            m.secret,
            m.keys.join(", "),
            m.path
        );
    }
    let labels = |o: &mut String, indent: &str| {
        let _ = write!(
            o,
            "{indent}app.kubernetes.io/name: {name}\n{indent}app.kubernetes.io/component: {}\n",
            s.component
        );
    };

    // ConfigMap.
    let _ = write!(
        o,
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}-config\n  labels:\n"
    );
    labels(&mut o, "    ");
    o.push_str("data:\n");
    for (k, v, why) in &own {
        if !why.is_empty() {
            let _ = writeln!(o, "  # {why}");
        }
        let _ = writeln!(o, "  {k}: \"{v}\"");
    }

    // Deployment.
    let _ = write!(
        o,
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  labels:\n"
    );
    labels(&mut o, "    ");
    o.push_str("spec:\n");
    match s.scaling {
        Scaling::Fixed(n) => {
            let _ = writeln!(o, "  replicas: {n}");
        }
        _ => o.push_str("  # No replicas: its autoscaler (below) owns the count.\n"),
    }
    let _ = write!(
        o,
        "  revisionHistoryLimit: 5\n\
         \x20 selector:\n    matchLabels:\n      app.kubernetes.io/name: {name}\n\
         \x20 # One new pod ready before an old one goes: a rollout never lowers capacity.\n\
         \x20 strategy:\n    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: 1\n      maxUnavailable: 0\n\
         \x20 template:\n    metadata:\n      labels:\n"
    );
    labels(&mut o, "        ");
    let _ = write!(
        o,
        "    spec:\n\
         \x20     automountServiceAccountToken: false\n\
         \x20     # No <SERVICE>_PORT variables from the other Services: the environment is exactly the one below.\n\
         \x20     enableServiceLinks: false\n\
         \x20     # Shutdown path (service_kit::shutdown, service_kit::service::Service::run): SIGTERM stops the\n\
         \x20     # listener, in-flight requests finish (each bounded by HTTP_REQUEST_TIMEOUT_MS, 10 s;\n\
         \x20     # the gateway's by REQUEST_TIMEOUT_MS, 10 s, and its live streams end at once), and every\n\
         \x20     # background task finishes the batch in hand (a relay or projection batch is one\n\
         \x20     # transaction, each statement bounded by DATABASE_STATEMENT_TIMEOUT_MS, 10 s; a saga step by\n\
         \x20     # SAGA_STEP_DEADLINE_MS, 5 s) concurrently with that; then the pool closes. The runtime has\n\
         \x20     # no drain timeout of its own, so: 5 s preStop + at most ~10 s of draining, doubled = 30 s.\n\
         \x20     # A SIGKILL past it loses nothing (outbox and checkpoints are transactional).\n\
         \x20     terminationGracePeriodSeconds: 30\n\
         \x20     securityContext:\n\
         \x20       runAsNonRoot: true\n\
         \x20       # The image's user (Dockerfile: useradd --uid 10001 streamshop).\n\
         \x20       runAsUser: 10001\n\
         \x20       runAsGroup: 10001\n\
         \x20       # Secret volumes are group-readable by this group (defaultMode 0440 below).\n\
         \x20       fsGroup: 10001\n\
         \x20       seccompProfile:\n\
         \x20         type: RuntimeDefault\n\
         \x20     topologySpreadConstraints:\n\
         \x20       - maxSkew: 1\n\
         \x20         topologyKey: kubernetes.io/hostname\n\
         \x20         whenUnsatisfiable: ScheduleAnyway\n\
         \x20         labelSelector:\n\
         \x20           matchLabels:\n\
         \x20             app.kubernetes.io/name: {name}\n\
         \x20     containers:\n\
         \x20       - name: {name}\n\
         \x20         image: streamshop:local\n\
         \x20         # As compose's `command: [\"{name}\"]`: one image, one binary per service.\n\
         \x20         command: [\"{name}\"]\n\
         \x20         ports:\n\
         \x20           - name: {port_name}\n\
         \x20             containerPort: {}\n\
         \x20             protocol: TCP\n",
        s.port
    );
    if let Some(metrics) = s.metrics_port {
        let _ = write!(
            o,
            "            - name: metrics\n              containerPort: {metrics}\n              protocol: TCP\n"
        );
    }
    o.push_str("          env:\n");
    for (var, from) in &env {
        let (kind, source, optional) = match from {
            From::Own => ("configMapKeyRef", format!("{name}-config"), ""),
            From::Shared => ("configMapKeyRef", "streamshop-shared".to_owned(), ""),
            From::Secret(suffix) => ("secretKeyRef", format!("{name}-{suffix}"), ""),
            From::OptionalSecret(suffix) => (
                "secretKeyRef",
                format!("{name}-{suffix}"),
                "                  optional: true\n",
            ),
        };
        let _ = write!(
            o,
            "            - name: {var}\n              valueFrom:\n                {kind}:\n                  name: {source}\n                  key: {var}\n{optional}"
        );
    }
    let probes_note = if s.serves_tls() {
        "Both are open without a client certificate\n          # (the kubelet does not verify the server's certificate)."
    } else {
        "Both are on the public side, plain HTTP."
    };
    let _ = write!(
        o,
        "          # /readyz: its database, NATS and the streams it owns answer; /healthz: the process runs\n\
         \x20         # (it answers while start-up waits for a dependency, so liveness never kills a pod that\n\
         \x20         # waits for Postgres or NATS). {probes_note}\n\
         \x20         readinessProbe:\n\
         \x20           httpGet:\n              path: /readyz\n              port: {port_name}\n              scheme: {scheme}\n\
         \x20           periodSeconds: 5\n            timeoutSeconds: 2\n            failureThreshold: 3\n\
         \x20         livenessProbe:\n\
         \x20           httpGet:\n              path: /healthz\n              port: {port_name}\n              scheme: {scheme}\n\
         \x20           periodSeconds: 10\n            timeoutSeconds: 2\n            failureThreshold: 6\n\
         \x20         lifecycle:\n\
         \x20           # Endpoints drop the pod while it still serves, before SIGTERM closes the listener.\n\
         \x20           preStop:\n              exec:\n                command: [\"sleep\", \"5\"]\n\
         \x20         # Measured by `cargo xtask bench` (docs/benchmark.md, figure 5, \"Resources\"): each\n\
         \x20         # service's peak RSS was 12-60 MB. The request is what a replica uses at ~20 sagas/s; the\n\
         \x20         # limit leaves 4x the largest RSS measured and a full core for bursts. The overlays change both.\n\
         \x20         resources:\n            requests:\n              cpu: 100m\n              memory: 64Mi\n\
         \x20           limits:\n              cpu: \"1\"\n              memory: 256Mi\n\
         \x20         securityContext:\n            runAsNonRoot: true\n            runAsUser: 10001\n\
         \x20           allowPrivilegeEscalation: false\n            readOnlyRootFilesystem: true\n\
         \x20           capabilities:\n              drop: [\"ALL\"]\n\
         \x20           seccompProfile:\n              type: RuntimeDefault\n\
         \x20         volumeMounts:\n"
    );
    for m in &mounts {
        let _ = write!(
            o,
            "            # As compose: {}.\n            - name: {}\n              mountPath: {}\n              readOnly: true\n",
            m.why, m.volume, m.path
        );
    }
    o.push_str(
        "            # The root filesystem is read-only; a scratch /tmp for anything a library writes.\n\
         \x20           - name: tmp\n              mountPath: /tmp\n      volumes:\n",
    );
    for m in &mounts {
        let _ = write!(
            o,
            "        - name: {}\n          secret:\n            secretName: {}\n            defaultMode: 288 # 0440\n            items:\n",
            m.volume, m.secret
        );
        for k in &m.keys {
            let _ = write!(o, "              - key: {k}\n                path: {k}\n");
        }
    }
    o.push_str("        - name: tmp\n          emptyDir:\n            sizeLimit: 16Mi\n");

    // Service.
    let _ = write!(
        o,
        "---\n\
         # The name is compose's host name, which its certificate names (topology/src/lib.rs), so\n\
         # the same URLs work in both.\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  labels:\n    app.kubernetes.io/name: {name}\n\
         spec:\n  selector:\n    app.kubernetes.io/name: {name}\n  ports:\n\
         \x20   - name: {port_name}\n      port: {}\n      targetPort: {port_name}\n      appProtocol: {port_name}\n",
        s.port
    );
    if let Some(metrics) = s.metrics_port {
        let _ = write!(
            o,
            "    # Inside the cluster only: the Ingress routes `{port_name}` alone.\n\
             \x20   - name: metrics\n      port: {metrics}\n      targetPort: metrics\n      appProtocol: https\n"
        );
    }

    // PodDisruptionBudget.
    let _ = write!(
        o,
        "---\n\
         # maxUnavailable rather than minAvailable: a single replica (local) still lets a node drain;\n\
         # with two or more, one always serves.\n\
         apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: {name}\n  labels:\n    app.kubernetes.io/name: {name}\n\
         spec:\n  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: {name}\n"
    );
    autoscaler(&mut o, s);
    o
}

/// `why`, as comment lines of at most about 92 characters.
fn comment(o: &mut String, why: &str) {
    let mut line = String::from("#");
    for word in why.split_whitespace() {
        if line.len() + word.len() > 92 {
            o.push_str(&line);
            o.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    o.push_str(&line);
    o.push('\n');
}

/// The service's autoscaler, if its scaling is not a fixed count.
fn autoscaler(o: &mut String, s: &Service) {
    let name = s.name;
    let target = format!(
        "  scaleTargetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: {name}\n"
    );
    match s.scaling {
        Scaling::Fixed(_) => {}
        Scaling::Cpu { max, why } => {
            o.push_str("---\n");
            comment(o, why);
            let _ = write!(
                o,
                "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: {name}\n  labels:\n    app.kubernetes.io/name: {name}\n\
                 spec:\n{target}  minReplicas: 1\n  maxReplicas: {max}\n  metrics:\n    - type: Resource\n      resource:\n        name: cpu\n        target:\n          type: Utilization\n\
                 \x20         # Of the request (100m): scale out at 70m per pod on average.\n\
                 \x20         averageUtilization: 70\n  behavior:\n    scaleDown:\n      stabilizationWindowSeconds: 300\n"
            );
        }
        Scaling::Lag { max, lag, why } => {
            let identity = s
                .identity()
                .expect("a service scaled on its consumers' lag talks to NATS");
            let durables: Vec<_> = messaging::durables::all()
                .into_iter()
                .filter(|d| d.owner.name() == identity && d.live())
                .collect();
            assert!(
                !durables.is_empty(),
                "{name} is scaled on the lag of durables it has none of"
            );
            o.push_str("---\n");
            let names: Vec<String> = durables
                .iter()
                .map(|d| format!("{} on {}", d.name, d.context.stream_base()))
                .collect();
            comment(
                o,
                &format!(
                    "Scales on the lag of its durable consumers ({}): KEDA takes the largest replica \
                     count any trigger asks for. lagThreshold {lag}: {why}",
                    names.join(", ")
                ),
            );
            comment(
                o,
                "Lag (KEDA's nats-jetstream scaler) = num_pending + num_ack_pending, read from the \
                 NATS monitoring endpoint of the consumer's leader: the headless Service of the NATS \
                 chart (release `nats` in namespace `streamshop`), whose pods answer as \
                 <pod>.nats-headless...; the account is the global one ($G): the server has users, \
                 no accounts.",
            );
            let _ = write!(
                o,
                "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata:\n  name: {name}\n  labels:\n    app.kubernetes.io/name: {name}\n\
                 spec:\n{target}  minReplicaCount: 1\n  maxReplicaCount: {max}\n  pollingInterval: 15\n  cooldownPeriod: 300\n\
                 \x20 advanced:\n    horizontalPodAutoscalerConfig:\n      behavior:\n        scaleDown:\n          stabilizationWindowSeconds: 300\n\
                 \x20 triggers:\n"
            );
            for d in durables {
                let _ = write!(
                    o,
                    "    - type: nats-jetstream\n      metadata:\n\
                     \x20       natsServerMonitoringEndpoint: \"nats-headless.streamshop.svc.cluster.local:8222\"\n\
                     \x20       account: \"$G\"\n        stream: {}\n        consumer: {}\n        lagThreshold: \"{lag}\"\n        useHttps: \"false\"\n",
                    d.context.stream_base(),
                    d.name
                );
            }
        }
    }
}

/// `base/postgres.yaml`: the CloudNativePG Cluster of `template` with every database, role and
/// grant of the topology. The application database CloudNativePG makes at initdb is the one
/// whose owner runs its service.
pub fn postgres(template: &str, databases: &[Database], generated: &str) -> String {
    let app = databases
        .iter()
        .find(|d| d.runtime.is_none())
        .expect("a database whose owner runs its service");
    let item = |indent: &str, sql: String| format!("{indent}- {sql}\n");
    let mut post_init = String::new();
    for role in databases.iter().flat_map(|d| d.roles()) {
        if role != app.owner {
            post_init += &item("        ", format!("CREATE ROLE {role} LOGIN"));
        }
    }
    post_init += &item(
        "        ",
        "REVOKE CONNECT ON DATABASE postgres, template1 FROM PUBLIC".into(),
    );
    let mut application = String::new();
    for reader in app.runtime.iter().chain(&app.reader) {
        application += &item(
            "        ",
            format!("GRANT USAGE ON SCHEMA public TO {reader}"),
        );
    }
    if let Some(reader) = app.reader {
        application +=
            "        # A rebuild creates tables elsewhere and then moves them into public.\n";
        application += &item(
            "        ",
            format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {} GRANT SELECT ON TABLES TO {reader}",
                app.owner
            ),
        );
    }
    for d in databases.iter().filter(|d| d.name != app.name) {
        application += &item(
            "        ",
            format!("CREATE DATABASE {} OWNER {}", d.name, d.owner),
        );
    }
    let names: Vec<&str> = databases.iter().map(|d| d.name).collect();
    application += &item(
        "        ",
        format!("REVOKE ALL ON DATABASE {} FROM PUBLIC", names.join(", ")),
    );
    for d in databases {
        for role in d.runtime.iter().chain(&d.reader) {
            application += &item(
                "        ",
                format!("GRANT CONNECT ON DATABASE {} TO {role}", d.name),
            );
        }
    }
    let mut managed = String::new();
    for role in databases.iter().flat_map(|d| d.roles()) {
        let _ = write!(
            managed,
            "      - name: {role}\n        ensure: present\n        login: true\n        passwordSecret:\n          name: {}\n",
            role_secret(role)
        );
    }
    format!(
        "# {generated}\n{}",
        template
            .replace("@DATABASE_NAMES@", &names.join(", "))
            .replace("@APP_DATABASE@", app.name)
            .replace("@APP_OWNER@", app.owner)
            .replace("@APP_OWNER_SECRET@", &app.owner.replace('_', "-"))
            .replace("@POST_INIT_SQL@\n", &post_init)
            .replace("@APPLICATION_SQL@\n", &application)
            .replace("@MANAGED_ROLES@\n", &managed)
    )
}

/// The Secret holding a Postgres role's password (`cargo xtask k8s-secrets` makes it).
pub fn role_secret(role: &str) -> String {
    format!("pg-role-{}", role.replace('_', "-"))
}
