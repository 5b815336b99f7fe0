//! Two seednodes of one network sharing one PostgreSQL (a real server, started by
//! `cordon_seednode::pg_testing`), with real `node` and `seednode` processes on loopback:
//! - a node whose descriptor lists both keeps joining, learning its operator's answer and
//!   renewing through the other when the seednode that took its request is killed;
//! - one invite code used through both at once admits exactly one node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cordon_seednode::pg_testing;
use cordon_tests::{
    Net, Node, approve, deny, invite, members, network_status, pending, wait_pending, wait_until,
};

const WAIT: Duration = Duration::from_secs(60);

fn token_expiry(node: &Node) -> Option<u64> {
    network_status(&node.status(), "mainnet").and_then(|n| n["token_expires_at"].as_u64())
}

#[test]
fn with_its_seednode_killed_a_node_learns_its_answer_joins_and_renews_through_the_other() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let options = runtime.block_on(pg_testing::fresh_database());
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    // Two-minute tokens renewed in their last minute: a renewal comes a minute after approval.
    net.networks[0].descriptor_extra =
        "token_lifetime = \"2m\"\nrenewal_margin = \"1m\"\n".to_owned();
    let b = net.add_seednode("mainnet", "seed-b");
    net.list_seednode("mainnet", &b);
    let mut a = net.start_seednode_with("mainnet", &["--store", &options.url]);

    // B is not running yet, so both nodes file their requests through A.
    let kept = net.start_node("kept", &["mainnet"], &[]);
    let refused = net.start_node("refused", &["mainnet"], &[]);
    let a_data = net.network("mainnet").seed_data.clone();
    let kept_id = wait_pending(&a_data, "mainnet", &kept.peer_id, WAIT);
    let refused_id = wait_pending(&a_data, "mainnet", &refused.peer_id, WAIT);
    for node in [&kept, &refused] {
        assert!(
            network_status(&node.status(), "mainnet")
                .is_some_and(|n| n["pending_request"].as_u64().is_some()),
            "{} holds a pending request",
            node.label
        );
    }

    let _b_daemon = net.start_extra_seednode(&b, &["--store", &options.url]);
    a.kill9();

    // With A gone, a new node joins through B.
    let late = net.start_node("late", &["mainnet"], &[]);
    let late_id = wait_pending(&b.data, "mainnet", &late.peer_id, WAIT);
    assert_eq!(
        pending(&b.data).len(),
        3,
        "B lists A's requests and its own"
    );

    // Answered on B while A is down. A denial is never pushed: the refused node learns it only
    // by asking B about the request it filed through A.
    deny(&b.data, refused_id, "not this one");
    approve(&b.data, kept_id);
    approve(&b.data, late_id);
    refused.wait_state("mainnet", "denied", WAIT);
    kept.wait_state("mainnet", "member", WAIT);
    late.wait_state("mainnet", "member", WAIT);

    // Renewed through B (A is dead): the expiry moves forward, and B lists the new token as
    // delivered.
    let first = token_expiry(&kept).expect("a member's token expiry");
    let renewed = wait_until(
        Duration::from_secs(150),
        "the kept node to renew through B",
        || match token_expiry(&kept) {
            Some(e) if e > first => Ok(e),
            other => Err(format!("expiry {other:?}, first {first}")),
        },
    );
    let rows = members(&b.data);
    let newest = rows
        .iter()
        .filter(|m| m["peer"] == kept.peer_id.as_str())
        .max_by_key(|m| m["expires_at"].as_u64())
        .unwrap();
    assert_eq!(newest["expires_at"].as_u64(), Some(renewed), "{rows:?}");
    assert!(newest["delivered_at"].is_u64(), "{newest}");
}

#[test]
fn one_invite_code_used_through_two_seednodes_at_once_admits_exactly_one_node() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let options = runtime.block_on(pg_testing::fresh_database());
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path()).network("lab", "invite").build();
    let b = net.add_seednode("lab", "seed-b");
    let _a = net.start_seednode_with("lab", &["--store", &options.url]);
    let _b = net.start_extra_seednode(&b, &["--store", &options.url]);
    let a_data = net.network("lab").seed_data.clone();
    // The descriptor lists only A; a second one lists only B.
    let via_b = dir.path().join("networks-b.toml");
    net.write_descriptor_to(&via_b, |_| vec![b.bootstrap()]);

    // A code made on A works through B alone: the seednodes share one set of invites.
    let code = invite(&a_data, "lab");
    let solo = net.start_node_from(
        &via_b,
        "solo",
        &["lab"],
        &["--invite", &format!("lab={code}")],
    );
    solo.wait_state("lab", "member", WAIT);

    // Each round, two nodes present one fresh code at once, one through A and one through B.
    let mut admitted = vec![solo.peer_id.clone()];
    for round in 0..3 {
        let code = invite(&a_data, "lab");
        let arg = format!("lab={code}");
        let (through_a, through_b) = std::thread::scope(|s| {
            let a = s.spawn(|| net.start_node(&format!("a{round}"), &["lab"], &["--invite", &arg]));
            let b = s.spawn(|| {
                net.start_node_from(&via_b, &format!("b{round}"), &["lab"], &["--invite", &arg])
            });
            (a.join().unwrap(), b.join().unwrap())
        });
        let states = wait_until(WAIT, "both nodes to be answered", || {
            let states = [&through_a, &through_b].map(|n| n.state("lab"));
            if states
                .iter()
                .all(|s| matches!(s.as_deref(), Some("member" | "denied")))
            {
                Ok(states)
            } else {
                Err(format!("{states:?}"))
            }
        });
        let members_now: Vec<&Node> = [&through_a, &through_b]
            .into_iter()
            .zip(&states)
            .filter(|(_, s)| s.as_deref() == Some("member"))
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            members_now.len(),
            1,
            "round {round}: one code admitted {states:?}"
        );
        admitted.push(members_now[0].peer_id.clone());
    }
    // The seednodes agree: one member per code, nothing queued.
    let peers = |seed_data: &std::path::Path| -> Vec<String> {
        let mut peers: Vec<String> = members(seed_data)
            .iter()
            .map(|m| m["peer"].as_str().unwrap().to_owned())
            .collect();
        peers.sort();
        peers
    };
    admitted.sort();
    assert_eq!(peers(&a_data), admitted);
    assert_eq!(peers(&b.data), admitted);
    assert!(pending(&a_data).is_empty() && pending(&b.data).is_empty());
}
