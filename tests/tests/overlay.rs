//! Two networks sharing one descriptor file: each member's routing table holds exactly its
//! network's members and seednode (DESIGN.md section 5, outcome 5), and the approval policy
//! admits nobody without an operator.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cordon_tests::{
    Net, Node, approve, cli, deny, hold_for, members, pending, wait_pending, wait_until,
};

const JOIN: Duration = Duration::from_secs(60);
const CONVERGE: Duration = Duration::from_secs(90);

#[test]
fn mainnet_and_testnet_members_see_exactly_their_network() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .network("testnet", "approval")
        .build();
    let _seed_main = net.start_seednode("mainnet");
    let _seed_test = net.start_seednode("testnet");
    let main_seed = net.network("mainnet").clone();
    let test_seed = net.network("testnet").clone();

    let m: Vec<Node> = (1..=3)
        .map(|i| net.start_node(&format!("m{i}"), &["mainnet"], &[]))
        .collect();
    let t: Vec<Node> = (1..=2)
        .map(|i| net.start_node(&format!("t{i}"), &["testnet"], &[]))
        .collect();
    let both = net.start_node("both", &["mainnet", "testnet"], &[]);

    // Who belongs where.
    let mut in_net: BTreeMap<&str, Vec<&Node>> = BTreeMap::new();
    in_net.insert("mainnet", m.iter().chain([&both]).collect());
    in_net.insert("testnet", t.iter().chain([&both]).collect());
    let seed_of = |network: &str| match network {
        "mainnet" => &main_seed,
        _ => &test_seed,
    };
    // Every peer id that may ever appear in a routing table of `network`.
    let allowed = |network: &str| -> BTreeSet<String> {
        in_net[network]
            .iter()
            .map(|n| n.peer_id.clone())
            .chain([seed_of(network).seed_peer_id.clone()])
            .collect()
    };
    let label_of: BTreeMap<String, String> = m
        .iter()
        .chain(&t)
        .chain([&both])
        .map(|n| (n.peer_id.clone(), n.label.clone()))
        .chain([
            (main_seed.seed_peer_id.clone(), "seed-mainnet".to_owned()),
            (test_seed.seed_peer_id.clone(), "seed-testnet".to_owned()),
        ])
        .collect();
    let names = |set: &BTreeSet<String>| -> Vec<String> {
        set.iter()
            .map(|p| {
                label_of
                    .get(p)
                    .cloned()
                    .unwrap_or_else(|| format!("unknown {p}"))
            })
            .collect()
    };

    // Reads every member's table of every network it is in; panics at once if any table holds
    // a peer from outside that network. Returns (label, network, table).
    let snapshot = || -> Vec<(String, &'static str, BTreeSet<String>)> {
        let mut out = Vec::new();
        for network in ["mainnet", "testnet"] {
            let ok = allowed(network);
            for node in &in_net[network] {
                let table = node.peers(network);
                let foreign: BTreeSet<String> = table.difference(&ok).cloned().collect();
                assert!(
                    foreign.is_empty(),
                    "{}'s {network} routing table holds peers outside {network}: {:?} (table: {:?})",
                    node.label,
                    names(&foreign),
                    names(&table)
                );
                out.push((node.label.clone(), network, table));
            }
        }
        out
    };

    // Every join request reaches its network's seednode; approve each by id.
    for network in ["mainnet", "testnet"] {
        let seed = seed_of(network);
        for node in &in_net[network] {
            let id = wait_pending(&seed.seed_data, network, &node.peer_id, JOIN);
            snapshot();
            approve(&seed.seed_data, id);
        }
    }
    for network in ["mainnet", "testnet"] {
        for node in &in_net[network] {
            wait_until(
                JOIN,
                &format!("{} to become a {network} member", node.label),
                || {
                    snapshot();
                    match node.state(network) {
                        Some(s) if s == "member" => Ok(()),
                        other => Err(format!("state {other:?}")),
                    }
                },
            );
        }
    }
    assert!(pending(&main_seed.seed_data).is_empty());
    assert!(pending(&test_seed.seed_data).is_empty());
    assert_eq!(members(&main_seed.seed_data).len(), 4);
    assert_eq!(members(&test_seed.seed_data).len(), 3);

    // Converge: every table equals exactly (the other members) + (that network's seednode).
    let expected = |label: &str, network: &str| -> BTreeSet<String> {
        let me = in_net[network].iter().find(|n| n.label == label).unwrap();
        let mut set = allowed(network);
        set.remove(&me.peer_id);
        set
    };
    let final_tables = wait_until(
        CONVERGE,
        "every routing table to hold exactly its network",
        || {
            let snap = snapshot();
            let wrong: Vec<String> = snap
                .iter()
                .filter(|(label, network, table)| *table != expected(label, network))
                .map(|(label, network, table)| {
                    format!(
                        "{label}/{network}: has {:?}, expected {:?}",
                        names(table),
                        names(&expected(label, network))
                    )
                })
                .collect();
            if wrong.is_empty() {
                Ok(snap)
            } else {
                Err(wrong.join("; "))
            }
        },
    );

    // The final state, once more, and the node in both networks keeps two distinct tables.
    for (label, network, table) in &final_tables {
        assert_eq!(*table, expected(label, network), "{label}/{network}");
    }
    let both_main = both.peers("mainnet");
    let both_test = both.peers("testnet");
    assert_ne!(both_main, both_test);
    assert!(
        both_main.is_disjoint(&both_test),
        "both's tables share peers: mainnet {:?}, testnet {:?}",
        names(&both_main),
        names(&both_test)
    );
    assert!(
        both_main.contains(&main_seed.seed_peer_id) && !both_main.contains(&test_seed.seed_peer_id)
    );
    assert!(
        both_test.contains(&test_seed.seed_peer_id) && !both_test.contains(&main_seed.seed_peer_id)
    );
    for tn in &t {
        assert!(!both_main.contains(&tn.peer_id));
    }

    // A mainnet-only node has no testnet table (and a testnet-only one no mainnet table).
    for (node, other) in m
        .iter()
        .map(|n| (n, "testnet"))
        .chain(t.iter().map(|n| (n, "mainnet")))
    {
        let r = cli(
            "node",
            &[
                "peers",
                "--data",
                node.data.to_str().unwrap(),
                "--network",
                other,
                "--json",
            ],
        )
        .failure();
        assert!(
            r.stderr.contains(other),
            "{}: `node peers --network {other}` error should name the network: {}",
            node.label,
            r.stderr
        );
    }
}

#[test]
fn approval_policy_never_admits_without_operator() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let _seed = net.start_seednode("mainnet");
    let seed = net.network("mainnet").clone();

    // A member to leak to, if anything leaked.
    let member = net.start_node("member", &["mainnet"], &[]);
    let id = wait_pending(&seed.seed_data, "mainnet", &member.peer_id, JOIN);
    approve(&seed.seed_data, id);
    member.wait_state("mainnet", "member", JOIN);

    let asker = net.start_node("asker", &["mainnet"], &[]);
    let id = wait_pending(&seed.seed_data, "mainnet", &asker.peer_id, JOIN);
    asker.wait_state("mainnet", "pending", JOIN);

    // Outsiders: the asker may know only the seednode; no member may know the asker.
    let check_outside = || {
        let peers = asker.peers("mainnet");
        assert!(
            peers.iter().all(|p| *p == seed.seed_peer_id),
            "a pending node has peers other than the seednode: {peers:?}"
        );
        assert!(
            !member.peers("mainnet").contains(&asker.peer_id),
            "a member routes to a pending node"
        );
    };
    hold_for(Duration::from_secs(8), || {
        assert_eq!(asker.state("mainnet").as_deref(), Some("pending"));
        check_outside();
    });
    let status = asker.status();
    let entry = cordon_tests::network_status(&status, "mainnet").unwrap();
    assert_eq!(entry["state"], "pending", "{status}");
    assert_eq!(entry["pending_request"], id, "{status}");
    assert!(entry["token_expires_at"].is_null(), "{status}");
    assert_eq!(pending_ids(&seed.seed_data), vec![id]);
    assert_eq!(
        members(&seed.seed_data).len(),
        1,
        "only the approved member"
    );

    deny(&seed.seed_data, id, "not on the list");
    asker.wait_state("mainnet", "denied", JOIN);
    check_outside();
    assert!(pending(&seed.seed_data).is_empty());
    assert_eq!(members(&seed.seed_data).len(), 1);
}

fn pending_ids(seed_data: &std::path::Path) -> Vec<i64> {
    pending(seed_data)
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}
