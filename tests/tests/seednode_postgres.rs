//! The seednode's state in PostgreSQL (a real server, started by
//! `cordon_seednode::pg_testing`): `seednode run --store URL` keeps it there across a restart,
//! `seednode store migrate` moves an SQLite store there, and two seednodes of one network
//! sharing the database serve each other's requests, approvals and revocations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cordon_seednode::pg_testing;
use cordon_tests::{
    Net, approve, cli, members, node_peers, node_state, path_str, pending, wait_for, wait_pending,
    wait_until,
};

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn a_seednode_keeps_its_state_in_postgres_across_a_restart() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let options = runtime.block_on(pg_testing::fresh_database());
    let database = options.url.rsplit('/').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let seed_data = net.network("mainnet").seed_data.clone();

    // A url with a password is refused before anything starts, without echoing it.
    let refused = cli(
        "seednode",
        &[
            "run",
            "--check",
            "--data",
            path_str(&seed_data),
            "--networks",
            path_str(&net.descriptor),
            "--delegation",
            path_str(&net.network("mainnet").delegation),
            "--store",
            "postgres://postgres:hunter2@127.0.0.1/x",
        ],
    );
    assert!(!refused.ok, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("password_file"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("hunter2"), "{}", refused.stderr);

    let mut seed = net.start_seednode_with("mainnet", &["--store", &options.url]);
    let node = net.start_node("n", &["mainnet"], &[]);
    let id = wait_pending(&seed_data, "mainnet", &node.peer_id, WAIT);
    let rows: i64 = runtime.block_on(async {
        let server = pg_testing::server();
        let db = pg_testing::admin(server, &database).await;
        db.query_one(
            "SELECT COUNT(*) FROM join_requests WHERE status = 'pending'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
    });
    assert_eq!(rows, 1, "the request is in PostgreSQL");
    assert!(
        !seed_data.join("seednode.db").exists(),
        "no SQLite database is created beside it"
    );

    // Restarted, the seednode finds the request in the database and delivers its approval.
    seed.stop();
    seed.restart();
    seed.wait_ready(WAIT, "the seednode to restart", || {
        cordon_tests::seednode_ready(&seed_data)
    })
    .unwrap_or_else(|e| panic!("seednode exited: {e}\n{}", seed.stderr_tail(40)));
    approve(&seed_data, id);
    wait_for(WAIT, "the node to become a member", || {
        (node_state(&node.data, "mainnet").as_deref() == Some("member")).then_some(())
    });
    assert_eq!(members(&seed_data).len(), 1);
}

#[test]
fn store_migrate_moves_a_sqlite_seednode_into_postgres_without_losing_a_row() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let options = runtime.block_on(pg_testing::fresh_database());
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let seed_data = net.network("mainnet").seed_data.clone();
    let database_file = seed_data.join("seednode.db");

    // A seednode on SQLite: one node approved and a member, one still pending.
    let mut seed = net.start_seednode("mainnet");
    let member = net.start_node("member", &["mainnet"], &[]);
    let id = wait_pending(&seed_data, "mainnet", &member.peer_id, WAIT);
    approve(&seed_data, id);
    wait_for(WAIT, "the approved node to become a member", || {
        (node_state(&member.data, "mainnet").as_deref() == Some("member")).then_some(())
    });
    // A third member, stopped, then revoked: a revocation and a revocation version to carry.
    let mut gone = net.start_node("gone", &["mainnet"], &[]);
    let gone_id = wait_pending(&seed_data, "mainnet", &gone.peer_id, WAIT);
    approve(&seed_data, gone_id);
    wait_for(WAIT, "the third node to become a member", || {
        (node_state(&gone.data, "mainnet").as_deref() == Some("member")).then_some(())
    });
    gone.kill9();
    let revoked = cli(
        "seednode",
        &[
            "revoke",
            "--peer",
            &gone.peer_id,
            "--data",
            path_str(&seed_data),
            "--json",
        ],
    )
    .success()
    .json();
    assert_eq!(revoked["revoked"].as_array().unwrap().len(), 1, "{revoked}");
    let waiting = net.start_node("waiting", &["mainnet"], &[]);
    let waiting_id = wait_pending(&seed_data, "mainnet", &waiting.peer_id, WAIT);
    let members_before = members(&seed_data);
    let pending_before = pending(&seed_data);
    let service_before = service_status(&seed_data);
    assert_eq!(members_before.len(), 1);
    assert_eq!(pending_before.len(), 1);
    assert_eq!(service_before["revocation_version"], 1, "{service_before}");

    let from = format!("sqlite:{}", path_str(&database_file));
    let migrate = |json: bool| {
        let mut args = vec!["store", "migrate", "--from", &from, "--to", &options.url];
        if json {
            args.push("--json");
        }
        cli("seednode", &args)
    };
    // While the seednode runs, the copy is refused: it would miss what the seednode does next.
    let refused = migrate(true);
    assert!(!refused.ok, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("stop it first"),
        "{}",
        refused.stderr
    );

    seed.stop();
    let summary = migrate(true).success().json();
    assert_eq!(summary["requests"], 3, "{summary}");
    assert_eq!(summary["pending"], 1, "{summary}");
    assert_eq!(summary["approved"], 2, "{summary}");
    assert_eq!(summary["tokens"], 2, "{summary}");
    assert_eq!(summary["revoked_tokens"], 1, "{summary}");
    assert_eq!(summary["revocations"], 1, "{summary}");
    assert_eq!(summary["revocation_version"], 1, "{summary}");
    // The target now holds the data: a second copy is refused with what it holds.
    let again = migrate(false);
    assert!(!again.ok, "{}", again.stdout);
    assert!(
        again.stderr.contains("already holds seednode data"),
        "{}",
        again.stderr
    );

    // The seednode restarted on PostgreSQL lists the same members and requests, ids included.
    std::fs::remove_file(&database_file).unwrap();
    let _seed = net.start_seednode_with("mainnet", &["--store", &options.url]);
    assert_eq!(members(&seed_data), members_before);
    assert_eq!(pending(&seed_data), pending_before);
    assert!(
        !database_file.exists(),
        "the seednode did not fall back to SQLite"
    );
    // The copied pending request is approved through PostgreSQL and delivered.
    approve(&seed_data, waiting_id);
    wait_for(WAIT, "the waiting node to become a member", || {
        (node_state(&waiting.data, "mainnet").as_deref() == Some("member")).then_some(())
    });
    // Its token is the first issued through PostgreSQL: its id follows the copied ones.
    let after = members(&seed_data);
    assert_eq!(after.len(), 2, "{after:?}");
    let new_token = after.iter().find(|m| m["peer"] == waiting.peer_id.as_str());
    assert_eq!(new_token.unwrap()["token_id"], 3, "{after:?}");
}

/// The join service's part of `seednode status --data D --json` (store counts, revocation
/// version, networks).
fn service_status(seed_data: &std::path::Path) -> serde_json::Value {
    let status = cli(
        "seednode",
        &["status", "--data", path_str(seed_data), "--json"],
    )
    .success()
    .json();
    status["service"].clone()
}

#[test]
fn two_seednodes_on_one_database_share_requests_approvals_and_counts() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let options = runtime.block_on(pg_testing::fresh_database());
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let b = net.add_seednode("mainnet", "seed-b");
    let a_data = net.network("mainnet").seed_data.clone();
    let _a = net.start_seednode_with("mainnet", &["--store", &options.url]);
    let b_daemon = net.start_extra_seednode(&b, &["--store", &options.url]);

    // The node knows only A (the descriptor's one bootstrap) and files its request there.
    let node = net.start_node("n", &["mainnet"], &[]);
    let id = wait_pending(&b.data, "mainnet", &node.peer_id, WAIT);
    assert_eq!(
        pending(&a_data),
        pending(&b.data),
        "A and B list the same queue"
    );
    assert!(
        !node_peers(&node.data, "mainnet").contains(&b.peer_id),
        "the node is not connected to B"
    );

    // Approved through B's CLI, the token reaches the node through A (its next poll).
    approve(&b.data, id);
    wait_for(WAIT, "the node to become a member", || {
        (node_state(&node.data, "mainnet").as_deref() == Some("member")).then_some(())
    });
    // Once a member, the node meets B too (members find each other); the token had come
    // before that, so through A.
    let log = node.daemon.stderr_log();
    let approved_at = log
        .find("join approved")
        .expect("the node logs its approval");
    assert!(
        log.find(b.peer_id.as_str())
            .is_none_or(|met_b| met_b > approved_at),
        "the node met B before its token came:\n{log}"
    );
    // `status` counts agree on A and B, each seednode recounting the shared store by itself
    // (checked before any other operator command, which would make B recount anyway).
    let counts = wait_until(WAIT, "A's and B's status counts to agree", || {
        let (a, b) = (
            service_status(&a_data)["counts"].clone(),
            service_status(&b.data)["counts"].clone(),
        );
        if a == b && a["delivered"] == 1 {
            Ok(a)
        } else {
            Err(format!("A: {a}, B: {b}"))
        }
    });
    assert_eq!(counts["pending"], 0, "{counts}");
    assert_eq!(counts["approved"], 1, "{counts}");
    assert_eq!(counts["issued"], 1, "{counts}");
    let members_a = members(&a_data);
    assert_eq!(members_a.len(), 1, "{members_a:?}");
    assert_eq!(members_a[0]["peer"], node.peer_id.as_str());
    assert!(
        members_a[0]["delivered_at"].is_u64(),
        "A recorded the delivery: {members_a:?}"
    );
    // The same rows; only `current_delegation` is each seednode's own view (whether the token
    // chains to the delegation *it* holds), so it is true on B, which issued it, and false on A.
    let members_b = members(&b.data);
    assert_eq!(members_b[0]["current_delegation"], true, "{members_b:?}");
    assert_eq!(members_a[0]["current_delegation"], false, "{members_a:?}");
    let shared = |rows: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        rows.into_iter()
            .map(|mut row| {
                row.as_object_mut().unwrap().remove("current_delegation");
                row
            })
            .collect()
    };
    assert_eq!(
        shared(members_b),
        shared(members_a),
        "A and B list the same members"
    );

    // Revoked through A, the token B issued: gone from B's members at once (one store), and
    // B, which learns it from A's signed revocation head, closes the node's connection.
    let revoked = cli(
        "seednode",
        &[
            "revoke",
            "--peer",
            &node.peer_id,
            "--data",
            path_str(&a_data),
            "--json",
        ],
    )
    .success()
    .json();
    assert_eq!(revoked["revoked"].as_array().unwrap().len(), 1, "{revoked}");
    assert_eq!(members(&b.data), Vec::<serde_json::Value>::new());
    wait_until(WAIT, "B to close the revoked node's connection", || {
        let log = b_daemon.stderr_log();
        log.lines()
            .any(|l| {
                l.contains("closing connection")
                    && l.contains(node.peer_id.as_str())
                    && l.contains("reason=revoked")
            })
            .then_some(())
            .ok_or_else(|| b_daemon.stderr_tail(10))
    });
    wait_until(
        WAIT,
        "A's and B's status to agree on the revocation",
        || {
            let (a, b) = (service_status(&a_data), service_status(&b.data));
            let same = a["counts"] == b["counts"]
                && a["revocation_version"] == b["revocation_version"]
                && a["counts"]["revoked"] == 1;
            same.then_some(()).ok_or_else(|| format!("A: {a}, B: {b}"))
        },
    );
}

#[test]
fn store_migrate_takes_the_password_from_a_private_file_and_never_shows_it() {
    use cordon_seednode::store::{SqliteStore, Store, StoreLimits};
    use std::os::unix::fs::PermissionsExt;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let options = runtime.block_on(pg_testing::fresh_password_database());
    let dir = tempfile::tempdir().unwrap();
    let database_file = dir.path().join("seednode.db");
    runtime.block_on(async {
        let store = SqliteStore::open(&database_file, StoreLimits::default()).unwrap();
        let network = "mainnet".parse().unwrap();
        store
            .submit_request(&network, &libp2p::PeerId::random(), None, false, 1)
            .await
            .unwrap();
    });
    let from = format!("sqlite:{}", path_str(&database_file));
    let migrate = |to: &str, password_file: Option<&std::path::Path>| {
        let mut args = vec!["store", "migrate", "--from", &from, "--to", to, "--json"];
        if let Some(file) = password_file {
            args.extend(["--password-file", path_str(file)]);
        }
        cli("seednode", &args)
    };
    let password_file = |name: &str, password: &str, mode: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{password}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    let never_shows = |run: &cordon_tests::Run, password: &str| {
        assert!(!run.ok, "{}", run.stdout);
        assert!(
            !run.stderr.contains(password) && !run.stdout.contains(password),
            "{}",
            run.stderr
        );
    };

    // A password in the url is refused before connecting.
    let with_password = options.url.replacen("cordon_pw@", "cordon_pw:hunter2@", 1);
    let refused = migrate(&with_password, None);
    never_shows(&refused, "hunter2");
    assert!(refused.stderr.contains("password"), "{}", refused.stderr);
    // A password file others can read is refused; a wrong password fails to authenticate.
    let shared = password_file("shared", pg_testing::PASSWORD, 0o644);
    let refused = migrate(&options.url, Some(&shared));
    never_shows(&refused, pg_testing::PASSWORD);
    assert!(refused.stderr.contains("chmod 600"), "{}", refused.stderr);
    let wrong = password_file("wrong", "not-the-password", 0o600);
    let refused = migrate(&options.url, Some(&wrong));
    never_shows(&refused, "not-the-password");
    assert!(
        refused.stderr.contains("password authentication failed"),
        "{}",
        refused.stderr
    );
    // The right one, in a private file, migrates.
    let right = password_file("right", pg_testing::PASSWORD, 0o600);
    let summary = migrate(&options.url, Some(&right)).success().json();
    assert_eq!(summary["requests"], 1, "{summary}");
    assert_eq!(summary["pending"], 1, "{summary}");
}
