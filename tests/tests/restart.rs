//! Crashes lose nothing (DESIGN.md section 5, outcome 6): join requests survive a seednode
//! `kill -9`, an approval made while the node is offline reaches it on its next connection, and
//! a member keeps its membership across its own `kill -9`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use cordon_tests::{
    Net, approve, members, network_status, node_peer_entries, pending, seednode_ready, wait_for,
    wait_pending, wait_until,
};

const JOIN: Duration = Duration::from_secs(60);
const CONVERGE: Duration = Duration::from_secs(90);

fn pending_by_peer(seed_data: &std::path::Path) -> BTreeSet<(i64, String)> {
    pending(seed_data)
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                r["peer"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn member_record<'a>(
    members: &'a [serde_json::Value],
    peer: &str,
) -> Option<&'a serde_json::Value> {
    members.iter().find(|m| m["peer"] == peer)
}

/// `other`'s routing-table entry for `peer` in mainnet.
fn entry_of(data: &std::path::Path, peer: &str) -> Option<serde_json::Value> {
    node_peer_entries(data, "mainnet")
        .into_iter()
        .find(|e| e["peer"] == peer)
}

#[test]
fn seednode_kill9_loses_no_pending_request_and_delivers_late_approval() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let mut seed_daemon = net.start_seednode("mainnet");
    let seed = net.network("mainnet").clone();

    let a = net.start_node("a", &["mainnet"], &[]);
    let mut b = net.start_node("b", &["mainnet"], &[]);
    let id_a = wait_pending(&seed.seed_data, "mainnet", &a.peer_id, JOIN);
    let id_b = wait_pending(&seed.seed_data, "mainnet", &b.peer_id, JOIN);
    assert_ne!(id_a, id_b);
    a.wait_state("mainnet", "pending", JOIN);
    b.wait_state("mainnet", "pending", JOIN);
    let before = pending_by_peer(&seed.seed_data);
    assert_eq!(
        before,
        BTreeSet::from([(id_a, a.peer_id.clone()), (id_b, b.peer_id.clone())])
    );

    // kill -9 the seednode and restart it on the same data directory (and port).
    seed_daemon.kill9();
    seed_daemon.restart();
    if let Err(exit) =
        seed_daemon.wait_ready(Duration::from_secs(30), "the seednode to restart", || {
            seednode_ready(&seed.seed_data)
        })
    {
        panic!(
            "the restarted seednode exited ({exit}):\n{}",
            seed_daemon.stderr_tail(40)
        );
    }
    assert_eq!(
        pending_by_peer(&seed.seed_data),
        before,
        "the pending requests after kill -9 and restart"
    );

    // B goes offline; its request is approved while it is away.
    b.kill9();
    let issued = approve(&seed.seed_data, id_b);
    assert_eq!(issued["peer"], b.peer_id.as_str(), "{issued}");
    assert!(
        issued["delivered_at"].is_null(),
        "a token cannot have been delivered to an offline node: {issued}"
    );
    assert_eq!(
        pending_by_peer(&seed.seed_data),
        BTreeSet::from([(id_a, a.peer_id.clone())])
    );

    // B's next connection delivers its token.
    assert!(
        member_record(&members(&seed.seed_data), &b.peer_id).unwrap()["delivered_at"].is_null(),
        "delivered while B was offline"
    );
    b.restart();
    b.wait_state("mainnet", "member", JOIN);
    wait_for(
        JOIN,
        "the seednode to record B's token as delivered",
        || {
            member_record(&members(&seed.seed_data), &b.peer_id)
                .filter(|m| !m["delivered_at"].is_null())
                .map(|_| ())
        },
    );

    // A, online all along (and reconnected to the restarted seednode), is approved live.
    assert_eq!(a.state("mainnet").as_deref(), Some("pending"));
    approve(&seed.seed_data, id_a);
    a.wait_state("mainnet", "member", JOIN);
    assert!(pending(&seed.seed_data).is_empty());
    let ms = members(&seed.seed_data);
    assert_eq!(ms.len(), 2, "{ms:?}");
    assert!(member_record(&ms, &a.peer_id).is_some() && member_record(&ms, &b.peer_id).is_some());
}

#[test]
fn node_kill9_keeps_membership_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let _seed_daemon = net.start_seednode("mainnet");
    let seed = net.network("mainnet").clone();

    let mut n = net.start_node("n", &["mainnet"], &[]);
    let other = net.start_node("other", &["mainnet"], &[]);
    for node in [&n, &other] {
        let id = wait_pending(&seed.seed_data, "mainnet", &node.peer_id, JOIN);
        approve(&seed.seed_data, id);
        node.wait_state("mainnet", "member", JOIN);
    }
    let (n_id, other_id) = (n.peer_id.clone(), other.peer_id.clone());
    let both_see_each_other = |n_peers: &BTreeSet<String>, other_peers: &BTreeSet<String>| {
        n_peers.contains(&other_id)
            && n_peers.contains(&seed.seed_peer_id)
            && other_peers.contains(&n_id)
    };
    wait_until(
        CONVERGE,
        "n and other in each other's routing tables",
        || {
            let (np, op) = (n.peers("mainnet"), other.peers("mainnet"));
            if both_see_each_other(&np, &op) {
                Ok(())
            } else {
                Err(format!("n: {np:?}, other: {op:?}"))
            }
        },
    );
    let tokens_before = members(&seed.seed_data);
    let token_before = member_record(&tokens_before, &n.peer_id).unwrap()["token_id"].clone();

    n.kill9();
    // `other` notices that n is gone (so that its coming back is observable).
    wait_until(CONVERGE, "other to see n disconnected", || {
        match entry_of(&other.data, &n_id) {
            Some(e) if e["connected"] == false => Ok(()),
            e => Err(format!("{e:?}")),
        }
    });
    let status = n.restart();
    // Its new address (port 0: a new port), once its listener reports it.
    let new_addr = wait_for(JOIN, "the restarted n to report its listen address", || {
        n.status()["listen"][0].as_str().map(str::to_owned)
    });
    // A member at once: its first status after the restart, before any seednode round trip.
    let entry = network_status(&status, "mainnet").unwrap();
    assert_eq!(
        entry["state"], "member",
        "first status after restart: {status}"
    );
    assert!(entry["pending_request"].is_null(), "{status}");
    assert!(!entry["token_expires_at"].is_null(), "{status}");

    // It rejoins the routing tables, and at no point asks to join again.
    let no_new_request = || {
        assert!(
            pending(&seed.seed_data).is_empty(),
            "a member asked to join again"
        );
        assert_eq!(n.state("mainnet").as_deref(), Some("member"));
    };
    wait_until(
        CONVERGE,
        "the restarted n back in the routing tables",
        || {
            no_new_request();
            let (np, op) = (n.peers("mainnet"), other.peers("mainnet"));
            let entry = entry_of(&other.data, &n_id);
            // other has verified the restarted n on a live connection, at its new address.
            let live = entry.as_ref().is_some_and(|e| {
                e["connected"] == true
                    && !e["expires_at"].is_null()
                    && e["addrs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|a| *a == new_addr.as_str())
            });
            if both_see_each_other(&np, &op) && live {
                Ok(())
            } else {
                Err(format!(
                    "n: {np:?}, other: {op:?}, other's entry for n: {entry:?}"
                ))
            }
        },
    );
    no_new_request();
    let tokens_after = members(&seed.seed_data);
    assert_eq!(tokens_after.len(), 2, "{tokens_after:?}");
    assert_eq!(
        member_record(&tokens_after, &n.peer_id).unwrap()["token_id"],
        token_before,
        "no new token was issued"
    );
}
