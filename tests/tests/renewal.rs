//! Renewal with real processes (issue 10, item 1): with 2-minute tokens and a 1-minute renewal
//! margin, members renew by themselves; sampled every second across two renewals, they stay in
//! each other's routing tables and their calls keep answering, each token's expiry moves
//! forward, and an explicit right granted at approval survives both renewals.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cordon_tests::{Net, Node, approve, network_status, wait_pending, wait_until};

const JOIN: Duration = Duration::from_secs(60);

fn token_expiry(node: &Node) -> Option<u64> {
    network_status(&node.status(), "mainnet").and_then(|n| n["token_expires_at"].as_u64())
}

fn call(from: &Node, to: &Node, command: &[&str]) -> cordon_tests::Run {
    cordon_tests::node_call(from, to, "mainnet", command)
}

#[test]
fn members_renew_two_minute_tokens_without_a_gap_and_keep_their_rights() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    net.networks[0].descriptor_extra =
        "token_lifetime = \"2m\"\nrenewal_margin = \"1m\"\n".to_owned();
    net.write_descriptor();
    let _seed = net.start_seednode("mainnet");
    let seed = net.network("mainnet").clone();

    let a = net.start_node("a", &["mainnet"], &[]);
    let b = net.start_node("b", &["mainnet"], &[]);
    let id = wait_pending(&seed.seed_data, "mainnet", &a.peer_id, JOIN);
    approve(&seed.seed_data, id);
    let id = wait_pending(&seed.seed_data, "mainnet", &b.peer_id, JOIN);
    cordon_tests::approve_with_right(&seed.seed_data, id, "dht_put");
    a.wait_state("mainnet", "member", JOIN);
    b.wait_state("mainnet", "member", JOIN);
    wait_until(JOIN, "a and b to route each other", || {
        let (pa, pb) = (a.peers("mainnet"), b.peers("mainnet"));
        if pa.contains(&b.peer_id) && pb.contains(&a.peer_id) {
            Ok(())
        } else {
            Err(format!("a: {pa:?}, b: {pb:?}"))
        }
    });

    // A record b stores now carries b's first token; it must outlive that token, because b
    // republishes its records with each renewed one.
    let early = call(&b, &a, &["dht_put", "early-key", "put-before-renewal"]);
    assert!(early.ok, "b's first dht_put: {}", early.stderr);

    // Sample every second until both tokens renewed twice (at most 200 s).
    let mut expiries: [BTreeSet<u64>; 2] = Default::default();
    let deadline = Instant::now() + Duration::from_secs(200);
    let mut samples = 0;
    loop {
        for (i, n) in [&a, &b].into_iter().enumerate() {
            if let Some(e) = token_expiry(n) {
                expiries[i].insert(e);
            }
        }
        let (pa, pb) = (a.peers("mainnet"), b.peers("mainnet"));
        assert!(
            pa.contains(&b.peer_id) && pb.contains(&a.peer_id),
            "sample {samples}: a routes {pa:?}, b routes {pb:?} (expiries so far {expiries:?})"
        );
        let ping = call(&a, &b, &["ping"]);
        assert!(
            ping.ok,
            "sample {samples}: a's call to b failed: {} (expiries so far {expiries:?})",
            ping.stderr
        );
        samples += 1;
        if expiries.iter().all(|e| e.len() >= 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than two renewals each within 200 s: {expiries:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("{samples} samples without a gap; expiries seen: {expiries:?}");
    // Expiries only move forward (a set is sorted; each renewal added a later one).
    for e in &expiries {
        let v: Vec<u64> = e.iter().copied().collect();
        assert!(v.windows(2).all(|w| w[0] < w[1]), "{v:?}");
    }
    // b's first token has expired by now (wait for it if not): its record is still served.
    let first = *expiries[1].iter().next().expect("b's first expiry");
    wait_until(Duration::from_secs(60), "b's first token to expire", || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if now > first {
            Ok(())
        } else {
            Err(format!("now {now}, first expiry {first}"))
        }
    });
    let got = call(&b, &a, &["dht_get", "early-key"]);
    assert!(
        got.ok && got.stdout.contains("put-before-renewal"),
        "the record b put with its first token is gone after that token expired: {} {}",
        got.stdout,
        got.stderr
    );
    // b's explicit right survived both renewals.
    let put = call(&b, &a, &["dht_put", "renewed-key", "value-of-b"]);
    assert!(put.ok, "b's dht_put after renewals: {}", put.stderr);
    let members = cordon_tests::members(&seed.seed_data);
    let newest_b = members
        .iter()
        .filter(|m| m["peer"] == b.peer_id.as_str())
        .max_by_key(|m| m["expires_at"].as_u64())
        .unwrap();
    assert_eq!(
        newest_b["rights"],
        serde_json::json!(["dht_put"]),
        "{newest_b}"
    );
}
