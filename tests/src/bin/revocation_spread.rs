//! Benchmark (issue 9, DESIGN.md section 8): how long a revocation takes to reach every member
//! of a network of real processes on loopback, and what it costs each member on the wire.
//!
//! Starts a seednode and `SPREAD_NODES` nodes (default 100) in one `open` network, waits for
//! the overlay to settle, then runs `seednode revoke --peer X` for one of them and reads, from
//! every other node's log, when it applied the new revocation head (the log line `revocation
//! head applied ... added=1`, whose timestamp has microseconds; applying is enforcing: the
//! verifier refuses X from then on and X's connections close). Prints p50 and max of those
//! delays against the 5 s design target, and the revocation bytes and updates each member
//! received (from `node status`). Asserts nothing; exits non-zero only if the setup fails.
//!
//! Binaries: `$CORDON_BIN_DIR` (scripts/bench sets target/release). Only 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime};

use cordon_tests::{Net, Node, cli, path_str, percentile};

/// Seconds since midnight UTC of a log line's RFC 3339 timestamp (`2026-12-01T09:08:45.123Z`).
fn seconds_of_day(line: &str) -> Option<f64> {
    let time = line.get(11..)?.split('Z').next()?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn now_of_day() -> f64 {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    secs % 86_400.0
}

/// When `node` applied a head that added ids, from its log (seconds of day).
fn applied_at(net: &Net, node: &Node) -> Option<f64> {
    let log = std::fs::read_to_string(net.logs.join(format!("{}.stderr.log", node.label))).ok()?;
    log.lines()
        .filter(|l| l.contains("revocation head applied") && !l.contains(" added=0"))
        .find_map(seconds_of_day)
}

fn mainnet_counter(node: &Node, field: &str) -> u64 {
    let status = cordon_tests::try_node_status(&node.data);
    status
        .as_ref()
        .and_then(|s| {
            s["networks"]
                .as_array()?
                .iter()
                .find(|n| n["name"] == "mainnet")
                .and_then(|n| n[field].as_u64())
        })
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::var("SPREAD_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .clamp(2, 1000);
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path()).network("mainnet", "open").build();
    let _seed = net.start_seednode("mainnet");
    let seed = net.network("mainnet").clone();
    println!("revocation spread: starting {n} nodes");
    let started = Instant::now();
    let nodes: Vec<Node> = (0..n)
        .map(|i| net.start_node(&format!("n{i}"), &["mainnet"], &[]))
        .collect();
    for node in &nodes {
        node.wait_state("mainnet", "member", Duration::from_secs(120));
    }
    println!(
        "  {n} members in {:.1} s; waiting for the overlay to settle",
        started.elapsed().as_secs_f64()
    );
    // Settled: every node verified at least min(n - 1, 8) peers, or 90 s passed.
    let want = (n - 1).min(8) as u64;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let short = nodes
            .iter()
            .filter(|node| mainnet_counter(node, "verified_peers") < want)
            .count();
        if short == 0 || Instant::now() > deadline {
            println!("  settled ({short} nodes below {want} verified peers)");
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }

    let target = &nodes[0];
    let others = &nodes[1..];
    let bytes_before: Vec<u64> = others
        .iter()
        .map(|o| mainnet_counter(o, "revocation_bytes_received"))
        .collect();
    let updates_before: Vec<u64> = others
        .iter()
        .map(|o| mainnet_counter(o, "revocation_updates_received"))
        .collect();
    let announce_bytes_before: Vec<u64> = others
        .iter()
        .map(|o| mainnet_counter(o, "revocation_announce_bytes_received"))
        .collect();
    let announces_before: Vec<u64> = others
        .iter()
        .map(|o| mainnet_counter(o, "revocation_announces_received"))
        .collect();
    let t0 = now_of_day();
    let run = cli(
        "seednode",
        &[
            "revoke",
            "--peer",
            &target.peer_id,
            "--data",
            path_str(&seed.seed_data),
        ],
    );
    assert!(run.ok, "seednode revoke failed: {}", run.stderr);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut delays: Vec<Option<f64>> = vec![None; others.len()];
    while Instant::now() < deadline && delays.iter().any(Option::is_none) {
        for (i, o) in others.iter().enumerate() {
            if delays[i].is_none() {
                delays[i] = applied_at(&net, o).map(|t| (t - t0).max(0.0));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let duplicate pushes arrive before counting bytes.
    std::thread::sleep(Duration::from_secs(2));
    let mut got: Vec<f64> = delays.iter().flatten().copied().collect();
    got.sort_by(f64::total_cmp);
    let missing = delays.iter().filter(|d| d.is_none()).count();
    let bytes: Vec<u64> = others
        .iter()
        .zip(&bytes_before)
        .map(|(o, b)| mainnet_counter(o, "revocation_bytes_received").saturating_sub(*b))
        .collect();
    let updates: Vec<u64> = others
        .iter()
        .zip(&updates_before)
        .map(|(o, b)| mainnet_counter(o, "revocation_updates_received").saturating_sub(*b))
        .collect();
    let announce_bytes: Vec<u64> = others
        .iter()
        .zip(&announce_bytes_before)
        .map(|(o, b)| mainnet_counter(o, "revocation_announce_bytes_received").saturating_sub(*b))
        .collect();
    let announces: Vec<u64> = others
        .iter()
        .zip(&announces_before)
        .map(|(o, b)| mainnet_counter(o, "revocation_announces_received").saturating_sub(*b))
        .collect();
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    let p50 = percentile(&got, 0.5);
    let max = got.last().copied().unwrap_or(f64::NAN);
    println!("revocation spread over {n} real processes (1 seednode + {n} nodes, loopback):");
    println!(
        "  revoke -> applied by each other member: p50 {:.3} s, p90 {:.3} s, max {:.3} s \
         ({} of {} members; {missing} did not apply it within 60 s)",
        p50,
        percentile(&got, 0.9),
        max,
        got.len(),
        others.len()
    );
    println!(
        "  max / 5 s design target: {:.3}x (below 1 is within target)",
        max / 5.0
    );
    let total: Vec<u64> = bytes
        .iter()
        .zip(&announce_bytes)
        .map(|(a, b)| a + b)
        .collect();
    println!(
        "  per member: {:.1} updates ({:.0} bytes: signed head, entries, signer's delegation) \
         + {:.1} announces ({:.0} bytes) = {:.0} bytes of revocation payload per revocation \
         (max {} bytes; stream framing not counted)",
        mean(&updates),
        mean(&bytes),
        mean(&announces),
        mean(&announce_bytes),
        mean(&total),
        total.iter().max().copied().unwrap_or(0)
    );
}
