//! A flood of non-member connections with garbage and oversized messages leaves a member's
//! memory bounded and other members' calls to it working (real binaries on loopback).
//! The latency ratio is measured by `scripts/flood`, not asserted here.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use cordon_tests::{Net, Node, cli, wait_pending, wait_until};

const JOIN: Duration = Duration::from_secs(60);

fn vm_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn member(net: &Net, label: &str) -> Node {
    let node = net.start_node(label, &["mainnet"], &[]);
    let seed = net.network("mainnet");
    let id = wait_pending(&seed.seed_data, "mainnet", &node.peer_id, JOIN);
    cordon_tests::approve(&seed.seed_data, id);
    node.wait_state("mainnet", "member", JOIN);
    node
}

fn ping(from: &Node, to: &Node) -> bool {
    cli(
        "node",
        &[
            "call",
            "--data",
            from.data.to_str().unwrap(),
            &to.peer_id,
            "ping",
        ],
    )
    .ok
}

#[test]
fn flood_of_non_members_leaves_memory_bounded_and_members_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let _seed = net.start_seednode("mainnet");
    let a = member(&net, "a");
    let mut b = member(&net, "b");
    wait_until(JOIN, "a and b to route each other", || {
        let ok = a.peers("mainnet").contains(&b.peer_id) && b.peers("mainnet").contains(&a.peer_id);
        if ok {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    });
    assert!(ping(&a, &b), "a cannot ping b before the flood");

    let status = b.status();
    let target = status["listen"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .find(|a| a.starts_with("/ip4/127.0.0.1/"))
        .unwrap()
        .to_owned();
    let port = target.split('/').nth(4).unwrap().to_owned();
    let pid = b.daemon.pid().unwrap();
    let before = vm_rss_kb(pid);

    // 200 raw TCP connections sending garbage, 100 libp2p clients sending oversized and
    // garbage membership messages, at the same time.
    let mut tcp = Command::new(env!("CARGO_BIN_EXE_flood"))
        .args(["tcp", &format!("127.0.0.1:{port}"), "200", "32", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut p2p = Command::new(env!("CARGO_BIN_EXE_flood_membership"))
        .env("FLOOD_TARGET", &target)
        .env("FLOOD_COUNT", "100")
        .env("FLOOD_CONCURRENCY", "16")
        .env("FLOOD_SECS", "60")
        .env("FLOOD_SPREAD_SECS", "4")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let mut peak = before;
    let mut answered = 0;
    let mut failed = BTreeSet::new();
    for i in 0..10 {
        if ping(&a, &b) {
            answered += 1;
        } else {
            failed.insert(i);
        }
        peak = peak.max(vm_rss_kb(pid));
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = tcp.wait();
    let _ = p2p.wait();
    peak = peak.max(vm_rss_kb(pid));
    assert!(b.daemon.is_running(), "b died during the flood");
    assert_eq!(
        answered, 10,
        "pings that failed during the flood: {failed:?}"
    );
    assert!(ping(&a, &b), "a cannot ping b after the flood");
    // Bounded: everything a non-member can make b hold is capped (connections, pending
    // handshakes, message sizes), so the flood adds at most a few tens of MB.
    assert!(
        peak < before + 64 * 1024,
        "b's memory grew from {before} kB to {peak} kB during the flood"
    );
    eprintln!("b VmRSS: {before} kB before, {peak} kB peak");
}
