//! The in-process tier: real nodes (the product's swarm, session behaviour, gates, Kademlia and
//! event loop) over libp2p's memory transport with Noise and Yamux, many in one process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cordon_membership::PeerId;
use cordon_node::api::CallCommand;
use cordon_node::api::CallResult;
use cordon_tests::inprocess::{Cluster, ClusterSpec, Sample, wait_for};
use futures::future::join_all;

/// Indices of the nodes whose networks are exactly `networks`.
fn only(cluster: &Cluster, networks: &[&str]) -> Vec<usize> {
    cluster
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            n.networks.len() == networks.len()
                && networks
                    .iter()
                    .all(|w| n.networks.iter().any(|m| m.as_str() == *w))
        })
        .map(|(i, _)| i)
        .collect()
}

fn members(cluster: &Cluster, network: &str) -> Vec<usize> {
    cluster
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.networks.iter().any(|m| m.as_str() == network))
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_nodes_reach_sampled_pairs_and_never_leak_across_networks() {
    let started = Instant::now();
    // 110 mainnet-only, 80 testnet-only, 10 in both: the dual nodes know testnet peers and are
    // the ones that could leak them to mainnet.
    let mut cluster = Cluster::start(ClusterSpec::segregated(
        &[("mainnet", 110), ("testnet", 80)],
        10,
    ))
    .await
    .expect("cluster");
    assert_eq!(cluster.nodes.len(), 200);
    eprintln!("200 nodes started in {:?}", started.elapsed());
    let mainnet_only = only(&cluster, &["mainnet"]);
    let testnet_only = only(&cluster, &["testnet"]);
    let testnet_ids: BTreeSet<PeerId> = testnet_only
        .iter()
        .map(|i| cluster.nodes[*i].peer)
        .collect();

    // Every node gets a routing table in each of its networks.
    let c = &cluster;
    wait_for(
        "every node to route at least one peer per network",
        Duration::from_secs(180),
        || async move {
            for (i, node) in c.nodes.iter().enumerate() {
                for n in &node.networks {
                    if c.peers(i, n.as_str()).await.ok()?.is_empty() {
                        return None;
                    }
                }
            }
            Some(())
        },
    )
    .await
    .expect("routing tables");
    eprintln!("all tables non-empty after {:?}", started.elapsed());

    // (a) 200 sampled pairs of the same network answer ping.
    let mut sample = Sample(0x5eed_cafe_f00d_0001);
    let mut pairs = Vec::new();
    while pairs.len() < 200 {
        let network = if sample.below(2) == 0 {
            "mainnet"
        } else {
            "testnet"
        };
        let m = members(&cluster, network);
        let (a, b) = (m[sample.below(m.len())], m[sample.below(m.len())]);
        if a != b {
            pairs.push((network, a, b));
        }
    }
    let mut failures = Vec::new();
    for chunk in pairs.chunks(25) {
        let results = join_all(chunk.iter().map(|(network, a, b)| {
            let c = &cluster;
            async move {
                let peer = c.nodes[*b].peer;
                let answer = c.call(*a, &peer, Some(network), CallCommand::Ping).await;
                (*network, *a, *b, answer)
            }
        }))
        .await;
        for (network, a, b, answer) in results {
            match answer {
                Ok(CallResult::Pong) => {}
                Ok(v) => failures.push(format!("{network}: {a} -> {b}: answered {v:?}")),
                Err(e) => failures.push(format!("{network}: {a} -> {b}: {e:#}")),
            }
        }
    }
    eprintln!("200 pings done after {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of 200 pings failed: {failures:#?}",
        failures.len()
    );

    // (b) No testnet-only peer in any mainnet-only node's routing table or FIND_NODE answer
    // (looking up a testnet peer's own id through mainnet is the query most likely to leak it).
    for &i in &mainnet_only {
        let table = cluster.peers(i, "mainnet").await.expect("peers");
        let leaked: Vec<&PeerId> = table.iter().filter(|p| testnet_ids.contains(p)).collect();
        assert!(
            leaked.is_empty(),
            "node {i} routes testnet peers {leaked:?}"
        );
        let target = cluster.nodes[testnet_only[sample.below(testnet_only.len())]].peer;
        let found = cluster.find(i, "mainnet", &target).await.expect("find");
        assert!(!found.is_empty(), "node {i}: a mainnet lookup found nobody");
        let leaked: Vec<&PeerId> = found.iter().filter(|p| testnet_ids.contains(p)).collect();
        assert!(
            leaked.is_empty(),
            "node {i}: mainnet FIND_NODE for {target} returned testnet peers {leaked:?}"
        );
    }
    // ... nor in their persisted address books.
    cluster.stop().await.expect("stop");
    for &i in &mainnet_only {
        let book = cluster.address_book(i).expect("address book");
        assert!(!book.is_empty(), "node {i} persisted an empty address book");
        for entry in book {
            let peer: PeerId = entry.peer.parse().unwrap();
            assert!(
                !testnet_ids.contains(&peer),
                "node {i}'s address book holds testnet peer {peer}"
            );
        }
    }
    eprintln!("done after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_memberships_close_the_gates_and_leave_every_routing_table() {
    let cluster = Cluster::start(ClusterSpec::segregated(&[("mainnet", 6)], 0))
        .await
        .expect("cluster");
    let c = &cluster;
    wait_for(
        "every node to route the five others",
        Duration::from_secs(60),
        || async move {
            for i in 0..c.nodes.len() {
                if c.peers(i, "mainnet").await.ok()?.len() < 5 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await
    .expect("routing tables");
    let last = cluster.nodes[5].peer;
    assert_eq!(
        cluster
            .call(0, &last, None, CallCommand::Ping)
            .await
            .expect("ping"),
        CallResult::Pong
    );

    // The harness issues 24-hour tokens: a day later every membership has ended.
    cluster.clock.advance(Duration::from_secs(25 * 3600));
    wait_for(
        "every routing table to empty",
        Duration::from_secs(30),
        || async move {
            for i in 0..c.nodes.len() {
                if !c.peers(i, "mainnet").await.ok()?.is_empty() {
                    return None;
                }
                let status = c.status(i).await.ok()?;
                if status.networks[0].state != "joining" || status.networks[0].verified_peers != 0 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await
    .expect("expiry");
    let refused = cluster.call(0, &last, None, CallCommand::Ping).await;
    assert!(
        refused.is_err(),
        "a call still went through after expiry: {refused:?}"
    );
}
