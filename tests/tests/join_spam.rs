//! Join spam against a seednode (issue 11, item 6, in part), with real processes: 300 fresh
//! identities file join requests labelled `flood`; the operator clears them in one command
//! (`seednode deny --label flood`) while a real node's request, filed among them, stays pending
//! and is approved afterwards.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use cordon_tests::{Net, approve, cli, path_str, pending, wait_pending, wait_until};

const JOIN: Duration = Duration::from_secs(60);

#[test]
fn an_operator_denies_a_flood_of_join_requests_in_one_command_and_keeps_the_real_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let _seed = net.start_seednode("mainnet");
    let seed = net.network("mainnet").clone();
    let node = net.start_node("laptop", &["mainnet"], &[]);
    wait_pending(&seed.seed_data, "mainnet", &node.peer_id, JOIN);

    // 300 throwaway identities, one join request each, labelled "flood".
    cordon_tests::join_flood(&seed.bootstrap(), 300, 1);
    let spam = wait_until(JOIN, "the flood's requests to be pending", || {
        let n = pending(&seed.seed_data)
            .iter()
            .filter(|r| r["label"] == "flood")
            .count();
        if n == 300 {
            Ok(n)
        } else {
            Err(format!("{n} of 300"))
        }
    });

    // Nothing to match: an error-free no-op.
    let none = cli(
        "seednode",
        &[
            "deny",
            "--label",
            "nobody",
            "--data",
            path_str(&seed.seed_data),
        ],
    )
    .success();
    assert!(none.stdout.contains("nothing denied"), "{}", none.stdout);

    let denied = cli(
        "seednode",
        &[
            "deny",
            "--label",
            "flood",
            "--network",
            "mainnet",
            "--reason",
            "spam",
            "--data",
            path_str(&seed.seed_data),
            "--json",
        ],
    )
    .success()
    .json();
    let denied = denied.as_array().unwrap();
    assert_eq!(denied.len(), spam);
    assert!(
        denied
            .iter()
            .all(|r| r["status"] == "denied" && r["label"] == "flood")
    );
    let left = pending(&seed.seed_data);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["peer"], node.peer_id.as_str());

    // Each bulk denial is an operator decision in the seednode's audit log.
    let audited = std::fs::read_to_string(seed.seed_data.join("audit.log"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"join_denied\"") && l.contains("by operator (bulk)"))
        .count();
    assert_eq!(audited, spam);

    let id = left[0]["id"].as_i64().unwrap();
    approve(&seed.seed_data, id);
    node.wait_state("mainnet", "member", JOIN);
}

/// Issue 11, item 6, in part: 300 throwaway identities fill a network's queue (capped at 300
/// here); a real node is refused `queue_full` meanwhile, and gets its request queued once the
/// flood's requests are older than `pending_ttl` (8 s here), with no operator action.
#[test]
fn a_queue_filled_by_a_flood_frees_itself_when_the_requests_expire() {
    let dir = tempfile::tempdir().unwrap();
    let net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let seed = net.network("mainnet").clone();
    let config = dir.path().join("seednode.toml");
    std::fs::write(
        &config,
        "[seednode.store]\nmax_pending_per_network = 300\npending_ttl = \"8s\"\n",
    )
    .unwrap();
    let listen = format!("/ip4/127.0.0.1/tcp/{}", seed.port);
    let mut daemon = cordon_tests::Daemon::spawn(
        "seed",
        "seednode",
        &[
            "run",
            "--config",
            path_str(&config),
            "--data",
            path_str(&seed.seed_data),
            "--networks",
            path_str(&net.descriptor),
            "--delegation",
            path_str(&seed.delegation),
            "--listen",
            &listen,
        ],
        &net.logs,
    );
    daemon
        .wait_ready(JOIN, "the seednode to start", || {
            cordon_tests::seednode_ready(&seed.seed_data)
        })
        .unwrap_or_else(|s| panic!("seednode exited ({s}):\n{}", daemon.stderr_tail(40)));

    cordon_tests::join_flood(&seed.bootstrap(), 300, 1);
    wait_until(JOIN, "the flood to fill the queue", || {
        let n = pending(&seed.seed_data).len();
        if n == 300 {
            Ok(())
        } else {
            Err(format!("{n} pending"))
        }
    });

    // The real node cannot queue now...
    let node = net.start_node("late", &["mainnet"], &[]);
    wait_until(JOIN, "the node to be refused queue_full", || {
        let log = node.daemon.stderr_log();
        if log.contains("queue_full") {
            Ok(())
        } else {
            Err("no queue_full denial yet".to_owned())
        }
    });
    assert!(
        !pending(&seed.seed_data)
            .iter()
            .any(|r| r["peer"] == node.peer_id.as_str())
    );
    // ... and can once the flood's requests expired: it retries by itself.
    let id = wait_pending(&seed.seed_data, "mainnet", &node.peer_id, JOIN);
    let left = pending(&seed.seed_data);
    assert_eq!(
        left.len(),
        1,
        "the flood's requests are still pending: {}",
        left.len()
    );
    approve(&seed.seed_data, id);
    node.wait_state("mainnet", "member", JOIN);
}

/// Issue 11, item 6: 1,001 fresh identities, one join request each, from 253 loopback
/// addresses (127.0.0.2 to 127.0.0.254; only 127.0.0.1 is exempt from per-address limits by
/// default), about four per address.
/// Before the per-source quotas every request was queued: 1,000 filled mainnet's queue and a
/// real node started afterwards could not get its request queued. Now each source address and
/// prefix has a quota of join requests; past it a request is refused, audited, and counts
/// toward the address's ban: the flood queues a bounded few and the real node's request is
/// queued.
#[test]
fn fresh_identities_from_other_addresses_cannot_fill_the_join_queue() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let _seed = net.start_seednode("mainnet");
    let seed = net.network("mainnet").clone();

    let summary =
        cordon_tests::join_flood_from(&seed.bootstrap(), 1001, 1, Some("127.0.0.2-127.0.0.254"));
    // Wait for the seednode to settle: the flood's last answered requests are recorded.
    std::thread::sleep(Duration::from_secs(2));
    let queued = pending(&seed.seed_data)
        .iter()
        .filter(|r| r["label"] == "flood")
        .count();
    eprintln!("flood summary: {summary}; queued: {queued}");
    // The prefix quota is 64 (burst) plus one every 2 s while the flood lasts.
    let secs = summary["secs"].as_f64().unwrap_or(0.0);
    let bound = 64 + (secs / 2.0).ceil() as usize + 1;
    assert!(
        queued <= bound,
        "{queued} flood requests queued; the quotas allow at most {bound}"
    );
    // The flood reached the seednode: some of its requests were queued, and more were
    // answered than queued (the rest were refused past the quotas).
    let answered = summary["answered"].as_u64().unwrap_or(0) as usize;
    assert!(
        queued > 0 && answered > queued,
        "{queued} queued of {answered} answered: the flood did not reach the quotas"
    );

    let node = net.start_node("laptop", &["mainnet"], &[]);
    wait_pending(&seed.seed_data, "mainnet", &node.peer_id, JOIN);
}

/// Status polls used to reach the join service without any quota: each costs a store read and
/// a place among the messages the service is answering, and fresh identities cost nothing. 40
/// throwaway identities on two addresses send 100 polls each; the seednode answers no more of
/// them than the poll quotas allow (per address, and per prefix for both together), the
/// flooders are cut off (within `ban_threshold` refusals of their address), and a real node's
/// request, filed from another address of the same
/// prefix before the flood, is approved and delivered afterwards.
#[test]
fn a_flood_of_status_polls_is_held_to_its_quota_and_a_real_join_still_completes() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let _seed = net.start_seednode("mainnet");
    let seed = net.network("mainnet").clone();
    let node = net.start_node("laptop", &["mainnet"], &[]);
    let id = wait_pending(&seed.seed_data, "mainnet", &node.peer_id, JOIN);

    let summary =
        cordon_tests::poll_flood_from(&seed.bootstrap(), 40, 100, Some("127.0.0.9-127.0.0.10"));
    eprintln!("poll flood summary: {summary}");
    let sent = summary["join_sent"].as_u64().unwrap_or(0);
    let served = summary["join_served"].as_u64().unwrap_or(0);
    let answered = summary["answered"].as_u64().unwrap_or(0);
    let secs = summary["secs"].as_f64().unwrap_or(0.0);
    // Default poll quotas: per address burst 32 at 4/s (two addresses here), per prefix burst
    // 128 at 16/s; the smaller bound holds.
    let per_address = 2.0 * (32.0 + 4.0 * secs);
    let per_prefix = 128.0 + 16.0 * secs;
    let bound = per_address.min(per_prefix).ceil() as u64 + 2;
    assert!(
        served <= bound,
        "the join service answered {served} of {sent} polls in {secs:.1} s; the quotas allow \
         at most {bound}"
    );
    // The flood was real: connected clients sent more than the quotas allow, and the seednode
    // cut them off (refusals past the quota count toward the address's ban).
    let established = summary["established"].as_u64().unwrap_or(0);
    let cut_off = summary["closed_by_node"].as_u64().unwrap_or(0);
    assert!(
        established > 0 && sent > bound && cut_off > 0,
        "the flood did not reach the quotas: {established} clients connected, {sent} polls \
         sent ({answered} answered), {cut_off} cut off"
    );

    // The operator still works, and the real request is approved and delivered.
    assert!(
        pending(&seed.seed_data)
            .iter()
            .any(|r| r["peer"] == node.peer_id.as_str()),
        "the real request is still pending"
    );
    approve(&seed.seed_data, id);
    node.wait_state("mainnet", "member", JOIN);
}
