//! A seednode killed in the middle of an approval (issue 14, "Faults"), on both store back
//! ends: the fault-injection points `CORDON_FAULT=approve:before-commit` and
//! `approve:after-commit` (`cordon_seednode::fault`) abort the real binary just before and just
//! after the approval's transaction commits, so each test hits its side of the commit every
//! time instead of by lucky timing. After a restart without the variable, no request is lost
//! and no second token is ever issued.
//!
//! Why the assertions tell the two sides apart: a crash before the commit must leave the request
//! pending with no token (issued 0); a crash after it must leave it approved with exactly one
//! token (issued 1) that a second approval cannot duplicate. A point placed on the wrong side of
//! the commit turns one state into the other and fails the test; a point that never fires lets
//! the first `seednode approve` succeed and the seednode keep running, which fails both.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use cordon_seednode::fault::{FAULT_VAR, FaultPoint};
use cordon_seednode::pg_testing;
use cordon_tests::{
    Net, approve, cli, members, node_state, path_str, pending, wait_for, wait_pending,
};

const WAIT: Duration = Duration::from_secs(60);

/// SIGABRT, what `std::process::abort` ends the process with.
const SIGABRT: i32 = 6;

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

#[test]
fn sqlite_crash_before_approval_commit_keeps_the_request_pending() {
    crash_during_approval(Backend::Sqlite, FaultPoint::ApproveBeforeCommit);
}

#[test]
fn sqlite_crash_after_approval_commit_keeps_the_one_token() {
    crash_during_approval(Backend::Sqlite, FaultPoint::ApproveAfterCommit);
}

#[test]
fn postgres_crash_before_approval_commit_keeps_the_request_pending() {
    crash_during_approval(Backend::Postgres, FaultPoint::ApproveBeforeCommit);
}

#[test]
fn postgres_crash_after_approval_commit_keeps_the_one_token() {
    crash_during_approval(Backend::Postgres, FaultPoint::ApproveAfterCommit);
}

#[test]
fn an_unknown_fault_value_is_ignored_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let seed_data = net.network("mainnet").seed_data.clone();
    let hostile = "approve:before-commit\n$(reboot)%s%n\u{202e}";
    let mut seed = net.start_seednode_env("mainnet", &[], &[(FAULT_VAR, hostile)]);
    let node = net.start_node("n", &["mainnet"], &[]);
    let id = wait_pending(&seed_data, "mainnet", &node.peer_id, WAIT);
    approve(&seed_data, id);
    wait_for(WAIT, "the node to become a member", || {
        (node_state(&node.data, "mainnet").as_deref() == Some("member")).then_some(())
    });
    assert!(seed.is_running(), "{}", seed.stderr_tail(20));
    assert!(
        seed.stderr_log().contains("names no fault point; ignored"),
        "{}",
        seed.stderr_tail(20)
    );
}

fn crash_during_approval(backend: Backend, point: FaultPoint) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut extra = Vec::new();
    if let Backend::Postgres = backend {
        let options = runtime.block_on(pg_testing::fresh_database());
        extra = vec!["--store".to_owned(), options.url];
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let seed_data = net.network("mainnet").seed_data.clone();

    let mut seed = net.start_seednode_env("mainnet", &extra, &[(FAULT_VAR, point.name())]);
    let node = net.start_node("n", &["mainnet"], &[]);
    let id = wait_pending(&seed_data, "mainnet", &node.peer_id, WAIT);

    // The operator's approval reaches the fault point: the daemon dies without answering.
    let first = cli(
        "seednode",
        &[
            "approve",
            &id.to_string(),
            "--data",
            path_str(&seed_data),
            "--json",
        ],
    );
    assert!(
        !first.ok,
        "approve succeeded; the fault point was not hit: {}",
        first.stdout
    );
    let status = wait_for(WAIT, "the seednode to abort", || seed.exited());
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "the seednode ended by abort ({status}):\n{}",
        seed.stderr_tail(20)
    );
    let line = format!("aborting at fault point {}", point.name());
    assert!(
        seed.stderr_log().contains(&line),
        "{}",
        seed.stderr_tail(20)
    );

    // Restarted on the same data and store, without the fault.
    seed.clear_env();
    seed.restart();
    seed.wait_ready(WAIT, "the seednode to restart", || {
        cordon_tests::seednode_ready(&seed_data)
    })
    .unwrap_or_else(|e| panic!("seednode exited: {e}\n{}", seed.stderr_tail(40)));

    match point {
        FaultPoint::ApproveBeforeCommit => {
            // Nothing of the approval was committed: still pending, same id, no token.
            let waiting = pending(&seed_data);
            assert_eq!(waiting.len(), 1, "{waiting:?}");
            assert_eq!(waiting[0]["id"], id, "{waiting:?}");
            assert_eq!(waiting[0]["peer"], node.peer_id.as_str(), "{waiting:?}");
            assert!(members(&seed_data).is_empty());
            let counts = counts(&seed_data);
            assert_eq!(counts["issued"], 0, "{counts}");
            assert_eq!(counts["approved"], 0, "{counts}");
            assert_eq!(counts["pending"], 1, "{counts}");
            // So the operator approves again, and that is the one token.
            approve(&seed_data, id);
        }
        FaultPoint::ApproveAfterCommit => {
            // The approval and its token were committed before the crash, once.
            assert!(pending(&seed_data).is_empty());
            let counts = counts(&seed_data);
            assert_eq!(counts["issued"], 1, "{counts}");
            assert_eq!(counts["approved"], 1, "{counts}");
            assert_eq!(counts["pending"], 0, "{counts}");
            // Approving again is refused: no duplicate token.
            let again = cli(
                "seednode",
                &[
                    "approve",
                    &id.to_string(),
                    "--data",
                    path_str(&seed_data),
                    "--json",
                ],
            );
            assert!(!again.ok, "a second approval succeeded: {}", again.stdout);
            assert!(
                again.stderr.contains("already approved"),
                "{}",
                again.stderr
            );
        }
        _ => unreachable!("no test for {point:?}"),
    }
    let tokens = members(&seed_data);
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0]["peer"], node.peer_id.as_str(), "{tokens:?}");
    let token_id = tokens[0]["token_id"].clone();

    // The node gets that token (after the crash: at its next poll of the restarted seednode).
    wait_for(WAIT, "the node to become a member", || {
        (node_state(&node.data, "mainnet").as_deref() == Some("member")).then_some(())
    });
    let counts = wait_for(WAIT, "the token to be recorded as delivered", || {
        let counts = counts(&seed_data);
        (counts["delivered"] == 1).then_some(counts)
    });
    assert_eq!(counts["issued"], 1, "exactly one token, ever: {counts}");
    let tokens = members(&seed_data);
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0]["token_id"], token_id, "{tokens:?}");
}

/// The store counts of `seednode status --json` (`pending`, `approved`, `issued`, `delivered`,
/// ...).
fn counts(seed_data: &Path) -> serde_json::Value {
    let status = cli(
        "seednode",
        &["status", "--data", path_str(seed_data), "--json"],
    )
    .success()
    .json();
    status["service"]["counts"].clone()
}
