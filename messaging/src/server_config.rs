//! The parts of a nats-server configuration that `cargo xtask` and the tests write alike: the
//! `tls` block (the server's certificate, and the local CA every peer must show one of), and
//! the part that joins a server to a JetStream cluster (its name and its routes).

/// One node of a local cluster: the port it listens on for the other nodes' routes.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub name: String,
    pub route_port: u16,
}

/// The `tls` block of a server whose certificates are in `dir` (as the server sees it):
/// TLS required, and every peer must show a certificate of the local CA besides its login.
/// `indent` is put before every line, so the block nests in a `cluster` block.
pub fn tls_block(dir: &str, indent: &str) -> String {
    [
        "tls {".to_owned(),
        format!("  cert_file: \"{dir}/nats.crt\""),
        format!("  key_file: \"{dir}/nats.key\""),
        format!("  ca_file: \"{dir}/{}\"", service_kit::tls::CA_FILE),
        "  verify: true".to_owned(),
        "  timeout: 5".to_owned(),
        "}".to_owned(),
    ]
    .iter()
    .map(|line| format!("{indent}{line}\n"))
    .collect()
}

/// The `server_name` and `cluster` block of `nodes[me]`: it listens for routes on loopback,
/// admits only routes that log in with `route_password` and show a certificate of the local
/// CA (in `tls_dir`, the server's own certificate doubling as its route certificate), and
/// dials every other node. The client side (identities, TLS) is the same on every node and is
/// written apart.
pub fn cluster_block(
    cluster: &str,
    nodes: &[ClusterNode],
    me: usize,
    route_password: &str,
    tls_dir: &str,
) -> String {
    let routes = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != me)
        .map(|(_, n)| {
            format!(
                "    \"nats-route://route:{route_password}@127.0.0.1:{}\"",
                n.route_port
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        "server_name: \"{name}\"\n\
         cluster {{\n  \
           name: \"{cluster}\"\n  \
           listen: \"127.0.0.1:{port}\"\n  \
           authorization {{ user: \"route\", password: \"{route_password}\" }}\n\
           {tls}  \
           routes: [\n{routes}\n  ]\n\
         }}\n",
        name = nodes[me].name,
        port = nodes[me].route_port,
        tls = tls_block(tls_dir, "  "),
    )
}

#[cfg(test)]
mod tests {
    use super::{cluster_block, tls_block, ClusterNode};

    #[test]
    fn a_node_routes_to_every_other_node_over_mutual_tls() {
        let nodes: Vec<ClusterNode> = (0..3)
            .map(|i| ClusterNode {
                name: format!("n{i}"),
                route_port: 6000 + i,
            })
            .collect();
        let block = cluster_block("c", &nodes, 1, "pw", "/certs");
        assert!(block.starts_with("server_name: \"n1\"\n"), "{block}");
        assert!(block.contains("listen: \"127.0.0.1:6001\""), "{block}");
        assert!(
            block.contains("nats-route://route:pw@127.0.0.1:6000"),
            "{block}"
        );
        assert!(
            block.contains("nats-route://route:pw@127.0.0.1:6002"),
            "{block}"
        );
        assert!(!block.contains("@127.0.0.1:6001"), "{block}");
        assert!(block.contains(&tls_block("/certs", "  ")), "{block}");
        assert!(block.contains("    verify: true\n"), "{block}");
    }

    #[test]
    fn the_tls_block_requires_a_certificate_of_the_local_ca() {
        let block = tls_block("/d", "");
        assert!(block.starts_with("tls {\n"), "{block}");
        assert!(block.contains("  ca_file: \"/d/ca.pem\"\n"), "{block}");
        assert!(block.contains("  verify: true\n"), "{block}");
        assert!(block.ends_with("}\n"), "{block}");
    }
}
