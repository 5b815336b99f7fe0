//! Revocation reaches every member (issue 9, DESIGN.md section 9), with real processes on
//! loopback: `seednode revoke` signs a new revocation head, members that stay connected get it
//! pushed and drop the revoked peer (its gates close, it leaves their routing tables, its calls
//! are refused), the seednode refuses it too and keeps refusing it after restarts, and a member
//! that was offline during the revocation learns it on its first connection after (pull).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use cordon_tests::{
    Net, Node, approve, cli, hold_for, path_str, revoke_peer, wait_pending, wait_until,
};

const JOIN: Duration = Duration::from_secs(60);
const CONVERGE: Duration = Duration::from_secs(90);
/// The design target is 5 s; tests allow for a loaded CI machine (no timing is asserted).
const DROP: Duration = Duration::from_secs(30);

/// Audit records of `kind` in a data directory's audit log.
fn audit_records(data: &Path, kind: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(data.join("audit.log")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["kind"] == kind)
        .collect()
}

/// `node call --json --network mainnet TO COMMAND...`; a refused call may wait for the node's
/// call timeout (20 s) first.
fn call(from: &Node, to: &Node, command: &[&str]) -> cordon_tests::Run {
    let mut args = vec![
        "call",
        "--data",
        path_str(&from.data),
        "--json",
        "--network",
        "mainnet",
        &to.peer_id,
    ];
    args.extend(command);
    cordon_tests::run("node", &args)
}

fn call_ping(from: &Node, to: &Node) -> cordon_tests::Run {
    call(from, to, &["ping"])
}

fn mainnet_heads(node: &Node) -> Vec<serde_json::Value> {
    let status = node.status();
    status["networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "mainnet")
        .map(|n| n["revocation_heads"].as_array().unwrap().clone())
        .unwrap_or_default()
}

#[test]
fn revoked_member_is_dropped_by_push_refused_after_restarts_and_learned_by_pull() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let mut seed_daemon = net.start_seednode("mainnet");
    let seed = net.network("mainnet").clone();

    let mut nodes: Vec<Node> = ["a", "b", "d", "x"]
        .iter()
        .map(|l| net.start_node(l, &["mainnet"], &[]))
        .collect();
    for n in &nodes[..3] {
        let id = wait_pending(&seed.seed_data, "mainnet", &n.peer_id, JOIN);
        approve(&seed.seed_data, id);
    }
    // x may store records (so the test can see them dropped).
    let id = wait_pending(&seed.seed_data, "mainnet", &nodes[3].peer_id, JOIN);
    cordon_tests::approve_with_right(&seed.seed_data, id, "dht_put");
    for n in &nodes {
        n.wait_state("mainnet", "member", JOIN);
    }
    let x_id = nodes[3].peer_id.clone();
    // Everyone sees x before the revocation.
    for n in &nodes[..3] {
        wait_until(CONVERGE, &format!("{} to route x", n.label), || {
            let peers = n.peers("mainnet");
            if peers.contains(&x_id) {
                Ok(())
            } else {
                Err(format!("{peers:?}"))
            }
        });
    }
    assert!(call_ping(&nodes[3], &nodes[0]).ok, "x can call a before");

    // d goes offline before the revocation.
    nodes[2].kill9();
    // x stores a record on a; b reads it.
    let put = call(
        &nodes[3],
        &nodes[0],
        &["dht_put", "revoked-key", "value-of-x"],
    );
    assert!(put.ok, "x's dht_put: {} {}", put.stdout, put.stderr);
    let got = call(&nodes[1], &nodes[0], &["dht_get", "revoked-key"]);
    assert!(
        got.stdout.contains("value-of-x"),
        "b reads x's record: {}",
        got.stdout
    );

    let revoked = revoke_peer(&seed.seed_data, &x_id);
    assert_eq!(revoked["revoked"].as_array().unwrap().len(), 1, "{revoked}");

    // Push: a and b, connected all along, drop x.
    for n in &nodes[..2] {
        wait_until(DROP, &format!("{} to drop x", n.label), || {
            let peers = n.peers("mainnet");
            if peers.contains(&x_id) {
                Err(format!("x still routed: {peers:?}"))
            } else {
                Ok(())
            }
        });
        let heads = audit_records(&n.data, "revocation_head");
        assert!(
            heads.iter().any(|r| r["reason"] == "applied"
                && r["detail"].as_str().unwrap().starts_with("via push")
                && !r["detail"].as_str().unwrap().contains(": 0 new id")),
            "{} learned the revocation by push: {heads:?}",
            n.label
        );
        assert!(
            mainnet_heads(n)
                .iter()
                .any(|h| h["signer"] == seed.seed_peer_id.as_str()),
            "{} shows the seednode's head in status",
            n.label
        );
    }
    // The seednode dropped it too, and x's calls are refused.
    wait_until(DROP, "the seednode to drop x", || {
        let peers = cordon_tests::node_peers(&seed.seed_data, "mainnet");
        if peers.contains(&x_id) {
            Err(format!("{peers:?}"))
        } else {
            Ok(())
        }
    });
    let refused = call_ping(&nodes[3], &nodes[0]);
    assert!(!refused.ok, "x's call answered: {}", refused.stdout);
    // x's record is gone from every member that was connected to it.
    let got = call(&nodes[1], &nodes[0], &["dht_get", "revoked-key"]);
    assert!(
        !got.stdout.contains("value-of-x"),
        "x's record is still served after its revocation: {}",
        got.stdout
    );

    // Pull: d comes back and drops x on its first connections after.
    nodes[2].restart();
    let d = &nodes[2];
    wait_until(CONVERGE, "d to learn the revocation", || {
        let heads = audit_records(&d.data, "revocation_head");
        let learned = heads.iter().any(|r| {
            r["reason"] == "applied" && !r["detail"].as_str().unwrap().contains(": 0 new id")
        });
        if learned {
            Ok(())
        } else {
            Err(format!("{heads:?}"))
        }
    });
    wait_until(DROP, "d to drop x", || {
        let peers = d.peers("mainnet");
        if peers.contains(&x_id) {
            Err(format!("{peers:?}"))
        } else {
            Ok(())
        }
    });

    // Every process restarts: the revocation holds (persisted heads, loaded verifiers).
    seed_daemon.kill9();
    seed_daemon.restart();
    for n in nodes.iter_mut() {
        n.kill9();
    }
    for n in nodes.iter_mut() {
        n.restart();
    }
    for n in &nodes[..3] {
        wait_until(
            CONVERGE,
            &format!("{} to route the others", n.label),
            || {
                let peers = n.peers("mainnet");
                let others = nodes[..3]
                    .iter()
                    .filter(|o| o.peer_id != n.peer_id)
                    .all(|o| peers.contains(&o.peer_id));
                if others {
                    Ok(())
                } else {
                    Err(format!("{peers:?}"))
                }
            },
        );
    }
    hold_for(Duration::from_secs(5), || {
        for n in &nodes[..3] {
            assert!(
                !n.peers("mainnet").contains(&x_id),
                "{} routes x after restarts",
                n.label
            );
        }
    });
    assert!(
        !call_ping(&nodes[3], &nodes[0]).ok,
        "x's call is refused after restarts"
    );
    let refused = audit_records(&nodes[0].data, "membership_refused");
    assert!(
        refused
            .iter()
            .any(|r| r["peer"] == x_id.as_str() && r["reason"] == "revoked"),
        "a refused x as revoked after the restarts: {refused:?}"
    );
}

#[test]
fn anchor_revokes_a_delegation_offline_and_every_token_under_it_is_refused() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let _seed_daemon = net.start_seednode("mainnet");
    let seed = net.network("mainnet").clone();

    // A second seednode of mainnet, delegated by the same anchor; a joins through it (its
    // descriptor names only that seednode). This is the delegation the anchor revokes, and the
    // seednode is not re-delegated, so a's token cannot be renewed anywhere.
    let second_data = dir.path().join("seed-second");
    let second = cordon_tests::run(
        "seednode",
        &["init", "--data", path_str(&second_data), "--json"],
    )
    .success()
    .json();
    let second_peer = second["peer_id"].as_str().unwrap().to_owned();
    let first = dir.path().join("mainnet-second.delegation");
    cordon_tests::run(
        "seednode",
        &[
            "anchor",
            "delegate",
            "--anchor-key",
            path_str(&seed.anchor_dir.join("anchor.key")),
            "--seednode",
            second["public_key"].as_str().unwrap(),
            "--network",
            "mainnet",
            "--roles",
            "member,operator",
            "--out",
            path_str(&first),
        ],
    )
    .success();
    let second_port = cordon_tests::free_port();
    let _second_daemon = cordon_tests::Daemon::spawn(
        "seed-second",
        "seednode",
        &[
            "run",
            "--data",
            path_str(&second_data),
            "--networks",
            path_str(&net.descriptor),
            "--delegation",
            path_str(&first),
            "--listen",
            &format!("/ip4/127.0.0.1/tcp/{second_port}"),
            "--label",
            "second",
        ],
        &net.logs,
    );
    wait_until(JOIN, "the second seednode to start", || {
        cordon_tests::seednode_ready(&second_data).ok_or("not yet".to_owned())
    });
    let a_descriptor = dir.path().join("a-networks.toml");
    std::fs::write(
        &a_descriptor,
        format!(
            "[[network]]\nname = \"mainnet\"\nanchors = [\"{}\"]\nbootstrap = \
             [\"/ip4/127.0.0.1/tcp/{second_port}/p2p/{second_peer}\"]\njoin = \"approval\"\n\
             private_addresses = true\n",
            seed.anchor_public_key
        ),
    )
    .unwrap();
    let (a_data, a_peer) = net.init_node("a");
    let _a = cordon_tests::Daemon::spawn(
        "a",
        "node",
        &[
            "run",
            "--data",
            path_str(&a_data),
            "--networks",
            path_str(&a_descriptor),
            "--network",
            "mainnet",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--label",
            "a",
        ],
        &net.logs,
    );
    let id = wait_pending(&second_data, "mainnet", &a_peer, JOIN);
    approve(&second_data, id);
    wait_until(
        JOIN,
        "a to become a member",
        || match cordon_tests::node_state(&a_data, "mainnet") {
            Some(s) if s == "member" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // c joins through the first seednode, and reaches a.
    let c = net.start_node("c", &["mainnet"], &[]);
    let id = wait_pending(&seed.seed_data, "mainnet", &c.peer_id, JOIN);
    approve(&seed.seed_data, id);
    c.wait_state("mainnet", "member", JOIN);
    wait_until(CONVERGE, "c to route a", || {
        let peers = c.peers("mainnet");
        if peers.contains(&a_peer) {
            Ok(())
        } else {
            Err(format!("{peers:?}"))
        }
    });

    // Offline, the anchor revokes the second seednode's delegation; the first seednode
    // publishes it.
    let file = dir.path().join("revoke-first.update");
    let written = cordon_tests::run(
        "seednode",
        &[
            "anchor",
            "revoke-delegation",
            "--anchor-key",
            path_str(&seed.anchor_dir.join("anchor.key")),
            "--delegation",
            path_str(&first),
            "--out",
            path_str(&file),
            "--json",
        ],
    )
    .success()
    .json();
    assert_eq!(written["version"], 1, "{written}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the revocation file is owner-only");
    let published = cli(
        "seednode",
        &[
            "publish-revocation",
            path_str(&file),
            "--data",
            path_str(&seed.seed_data),
            "--json",
        ],
    )
    .success()
    .json();
    assert_eq!(published["version"], 1, "{published}");

    // c and the first seednode drop a (issued under the revoked delegation), and a cannot
    // renew: its seednode's delegation is revoked too.
    wait_until(DROP, "c to drop a", || {
        let peers = c.peers("mainnet");
        if peers.contains(&a_peer) {
            Err(format!("{peers:?}"))
        } else {
            Ok(())
        }
    });
    wait_until(DROP, "the seednode to drop a", || {
        let peers = cordon_tests::node_peers(&seed.seed_data, "mainnet");
        if peers.contains(&a_peer) {
            Err(format!("{peers:?}"))
        } else {
            Ok(())
        }
    });
    // a has no way back: nobody can renew a token of a revoked delegation.
    hold_for(Duration::from_secs(5), || {
        assert!(!c.peers("mainnet").contains(&a_peer));
    });
    let anchor_peer = seed
        .anchor_public_key
        .parse::<cordon_membership::PublicKey>()
        .unwrap()
        .peer_id()
        .to_string();
    assert!(
        mainnet_heads(&c)
            .iter()
            .any(|h| h["signer"] == anchor_peer.as_str() && h["version"] == 1),
        "c holds the anchor's head: {:?}",
        mainnet_heads(&c)
    );
    // c itself is unaffected: the first seednode stays in its table.
    assert!(c.peers("mainnet").contains(&seed.seed_peer_id));
    // Publishing the same file again changes nothing.
    let again = cli(
        "seednode",
        &[
            "publish-revocation",
            path_str(&file),
            "--data",
            path_str(&seed.seed_data),
            "--json",
        ],
    );
    assert!(!again.ok, "a repeated head is not newer: {}", again.stdout);
}

#[test]
fn node_with_stale_revocations_admits_no_new_member() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    net.networks[0].descriptor_extra = "max_revocation_staleness = \"3s\"\n".to_owned();
    net.write_descriptor();
    let _seed_daemon = net.start_seednode("mainnet");
    let seed = net.network("mainnet").clone();

    let a = net.start_node("a", &["mainnet"], &[]);
    let id = wait_pending(&seed.seed_data, "mainnet", &a.peer_id, JOIN);
    approve(&seed.seed_data, id);
    a.wait_state("mainnet", "member", JOIN);
    // The seednode signs heads hourly: three seconds after its head, a is stale.
    wait_until(CONVERGE, "a to find its revocations stale", || {
        let stale = audit_records(&a.data, "revocation_head");
        if stale.iter().any(|r| r["reason"] == "stale") {
            Ok(())
        } else {
            Err(format!("{stale:?}"))
        }
    });

    // b joins; the seednode (which signs the network's heads) admits it, a does not.
    let b = net.start_node("b", &["mainnet"], &[]);
    let id = wait_pending(&seed.seed_data, "mainnet", &b.peer_id, JOIN);
    approve(&seed.seed_data, id);
    b.wait_state("mainnet", "member", JOIN);
    wait_until(CONVERGE, "a to refuse b as stale_revocations", || {
        let refused = audit_records(&a.data, "membership_refused");
        if refused
            .iter()
            .any(|r| r["peer"] == b.peer_id.as_str() && r["reason"] == "stale_revocations")
        {
            Ok(())
        } else {
            Err(format!("{refused:?}"))
        }
    });
    assert!(!a.peers("mainnet").contains(&b.peer_id), "a routes b");
    wait_until(CONVERGE, "the seednode to route b", || {
        let peers = cordon_tests::node_peers(&seed.seed_data, "mainnet");
        if peers.contains(&b.peer_id) {
            Ok(())
        } else {
            Err(format!("{peers:?}"))
        }
    });
    // a keeps the members it already had (the seednode).
    assert!(a.peers("mainnet").contains(&seed.seed_peer_id));
}
