//! The part of a nats-server configuration that joins a server to a JetStream cluster: its
//! name and its routes to the other nodes, written the same way by `cargo xtask up --cluster`
//! and by the tests' cluster.

/// One node of a local cluster: the port it listens on for the other nodes' routes.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub name: String,
    pub route_port: u16,
}

/// The `server_name` and `cluster` block of `nodes[me]`: it listens for routes on loopback,
/// admits only routes that log in with `route_password`, and dials every other node. The
/// client side (identities, TLS) is the same on every node and is written apart.
pub fn cluster_block(
    cluster: &str,
    nodes: &[ClusterNode],
    me: usize,
    route_password: &str,
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
           authorization {{ user: \"route\", password: \"{route_password}\" }}\n  \
           routes: [\n{routes}\n  ]\n\
         }}\n",
        name = nodes[me].name,
        port = nodes[me].route_port,
    )
}

#[cfg(test)]
mod tests {
    use super::{cluster_block, ClusterNode};

    #[test]
    fn a_node_routes_to_every_other_node() {
        let nodes: Vec<ClusterNode> = (0..3)
            .map(|i| ClusterNode {
                name: format!("n{i}"),
                route_port: 6000 + i,
            })
            .collect();
        let block = cluster_block("c", &nodes, 1, "pw");
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
        assert!(!block.contains("127.0.0.1:6001\"\n    "), "{block}");
        assert!(!block.contains("@127.0.0.1:6001"), "{block}");
    }
}
