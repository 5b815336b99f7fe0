//! The audit trail of real daemons: security events are recorded with a hash chain, and
//! `node audit verify` / `seednode audit verify` catch an edited or removed line.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use cordon_tests::{Net, approve, node_peers, run, wait_for, wait_pending};

const JOIN: Duration = Duration::from_secs(60);

fn records(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn daemons_record_security_events_and_verify_catches_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let mut seed_daemon = net.start_seednode("mainnet");
    let seed = net.network("mainnet").clone();
    let mut node = net.start_node("a", &["mainnet"], &[]);
    let id = wait_pending(&seed.seed_data, "mainnet", &node.peer_id, JOIN);
    approve(&seed.seed_data, id);
    node.wait_state("mainnet", "member", JOIN);
    // The node then presents its new token to the seednode, which verifies it.
    wait_for(JOIN, "the seednode to route the new member", || {
        node_peers(&seed.seed_data, "mainnet")
            .contains(&node.peer_id)
            .then_some(())
    });
    node.daemon.stop();
    seed_daemon.stop();

    // The seednode recorded the request and the operator's approval; the node recorded the
    // seednode's verified delegation. No record carries token bytes.
    let seed_log = seed.seed_data.join("audit.log");
    let seed_records = records(&seed_log);
    let kinds: Vec<&str> = seed_records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"join_requested"), "{kinds:?}");
    assert!(kinds.contains(&"join_approved"), "{kinds:?}");
    assert!(kinds.contains(&"membership_verified"), "{kinds:?}");
    let requested = seed_records
        .iter()
        .find(|r| r["kind"] == "join_requested")
        .unwrap();
    assert_eq!(requested["peer"], node.peer_id.as_str());
    assert_eq!(requested["network"], "mainnet");
    let node_log = node.data.join("audit.log");
    let node_records = records(&node_log);
    assert!(
        node_records
            .iter()
            .any(|r| r["kind"] == "membership_verified" && r["peer"] == seed.seed_peer_id.as_str()),
        "{node_records:?}"
    );
    for r in seed_records.iter().chain(&node_records) {
        assert!(
            r.get("token").is_none(),
            "token bytes in an audit record: {r}"
        );
    }

    // Intact chains verify.
    let ok = run(
        "seednode",
        &[
            "audit",
            "verify",
            "--data",
            seed.seed_data.to_str().unwrap(),
        ],
    )
    .success();
    assert!(
        ok.stdout
            .contains(&format!("{} records", seed_records.len())),
        "{}",
        ok.stdout
    );
    run(
        "node",
        &["audit", "verify", "--data", node.data.to_str().unwrap()],
    )
    .success();

    // Editing one field of the first record is named as an edit of line 1.
    let text = std::fs::read_to_string(&seed_log).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert!(
        lines.len() >= 3,
        "need three records to tamper with, got {}",
        lines.len()
    );
    let original = lines[0].clone();
    lines[0] = original.replacen("mainnet", "mainnex", 1);
    assert_ne!(lines[0], original, "the first record names the network");
    std::fs::write(&seed_log, lines.join("\n") + "\n").unwrap();
    let broken = run(
        "seednode",
        &[
            "audit",
            "verify",
            "--data",
            seed.seed_data.to_str().unwrap(),
        ],
    )
    .failure();
    assert!(broken.stderr.contains("line 1"), "{}", broken.stderr);
    assert!(
        broken.stderr.contains("was changed after it was written"),
        "{}",
        broken.stderr
    );

    // Removing a record is caught too.
    lines[0] = original;
    lines.remove(1);
    std::fs::write(&seed_log, lines.join("\n") + "\n").unwrap();
    let broken = run(
        "seednode",
        &[
            "audit",
            "verify",
            "--data",
            seed.seed_data.to_str().unwrap(),
        ],
    )
    .failure();
    assert!(
        broken
            .stderr
            .contains("records are missing before this line"),
        "{}",
        broken.stderr
    );
}
