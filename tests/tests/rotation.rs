//! Anchor rotation end to end with real processes (issue 10, item 2).
//!
//! The drill an operator runs, one command per step:
//! 1. `seednode anchor new` creates the next anchor key;
//! 2. the descriptor lists both anchors, and every node and seednode picks it up with
//!    `node reload` / `seednode reload` (no restart);
//! 3. `seednode anchor delegate` signs the seednode's delegation with the new key;
//! 4. the seednode restarts with the new delegation, and every member it issued renews under it
//!    by itself (the seednode presents another delegation than the member's token chains to);
//! 5. once `node status` shows the new `token_anchor` everywhere, the descriptor drops the old
//!    anchor and everyone reloads again.
//!
//! Sampled every second from step 2 to the end, the members stay in each other's routing tables
//! and their calls answer. A member that never learned of the rotation (its descriptor trusts
//! only the old anchor, so it cannot renew) is routed during the overlap and refused afterwards.
//! A member that was offline throughout comes back with the new descriptor and is renewed under
//! the new anchor by itself. Afterwards no file the daemons or `seednode anchor` wrote is
//! readable by group or others.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use cordon_tests::{
    Daemon, Net, Node, approve, cli, group_or_world_accessible, hold_for, network_status, path_str,
    run, run_with_timeout, try_node_status, wait_pending, wait_until,
};

const JOIN: Duration = Duration::from_secs(60);
/// Longest wait for a step of the drill to take effect everywhere.
const STEP: Duration = Duration::from_secs(90);

fn call(from: &Node, to: &Node, command: &[&str]) -> cordon_tests::Run {
    cordon_tests::node_call(from, to, "mainnet", command)
}

fn token_anchor(node: &Node) -> Option<String> {
    network_status(&node.status(), "mainnet")
        .and_then(|n| n["token_anchor"].as_str().map(str::to_owned))
}

/// Every member routes every other, and calls between them answer. Panics (with the sample
/// number) on the first gap.
fn sample(members: &[&Node], samples: &mut u32) {
    for x in members {
        let routed = x.peers("mainnet");
        for y in members {
            assert!(
                x.peer_id == y.peer_id || routed.contains(&y.peer_id),
                "sample {samples}: {} does not route {} ({routed:?})",
                x.label,
                y.label
            );
        }
    }
    for (from, to) in [(0, 1), (1, 2), (2, 0)] {
        let ping = call(members[from], members[to], &["ping"]);
        assert!(
            ping.ok,
            "sample {samples}: {} -> {} ping failed: {}",
            members[from].label, members[to].label, ping.stderr
        );
    }
    *samples += 1;
}

/// Samples every second until `done` holds (at most `timeout`).
fn sample_until(
    members: &[&Node],
    samples: &mut u32,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut() -> Result<(), String>,
) {
    let deadline = Instant::now() + timeout;
    loop {
        sample(members, samples);
        let last = match done() {
            Ok(()) => return,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}: {last}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `node reload` (or `seednode reload`); returns what it printed.
fn reload(binary: &str, data: &Path) -> String {
    let out = cli(binary, &["reload", "--data", path_str(data)]).success();
    eprintln!("{binary} reload {}:\n{}", data.display(), out.stdout);
    out.stdout
}

#[test]
fn rotating_the_anchor_keeps_members_routable_and_refuses_the_old_anchor_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let mut seed_daemon = net.start_seednode("mainnet");
    let seed = net.network("mainnet").clone();
    let old_anchor = seed.anchor_public_key.clone();

    // A laggard whose descriptor never changes: it trusts only the old anchor.
    let laggard_descriptor = dir.path().join("laggard-networks.toml");
    std::fs::copy(&net.descriptor, &laggard_descriptor).unwrap();
    let (laggard_data, laggard_id) = net.init_node("laggard");
    let _laggard = Daemon::spawn(
        "laggard",
        "node",
        &[
            "run",
            "--data",
            path_str(&laggard_data),
            "--networks",
            path_str(&laggard_descriptor),
            "--network",
            "mainnet",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--label",
            "laggard",
        ],
        &net.logs,
    );

    let a = net.start_node("a", &["mainnet"], &[]);
    let b = net.start_node("b", &["mainnet"], &[]);
    let c = net.start_node("c", &["mainnet"], &[]);
    // A member that is offline during the whole rotation.
    let mut away = net.start_node("away", &["mainnet"], &[]);
    for peer in [&a.peer_id, &c.peer_id, &laggard_id, &away.peer_id] {
        let id = wait_pending(&seed.seed_data, "mainnet", peer, JOIN);
        approve(&seed.seed_data, id);
    }
    // b holds an explicit right; it must survive the re-issue.
    let id = wait_pending(&seed.seed_data, "mainnet", &b.peer_id, JOIN);
    cordon_tests::approve_with_right(&seed.seed_data, id, "dht_put");
    let members = [&a, &b, &c];
    for m in members {
        m.wait_state("mainnet", "member", JOIN);
        assert_eq!(token_anchor(m).as_deref(), Some(old_anchor.as_str()));
    }
    wait_until(JOIN, "members and the laggard to route each other", || {
        for m in members {
            let routed = m.peers("mainnet");
            for other in members.iter().map(|o| &o.peer_id).chain([&laggard_id]) {
                if *other != m.peer_id && !routed.contains(other) {
                    return Err(format!("{} routes {routed:?}", m.label));
                }
            }
        }
        Ok(())
    });
    away.wait_state("mainnet", "member", JOIN);
    away.daemon.stop();
    let mut samples = 0;
    sample(&members, &mut samples);

    // Step 1: the next anchor key.
    let next_dir = dir.path().join("anchor-mainnet-next");
    let next = run(
        "seednode",
        &[
            "anchor",
            "new",
            "--network",
            "mainnet",
            "--out",
            path_str(&next_dir),
            "--insecure-plaintext",
            "--json",
        ],
    )
    .success()
    .json();
    let new_anchor = next["public_key"].as_str().unwrap().to_owned();
    assert_ne!(new_anchor, old_anchor);

    // Step 2: both anchors in every descriptor, picked up without a restart.
    net.networks[0].anchors = vec![old_anchor.clone(), new_anchor.clone()];
    net.write_descriptor();
    for m in members {
        let out = reload("node", &m.data);
        assert!(
            out.contains(&format!("anchor added:   mainnet {new_anchor}")),
            "{out}"
        );
        sample(&members, &mut samples);
    }
    let out = reload("seednode", &seed.seed_data);
    assert!(out.contains(&format!("mainnet {new_anchor}")), "{out}");

    // Step 3: the new anchor delegates to the seednode.
    let new_delegation = dir.path().join("mainnet-next.delegation");
    run(
        "seednode",
        &[
            "anchor",
            "delegate",
            "--anchor-key",
            path_str(&next_dir.join("anchor.key")),
            "--seednode",
            &seed.seed_public_key,
            "--network",
            "mainnet",
            "--roles",
            "member,operator",
            "--rights",
            "dht_put",
            "--out",
            path_str(&new_delegation),
        ],
    )
    .success();

    // Step 4: the seednode restarts with it; its members renew under the new anchor.
    seed_daemon.stop();
    net.networks[0].delegation = new_delegation;
    seed_daemon = net.start_seednode("mainnet");
    sample_until(
        &members,
        &mut samples,
        STEP,
        "every member to hold a token of the new anchor",
        || {
            let anchors: Vec<Option<String>> = members.iter().map(|m| token_anchor(m)).collect();
            if anchors
                .iter()
                .all(|a| a.as_deref() == Some(new_anchor.as_str()))
            {
                Ok(())
            } else {
                Err(format!("token anchors {anchors:?}"))
            }
        },
    );
    // The seednode's operator sees who moved: every member's newest token is of the current
    // delegation, the laggard's and the absent member's are of the earlier one.
    let listed = cordon_tests::members(&seed.seed_data);
    let newest = |peer: &str| {
        listed
            .iter()
            .filter(|m| m["peer"] == peer)
            .max_by_key(|m| m["token_id"].as_u64())
            .unwrap_or_else(|| panic!("{peer} not in {listed:?}"))["current_delegation"]
            .clone()
    };
    for m in members {
        assert_eq!(newest(&m.peer_id), serde_json::json!(true), "{}", m.label);
    }
    for peer in [&laggard_id, &away.peer_id] {
        assert_eq!(newest(peer), serde_json::json!(false), "{peer}");
    }
    // The laggard cannot follow (it does not trust the new anchor) but, during the overlap,
    // its old token still admits it.
    for m in members {
        assert!(
            m.peers("mainnet").contains(&laggard_id),
            "{} dropped the laggard during the overlap",
            m.label
        );
    }
    let laggard_status = try_node_status(&laggard_data).expect("laggard answers");
    assert_eq!(
        network_status(&laggard_status, "mainnet").and_then(|n| n["token_anchor"].as_str()),
        Some(old_anchor.as_str())
    );

    // Step 5: the old anchor leaves every descriptor.
    net.networks[0].anchors = vec![new_anchor.clone()];
    net.write_descriptor();
    let out = reload("seednode", &seed.seed_data);
    assert!(
        out.contains(&format!("anchor removed: mainnet {old_anchor}")),
        "{out}"
    );
    for m in members {
        let out = reload("node", &m.data);
        assert!(
            out.contains(&format!("anchor removed: mainnet {old_anchor}")),
            "{out}"
        );
        assert!(
            !out.contains("membership chains to a removed anchor"),
            "{out}"
        );
        sample(&members, &mut samples);
    }
    sample_until(
        &members,
        &mut samples,
        STEP,
        "every member to drop the laggard",
        || match members
            .iter()
            .find(|m| m.peers("mainnet").contains(&laggard_id))
        {
            Some(m) => Err(format!("{} still routes the laggard", m.label)),
            None => Ok(()),
        },
    );
    // And it stays out: it keeps dialing, and its token is refused every time.
    hold_for(Duration::from_secs(5), || {
        for m in members {
            assert!(!m.peers("mainnet").contains(&laggard_id), "{}", m.label);
        }
    });
    // The call waits up to the node's 20 s call timeout for a verified connection.
    let refused = run_with_timeout(
        "node",
        &[
            "call",
            "--data",
            path_str(&laggard_data),
            "--network",
            "mainnet",
            &a.peer_id,
            "ping",
        ],
        Duration::from_secs(60),
    );
    assert!(
        !refused.ok,
        "the laggard's call answered: {}",
        refused.stdout
    );
    // It fails as refused (its old-anchor membership, or the members' new-anchor ones, did
    // not verify on the connection), not as unreachable or unknown.
    assert!(
        refused.stderr.contains("refused: ") && refused.stderr.contains("membership of mainnet"),
        "the laggard's call failed for another reason: {}",
        refused.stderr
    );
    for _ in 0..5 {
        sample(&members, &mut samples);
        std::thread::sleep(Duration::from_secs(1));
    }
    // The absent member comes back with the new descriptor: its stored token no longer
    // verifies, so it asks the seednode, which renews it under the new anchor at once.
    away.restart();
    sample_until(
        &members,
        &mut samples,
        STEP,
        "the absent member to come back under the new anchor",
        || {
            let anchor = token_anchor(&away);
            if anchor.as_deref() != Some(new_anchor.as_str()) {
                return Err(format!("its token anchor is {anchor:?}"));
            }
            match members
                .iter()
                .find(|m| !m.peers("mainnet").contains(&away.peer_id))
            {
                Some(m) => Err(format!("{} does not route it yet", m.label)),
                None => Ok(()),
            }
        },
    );
    // b's explicit right survived the re-issue under the new anchor.
    let put = call(&b, &a, &["dht_put", "rotated-key", "value-of-b"]);
    assert!(put.ok, "b's dht_put after the rotation: {}", put.stderr);
    eprintln!("{samples} samples across the rotation without a gap");

    // Nothing any daemon or `seednode anchor` wrote is readable by group or others: data
    // directories (keys, tokens, store, revocations, audit log, control socket), anchor key
    // directories and delegation files.
    let anchor_dir = seed.anchor_dir.clone();
    let mut written: Vec<&Path> = vec![
        &a.data,
        &b.data,
        &c.data,
        &away.data,
        &laggard_data,
        &seed.seed_data,
        &anchor_dir,
        &next_dir,
        &seed.delegation,
        &net.networks[0].delegation,
    ];
    written.dedup();
    let open = group_or_world_accessible(&written);
    assert!(open.is_empty(), "group- or world-accessible: {open:#?}");
    drop(seed_daemon);
}
