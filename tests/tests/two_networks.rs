//! One seednode serving two networks (issue 11, item 4), with real processes.
//!
//! Before the fix a seednode presented every delegation it holds on every inbound connection:
//! a node of only one of those networks refused the other (`unknown_network`) at each
//! reconnect while it waited for approval, banned its own seednode within about a minute, and
//! strangers learned every network the seednode serves. Now a seednode presents a network's
//! delegation only to a peer that asked for that network (a joining node names the networks it
//! wants) or proved it. Here a node of (strict) mainnet waits three minutes for approval from a
//! seednode serving mainnet and testnet: it never refuses or bans the seednode, never sees a
//! testnet delegation, and joins once the operator approves.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use cordon_tests::{Daemon, Net, approve, path_str, run, seednode_ready, wait_pending, wait_until};

const JOIN: Duration = Duration::from_secs(60);
/// How long the node waits for approval (the bug banned the seednode after about 48 s).
const WAIT: Duration = Duration::from_secs(180);

fn audit(data: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(data.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn a_node_of_one_network_waits_for_approval_at_a_two_network_seednode_without_banning_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .network("testnet", "approval")
        .build();
    // One seednode (mainnet's identity) serves both networks: testnet's anchor delegates to it
    // too, and both descriptor entries name it as bootstrap. Mainnet is strict.
    let main = net.network("mainnet").clone();
    let testnet_delegation = dir.path().join("testnet-to-main-seed.delegation");
    run(
        "seednode",
        &[
            "anchor",
            "delegate",
            "--anchor-key",
            path_str(&net.network("testnet").anchor_dir.join("anchor.key")),
            "--seednode",
            &main.seed_public_key,
            "--network",
            "testnet",
            "--out",
            path_str(&testnet_delegation),
        ],
    )
    .success();
    {
        let testnet = &mut net.networks[1];
        testnet.seed_peer_id = main.seed_peer_id.clone();
        testnet.seed_public_key = main.seed_public_key.clone();
        testnet.port = main.port;
    }
    net.networks[0].descriptor_extra = "strict = true\n".to_owned();
    net.write_descriptor();
    let listen = format!("/ip4/127.0.0.1/tcp/{}", main.port);
    let mut seed = Daemon::spawn(
        "seed",
        "seednode",
        &[
            "run",
            "--data",
            path_str(&main.seed_data),
            "--networks",
            path_str(&net.descriptor),
            "--delegation",
            path_str(&main.delegation),
            "--delegation",
            path_str(&testnet_delegation),
            "--listen",
            &listen,
        ],
        &net.logs,
    );
    seed.wait_ready(JOIN, "the two-network seednode to start", || {
        seednode_ready(&main.seed_data)
    })
    .unwrap_or_else(|status| panic!("seednode exited ({status}):\n{}", seed.stderr_tail(40)));

    let node = net.start_node("x", &["mainnet"], &[]);
    let id = wait_pending(&main.seed_data, "mainnet", &node.peer_id, JOIN);

    // Three minutes of waiting for approval: the node never refuses its seednode's
    // presentation, never bans it, and never sees a testnet delegation.
    let started = Instant::now();
    while started.elapsed() < WAIT {
        for r in audit(&node.data) {
            let about_seed = r["peer"] == main.seed_peer_id.as_str()
                || r["addr"].as_str().is_some_and(|a| a.contains("127.0.0.1"));
            assert!(
                !(r["kind"] == "ban_applied" && about_seed),
                "after {:?} the node banned its seednode: {r}",
                started.elapsed()
            );
            assert!(
                !(r["kind"] == "membership_refused" && r["peer"] == main.seed_peer_id.as_str()),
                "after {:?} the node refused its seednode's presentation: {r}",
                started.elapsed()
            );
        }
        assert_eq!(node.state("mainnet").as_deref(), Some("pending"));
        std::thread::sleep(Duration::from_secs(2));
    }

    approve(&main.seed_data, id);
    node.wait_state("mainnet", "member", JOIN);
    wait_until(JOIN, "the node to route its seednode", || {
        let peers = node.peers("mainnet");
        if peers.contains(&main.seed_peer_id) {
            Ok(())
        } else {
            Err(format!("{peers:?}"))
        }
    });
    drop(seed);
}
