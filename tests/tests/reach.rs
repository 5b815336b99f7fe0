//! Reaching a member by PeerId alone, against real processes on loopback: `node find` looks a
//! peer up through the network's members (Kademlia), and `node call` reaches a member that is
//! neither connected nor in the caller's routing table the same way.
//!
//! The members run with two entries per Kademlia bucket (`kad_bucket_size = 2`), so their tables
//! hold only part of the network, and connections close after two idle seconds, so a member is
//! not simply connected to everyone. The seednode is stopped once everyone joined: every lookup
//! goes through members.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cordon_tests::{
    Daemon, Net, Network, Node, cli, path_str, revoke_peer, wait_pending, wait_until,
};
use libp2p::PeerId;
use libp2p::kad::KBucketKey;
use serde_json::Value;

/// How long a join (request, approval, delivery) may take.
const JOIN: Duration = Duration::from_secs(60);
/// How long the members' tables may take to fill.
const SETTLE: Duration = Duration::from_secs(90);
/// Members in the network.
const MEMBERS: usize = 10;

const SMALL_TABLES: &str = "[limits]\nkad_bucket_size = 2\nidle_timeout = \"2s\"\n";

/// `node find --data <from> --json <peer>`: (exit ok, the printed result, stderr).
fn find(from: &Node, peer: &str) -> (bool, Value, String) {
    let run = cli(
        "node",
        &["find", "--data", path_str(&from.data), "--json", peer],
    );
    eprintln!(
        "[{}] node find {peer}: ok={} stdout={} stderr={}",
        from.label, run.ok, run.stdout, run.stderr
    );
    let json = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    (run.ok, json, run.stderr)
}

/// `node call --data <from> <peer> ping`.
fn ping(from: &Node, peer: &str) -> cordon_tests::Run {
    let run = cli(
        "node",
        &["call", "--data", path_str(&from.data), peer, "ping"],
    );
    eprintln!(
        "[{}] node call {peer} ping: ok={} stdout={:?} stderr={:?}",
        from.label, run.ok, run.stdout, run.stderr
    );
    run
}

/// Starts `count` mainnet members running with the node config `config` (written under
/// `dir`), approves each at `seed` and waits until all are members.
fn approved_members(
    net: &Net,
    seed: &Network,
    dir: &std::path::Path,
    config: &str,
    count: usize,
) -> Vec<Node> {
    let path = dir.join("members.toml");
    std::fs::write(&path, config).unwrap();
    let members: Vec<Node> = (0..count)
        .map(|i| {
            net.start_node(
                &format!("m{i}"),
                &["mainnet"],
                &["--config", path_str(&path)],
            )
        })
        .collect();
    for m in &members {
        let id = wait_pending(&seed.seed_data, "mainnet", &m.peer_id, JOIN);
        cordon_tests::approve(&seed.seed_data, id);
    }
    for m in &members {
        m.wait_state("mainnet", "member", JOIN);
    }
    members
}

/// A mainnet with an approval policy in `dir`, and its seednode running.
fn mainnet(dir: &std::path::Path) -> (Net, Daemon, Network) {
    let mut net = Net::builder(dir).network("mainnet", "approval").build();
    let daemon = net.start_seednode("mainnet");
    let seed = net.network("mainnet").clone();
    (net, daemon, seed)
}

/// Each member's live connections, as `node status` shows them.
fn connections(members: &[Node]) -> Vec<u64> {
    members
        .iter()
        .map(|m| m.status()["connections"].as_u64().unwrap())
        .collect()
}

/// Each member's routing table (members only: the seednode is left out).
fn tables(members: &[Node], seed: &str) -> BTreeMap<String, BTreeSet<String>> {
    members
        .iter()
        .map(|m| {
            let mut table = m.peers("mainnet");
            table.remove(seed);
            (m.peer_id.clone(), table)
        })
        .collect()
}

/// The most entries any one Kademlia bucket of `owner`'s table holds (a bucket is the peers at
/// one log2 XOR distance from the owner's key).
fn fullest_bucket(owner: &str, table: &BTreeSet<String>) -> usize {
    let key = |peer: &str| KBucketKey::from(peer.parse::<PeerId>().expect("a PeerId"));
    let own = key(owner);
    let mut buckets: BTreeMap<Option<u32>, usize> = BTreeMap::new();
    for peer in table {
        *buckets.entry(own.distance(&key(peer)).ilog2()).or_default() += 1;
    }
    buckets.values().copied().max().unwrap_or(0)
}

/// (caller, target) pairs where the target is in some other member's table but not in the
/// caller's.
fn pairs_outside_tables(
    members: &[Node],
    tables: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for (a, caller) in members.iter().enumerate() {
        for (t, target) in members.iter().enumerate() {
            let known_elsewhere = tables
                .iter()
                .any(|(owner, table)| owner != &caller.peer_id && table.contains(&target.peer_id));
            if a != t && !tables[&caller.peer_id].contains(&target.peer_id) && known_elsewhere {
                pairs.push((a, t));
            }
        }
    }
    pairs
}

#[test]
fn a_member_outside_the_callers_table_is_found_through_members_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (net, mut seed_daemon, seed) = mainnet(dir.path());
    let members = approved_members(&net, &seed, dir.path(), SMALL_TABLES, MEMBERS);
    // Tables settle: every member routes at least two others, none routes them all (two
    // entries per bucket), and every member is in someone's table.
    let tables = wait_until(SETTLE, "the members' tables to settle", || {
        let tables = tables(&members, &seed.seed_peer_id);
        let sizes: Vec<usize> = tables.values().map(BTreeSet::len).collect();
        let known: BTreeSet<&String> = tables.values().flatten().collect();
        if sizes.iter().all(|&n| n >= 2) && known.len() == MEMBERS {
            Ok(tables)
        } else {
            Err(format!(
                "table sizes {sizes:?}, {} members known",
                known.len()
            ))
        }
    });
    let sizes: Vec<usize> = tables.values().map(BTreeSet::len).collect();
    eprintln!("table sizes with two entries per bucket: {sizes:?}");
    // The configured bucket size holds: no bucket of any table has more than two entries. (A
    // table may still hold every other member when their distances spread over enough buckets,
    // so the table's size alone proves nothing.)
    for (owner, table) in &tables {
        let fullest = fullest_bucket(owner, table);
        assert!(
            fullest <= 2,
            "a bucket of {owner}'s table holds {fullest} entries: {table:?}"
        );
    }
    seed_daemon.stop();

    let pairs = pairs_outside_tables(&members, &tables);
    assert!(
        pairs.len() >= 2,
        "some member is outside some caller's table: {tables:?}"
    );

    // A call to a member outside the caller's table, with no seednode running: pong.
    let (a, t) = pairs[0];
    let run = ping(&members[a], &members[t].peer_id);
    assert!(run.ok, "the call reached the member: {}", run.stderr);
    assert_eq!(run.stdout.trim(), "pong");

    // `node find` of another such member: found through members, at least two hops. Tables
    // keep changing (the call above connected its caller, the stopped seednode's entries
    // leave), so the pair comes from the tables as they are now, and a target that entered
    // its caller's table before the lookup began is not the case under test: try another.
    let mut outside = None;
    for attempt in 1..=5 {
        let now = crate::tables(&members, &seed.seed_peer_id);
        let fresh = pairs_outside_tables(&members, &now);
        let Some(&(a, t)) = fresh.iter().find(|p| **p != pairs[0]).or(fresh.first()) else {
            eprintln!("attempt {attempt}: every member is in every caller's table now");
            continue;
        };
        let (ok, found, stderr) = find(&members[a], &members[t].peer_id);
        assert!(ok, "node find succeeded: {stderr}");
        if found["in_table"] == false {
            outside = Some((t, found));
            break;
        }
        eprintln!("attempt {attempt}: the target entered the caller's table first");
    }
    let (t, found) = outside.expect("a lookup of a member outside the caller's table");
    assert_eq!(found["found"], true, "{found}");
    assert_eq!(found["network"], "mainnet", "{found}");
    assert_eq!(found["in_table"], false, "{found}");
    assert!(found["min_hops"].as_u64().unwrap() >= 2, "{found}");
    // The lookup asked at least one member besides the peer itself, and the peer answered.
    assert!(found["answered"].as_u64().unwrap() >= 2, "{found}");
    let addrs: Vec<&str> = found["addrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        addrs.iter().any(|a| a.starts_with("/ip4/127.0.0.1/tcp/")),
        "the lookup found where the peer listens: {found}"
    );
    let closest: Vec<&str> = found["closest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        closest.first(),
        Some(&members[t].peer_id.as_str()),
        "{found}"
    );
    assert!(
        !closest.contains(&seed.seed_peer_id.as_str()),
        "the stopped seednode answered nothing: {found}"
    );

    // An unknown PeerId: the lookup ends, and both commands say it was not found (not that the
    // call timed out).
    let stranger = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_string();
    let (ok, found, stderr) = find(&members[0], &stranger);
    assert!(!ok, "node find of an unknown peer fails");
    assert_eq!(found["found"], false, "{found}");
    assert!(stderr.contains("not found:"), "{stderr}");
    let run = ping(&members[0], &stranger);
    assert!(!run.ok, "a call to an unknown peer fails");
    assert!(
        run.stderr.contains("not found:") && run.stderr.contains("members of mainnet"),
        "the call names the failed lookup: {}",
        run.stderr
    );
}

/// Discovery that would not run again for an hour: only the announce can make a new member
/// known.
const NO_DISCOVERY: &str =
    "[limits]\ndiscovery_interval = \"1h\"\nmax_discovery_interval = \"1h\"\n";

#[test]
fn a_member_approved_into_a_running_network_announces_itself_to_the_members() {
    let dir = tempfile::tempdir().unwrap();
    let (net, _seed_daemon, seed) = mainnet(dir.path());
    let config = dir.path().join("no-discovery.toml");
    std::fs::write(&config, NO_DISCOVERY).unwrap();
    // Members join one after another, each approved while the others already run. A node routes
    // its seednode before it is a member (while its request is pending), so nothing new enters
    // its table when its token arrives: unless it looks itself up then, no member learns of it
    // before its next discovery, an hour away.
    let mut members: Vec<Node> = Vec::new();
    for i in 0..4 {
        let m = net.start_node(
            &format!("m{i}"),
            &["mainnet"],
            &["--config", path_str(&config)],
        );
        let id = wait_pending(&seed.seed_data, "mainnet", &m.peer_id, JOIN);
        // The operator takes a moment: whatever the node did on routing its seednode is over.
        std::thread::sleep(Duration::from_secs(2));
        cordon_tests::approve(&seed.seed_data, id);
        m.wait_state("mainnet", "member", JOIN);
        if let Some(first) = members.first() {
            let newcomer = m.peer_id.clone();
            wait_until(
                Duration::from_secs(30),
                "an earlier member to route the newcomer",
                || {
                    let routes: Vec<&str> = members
                        .iter()
                        .filter(|e| e.peers("mainnet").contains(&newcomer))
                        .map(|e| e.label.as_str())
                        .collect();
                    if routes.is_empty() {
                        Err(format!(
                            "no member routes {newcomer}; {} routes {:?}",
                            first.label,
                            first.peers("mainnet")
                        ))
                    } else {
                        Ok(())
                    }
                },
            );
            // And it is callable from there by PeerId.
            let run = ping(first, &m.peer_id);
            assert!(
                run.ok,
                "the first member reached the newcomer: {}",
                run.stderr
            );
            assert_eq!(run.stdout.trim(), "pong");
        }
        members.push(m);
    }
}

/// Connections close two seconds after their last stream, each member keeps one connection per
/// bucket of its table, the connection budget is one peer (so only kept connections, ours or
/// the peer's, are spared), and discovery would not run again for an hour.
const KEPT: &str = "[limits]\nidle_timeout = \"2s\"\nkeep_per_bucket = 1\n\
connection_budget = 1\ndiscovery_interval = \"1h\"\nmax_discovery_interval = \"1h\"\n";

/// Revoked ids `node` holds for mainnet.
fn revoked_ids(node: &Node) -> u64 {
    cordon_tests::network_status(&node.status(), "mainnet")
        .and_then(|n| n["revoked_ids"].as_u64())
        .unwrap_or(0)
}

#[test]
fn kept_connections_outlive_the_idle_timeout_and_the_budget_and_a_revocation_still_reaches_every_member()
 {
    let dir = tempfile::tempdir().unwrap();
    let (net, _seed_daemon, seed) = mainnet(dir.path());
    let members = approved_members(&net, &seed, dir.path(), KEPT, 6);
    wait_until(SETTLE, "every member to route another member", || {
        let tables = tables(&members, &seed.seed_peer_id);
        let sizes: Vec<usize> = tables.values().map(BTreeSet::len).collect();
        if sizes.iter().all(|&n| n >= 1) {
            Ok(())
        } else {
            Err(format!("table sizes {sizes:?}"))
        }
    });
    // Four idle timeouts with nothing asked of anyone: only kept connections are left, and
    // every member still has one.
    std::thread::sleep(Duration::from_secs(8));
    let connections = connections(&members);
    eprintln!("connections after 8 idle seconds: {connections:?}");
    assert!(
        connections.iter().all(|&c| c >= 1),
        "every member keeps a connection past the idle timeout: {connections:?}"
    );

    // While idle connections close, a revocation still reaches every other member (with no
    // discovery running): pushed over kept connections, or pulled by a member that had none left
    // when it redials its seednode.
    let (revoked, others) = members.split_last().unwrap();
    revoke_peer(&seed.seed_data, &revoked.peer_id);
    for m in others {
        wait_until(
            Duration::from_secs(20),
            &format!("{} to hold the revocation", m.label),
            || match revoked_ids(m) {
                0 => Err(format!("{} holds no revoked id", m.label)),
                _ => Ok(()),
            },
        );
        assert!(
            !m.peers("mainnet").contains(&revoked.peer_id),
            "{} no longer routes the revoked member",
            m.label
        );
    }
}

/// A budget of two connected peers, nothing kept by either end, and a one-second grace; idle
/// connections alone would stay open for the default two minutes.
const BUDGET: &str =
    "[limits]\nconnection_budget = 2\nkeep_per_bucket = 0\nrequest_timeout = \"1s\"\n";

#[test]
fn over_its_connection_budget_a_member_closes_spare_connections_and_still_reaches_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let (net, _seed_daemon, seed) = mainnet(dir.path());
    let members = approved_members(&net, &seed, dir.path(), BUDGET, 8);
    let formed = wait_until(SETTLE, "every member to route another member", || {
        let tables = tables(&members, &seed.seed_peer_id);
        let sizes: Vec<usize> = tables.values().map(BTreeSet::len).collect();
        if sizes.iter().all(|&n| n >= 2) {
            Ok(connections(&members))
        } else {
            Err(format!("table sizes {sizes:?}"))
        }
    });
    eprintln!("connections once the tables formed: {formed:?}");
    assert!(
        formed.iter().any(|&c| c > 2),
        "the network's forming connects members past the budget: {formed:?}"
    );
    // The idle timeout is two minutes: only the budget brings the connections down this soon.
    let within = wait_until(
        Duration::from_secs(45),
        "every member within its budget",
        || {
            let now = connections(&members);
            if now.iter().all(|&c| c <= 2) {
                Ok(now)
            } else {
                Err(format!("connections {now:?}"))
            }
        },
    );
    eprintln!("connections within the budget: {within:?}");

    // Spare connections closed, every member is still reached: found, dialed, proven, called.
    let (caller, others) = members.split_first().unwrap();
    for target in others {
        let run = ping(caller, &target.peer_id);
        assert!(run.ok && run.stdout.contains("pong"), "{run:?}");
    }
}

/// A seednode that can hold four connections, keeps none of its own choice, and holds one once
/// the others are idle (a one-second grace).
const SEED_CAPPED: &str = "[limits]\nmax_connections = 4\nconnection_budget = 1\n\
keep_per_bucket = 0\nrequest_timeout = \"1s\"\nidle_timeout = \"2s\"\n";

/// Members that keep a connection per bucket, close other connections after two idle seconds
/// (so their seednode is often the one verified peer they have when they choose), and retry a
/// refused join soon.
const KEEPING: &str = "[limits]\nkeep_per_bucket = 1\nidle_timeout = \"2s\"\n\
max_join_backoff = \"3s\"\n";

#[test]
fn members_do_not_keep_their_seednode_so_a_seednode_at_its_connection_cap_still_admits_joiners() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let seed_config = dir.path().join("seed.toml");
    std::fs::write(&seed_config, SEED_CAPPED).unwrap();
    let _seed_daemon = net.start_seednode_with("mainnet", &["--config", path_str(&seed_config)]);
    let seed = net.network("mainnet").clone();
    // Three members take three of the seednode's four connections; once they route each other,
    // they keep connections to members, and the seednode's budget closes theirs to it.
    let first = approved_members(&net, &seed, dir.path(), KEEPING, 3);
    wait_until(SETTLE, "every member to route another member", || {
        let sizes: Vec<usize> = tables(&first, &seed.seed_peer_id)
            .values()
            .map(BTreeSet::len)
            .collect();
        if sizes.iter().all(|&n| n >= 1) {
            Ok(())
        } else {
            Err(format!("table sizes {sizes:?}"))
        }
    });
    // No member keeps its seednode once it keeps members: the seednode's budget closes their
    // connections (when each kept it, all three stayed open for good).
    let held = wait_until(
        Duration::from_secs(30),
        "the seednode to close spare member connections down to its budget",
        || {
            let held = cordon_tests::node_status(&seed.seed_data)["connections"]
                .as_u64()
                .unwrap_or(u64::MAX);
            if held <= 1 {
                Ok(held)
            } else {
                Err(format!("the seednode holds {held} connections"))
            }
        },
    );
    eprintln!("seednode connections once the members keep each other: {held}");
    // Newcomers need a connection to the seednode to ask to join: were the members keeping
    // theirs, they would queue for the one slot left.
    let path = dir.path().join("members.toml");
    let later: Vec<Node> = (3..6)
        .map(|i| {
            net.start_node(
                &format!("m{i}"),
                &["mainnet"],
                &["--config", path_str(&path)],
            )
        })
        .collect();
    for m in &later {
        let id = wait_pending(
            &seed.seed_data,
            "mainnet",
            &m.peer_id,
            Duration::from_secs(60),
        );
        cordon_tests::approve(&seed.seed_data, id);
        m.wait_state("mainnet", "member", JOIN);
    }
}
