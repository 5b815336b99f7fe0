//! The seednode's state in PostgreSQL (a real server, started by
//! `cordon_seednode::pg_testing`): `seednode run --store URL` keeps it there across a restart,
//! `seednode store migrate` moves an SQLite store there, and two seednodes of one network
//! sharing the database serve each other's requests, approvals and revocations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cordon_seednode::pg_testing;
use cordon_tests::{
    Net, approve, cli, members, node_peers, node_state, path_str, pending, revoke_peer, wait_for,
    wait_pending, wait_until,
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
    let revoked = revoke_peer(&seed_data, &gone.peer_id);
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

/// `members` rows without `current_delegation` and `issued_here`, the fields that are each
/// seednode's own view (whether the token chains to the delegation *it* holds, whether *it*
/// signed it).
fn shared_rows(rows: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    rows.into_iter()
        .map(|mut row| {
            let row_fields = row.as_object_mut().unwrap();
            row_fields.remove("current_delegation");
            row_fields.remove("issued_here");
            row
        })
        .collect()
}

/// The store counts of A's and B's `status` once they agree and count `delivered` deliveries;
/// each seednode recounts the shared store by itself.
fn agreed_counts(
    a_data: &std::path::Path,
    b_data: &std::path::Path,
    delivered: u64,
) -> serde_json::Value {
    wait_until(WAIT, "A's and B's status counts to agree", || {
        let (a, b) = (
            service_status(a_data)["counts"].clone(),
            service_status(b_data)["counts"].clone(),
        );
        if a == b && a["delivered"] == delivered {
            Ok(a)
        } else {
            Err(format!("A: {a}, B: {b}"))
        }
    })
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

    // Approved through B's CLI, the token reaches the node through A (pushed by A, woken by
    // the database, or answered to the node's next poll).
    approve(&b.data, id);
    wait_for(WAIT, "the node to become a member", || {
        (node_state(&node.data, "mainnet").as_deref() == Some("member")).then_some(())
    });
    // Once a member, the node meets B too (members find each other); the token had come
    // before that, so through A.
    let log = node.daemon.stderr_log();
    let approved_at = ["join approved", "membership token delivered"]
        .iter()
        .filter_map(|line| log.find(line))
        .min()
        .expect("the node logs its approval");
    assert!(
        log.find(b.peer_id.as_str())
            .is_none_or(|met_b| met_b > approved_at),
        "the node met B before its token came:\n{log}"
    );
    // `status` counts agree on A and B, each seednode recounting the shared store by itself
    // (checked before any other operator command, which would make B recount anyway).
    let counts = agreed_counts(&a_data, &b.data, 1);
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
    // The same rows; only `current_delegation` and `issued_here` are each seednode's own view,
    // so they are true on B, which issued it, and false on A.
    let members_b = members(&b.data);
    for field in ["current_delegation", "issued_here"] {
        assert_eq!(members_b[0][field], true, "{members_b:?}");
        assert_eq!(members_a[0][field], false, "{members_a:?}");
    }
    let table = cli("seednode", &["members", "--data", path_str(&a_data)]).success();
    assert!(table.stdout.contains("other seednode"), "{}", table.stdout);
    assert_eq!(
        shared_rows(members_b),
        shared_rows(members_a),
        "A and B list the same members"
    );

    // A second member, approved on A, routes the node.
    let other = net.start_node("other", &["mainnet"], &[]);
    let other_id = wait_pending(&a_data, "mainnet", &other.peer_id, WAIT);
    approve(&a_data, other_id);
    wait_until(WAIT, "the second member to route the node", || {
        let peers = node_peers(&other.data, "mainnet");
        peers
            .contains(&node.peer_id)
            .then_some(())
            .ok_or(format!("{peers:?}"))
    });

    // Revoked through A, the token B issued: gone from B's members at once (one store), and
    // B, which learns it from A's signed revocation head, closes the node's connection, as
    // does the other member, which drops it from its table.
    let revoked = revoke_peer(&a_data, &node.peer_id);
    assert_eq!(revoked["revoked"].as_array().unwrap().len(), 1, "{revoked}");
    let left: Vec<_> = members(&b.data)
        .iter()
        .map(|m| m["peer"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, vec![other.peer_id.clone()]);
    wait_until(WAIT, "the other member to drop the revoked node", || {
        let peers = node_peers(&other.data, "mainnet");
        let closed = other.daemon.stderr_log().lines().any(|l| {
            l.contains("closing connection")
                && l.contains(node.peer_id.as_str())
                && l.contains("reason=revoked")
        });
        (closed && !peers.contains(&node.peer_id))
            .then_some(())
            .ok_or(format!("closed: {closed}, peers: {peers:?}"))
    });
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

/// How long a node may take to get a token pushed to it: far less than [`SLOW_POLL`], so a
/// node that becomes a member within it was not served by its own poll.
const PUSH_WAIT: Duration = Duration::from_secs(20);

/// The join client's poll interval of the nodes below: long enough that no poll falls within
/// a test (the first is sent when the node meets its seednode; the next comes this much later).
const SLOW_POLL: &str = "10m";

/// A seednode config keeping a pending requester's connection for [`SLOW_POLL`] after its last
/// poll (by default it is closed after `auth_timeout`, 10 s, and the node's reconnection polls
/// again at once), so the nodes below neither reconnect nor poll during a test.
fn patient_seednode_config(dir: &std::path::Path) -> String {
    let config = dir.join("patient-seednode.toml");
    std::fs::write(
        &config,
        format!("[limits]\nauth_timeout = \"{SLOW_POLL}\"\n"),
    )
    .unwrap();
    path_str(&config).to_owned()
}

/// Starts a node for `mainnet` that polls its join request only every [`SLOW_POLL`].
fn slow_polling_node(net: &Net, dir: &std::path::Path, label: &str) -> cordon_tests::Node {
    let config = dir.join(format!("{label}.toml"));
    std::fs::write(
        &config,
        format!("[limits]\npoll_interval = \"{SLOW_POLL}\"\nmax_join_backoff = \"{SLOW_POLL}\"\n"),
    )
    .unwrap();
    net.start_node(label, &["mainnet"], &["--config", path_str(&config)])
}

/// Waits until `seednode` has logged, since it started, that it listens for store
/// notifications at least `times` times (once per connection it opened).
fn wait_listening(seednode: &cordon_tests::Daemon, times: usize) {
    wait_until(
        WAIT,
        &format!(
            "{} to listen for store notifications ({times} times)",
            seednode.label()
        ),
        || {
            let log = seednode.stderr_log();
            let seen = log.matches("listening for store notifications").count();
            (seen >= times)
                .then_some(())
                .ok_or_else(|| format!("{seen} times\n{}", seednode.stderr_tail(10)))
        },
    );
}

/// Waits (at most [`PUSH_WAIT`]) until `node` is a member of mainnet, and checks that the
/// token was pushed to it by `seednode_peer` (not answered to a poll).
fn wait_pushed_by(node: &cordon_tests::Node, seednode_peer: &str) {
    wait_for(PUSH_WAIT, "the node to become a member by a push", || {
        (node_state(&node.data, "mainnet").as_deref() == Some("member")).then_some(())
    });
    let log = node.daemon.stderr_log();
    let pushed = log
        .lines()
        .find(|l| l.contains("membership token delivered"))
        .unwrap_or_else(|| panic!("the token was not pushed to the node:\n{log}"));
    assert!(pushed.contains(seednode_peer), "{pushed}");
}

#[test]
fn approvals_and_revocations_on_one_seednode_wake_the_others_at_once() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let options = runtime.block_on(pg_testing::fresh_database());
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let b = net.add_seednode("mainnet", "seed-b");
    let a_data = net.network("mainnet").seed_data.clone();
    let a_peer = net.network("mainnet").seed_peer_id.clone();
    let patient = patient_seednode_config(dir.path());
    let a = net.start_seednode_with("mainnet", &["--store", &options.url, "--config", &patient]);
    let b_daemon = net.start_extra_seednode(&b, &["--store", &options.url]);
    wait_listening(&a, 1);
    wait_listening(&b_daemon, 1);

    // The node knows only A, polls so rarely and is kept connected so long that only a push
    // can make it a member in time.
    let node = slow_polling_node(&net, dir.path(), "n");
    let id = wait_pending(&b.data, "mainnet", &node.peer_id, WAIT);
    assert!(
        !node_peers(&node.data, "mainnet").contains(&b.peer_id),
        "the node is not connected to B"
    );

    // Approved through B, which cannot push (the node is not connected to it, and B does not
    // dial it): A, woken by the database, pushes it.
    approve(&b.data, id);
    wait_pushed_by(&node, &a_peer);
    let members_a = members(&a_data);
    assert_eq!(members_a.len(), 1, "{members_a:?}");
    assert_eq!(members_a[0]["peer"], node.peer_id.as_str());
    // A recorded the delivery in the shared store.
    wait_until(WAIT, "A to record the delivery", || {
        let counts = service_status(&b.data)["counts"].clone();
        (counts["delivered"] == 1)
            .then_some(())
            .ok_or(counts.to_string())
    });

    // Revoked through A: B, woken by the database, signs a revocation head holding it at once
    // (its own refresh, `revocation_refresh`, is an hour away).
    let revoked = revoke_peer(&a_data, &node.peer_id);
    assert_eq!(revoked["revoked"].as_array().unwrap().len(), 1, "{revoked}");
    wait_until(
        WAIT,
        "B to sign a head with the revocation made on A",
        || {
            let log = b_daemon.stderr_log();
            log.lines()
                .any(|l| l.contains("revocation head signed") && l.contains("entries=1"))
                .then_some(())
                .ok_or_else(|| b_daemon.stderr_tail(10))
        },
    );
}

#[test]
fn seednodes_ride_out_a_postgres_restart_without_restarting_or_losing_a_write() {
    use std::os::unix::fs::PermissionsExt;

    let server = pg_testing::private_server();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // A role with a password, so the test can check it never shows.
    let options = runtime.block_on(pg_testing::fresh_password_database_on(&server));
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("postgres.password");
    std::fs::write(&password_file, format!("{}\n", pg_testing::PASSWORD)).unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let postgres = format!(
        "[seednode.postgres]\nurl = \"{}\"\npassword_file = \"{}\"\n",
        options.url,
        path_str(&password_file)
    );
    let config = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let a_config = config(
        "a.toml",
        &format!("[limits]\nauth_timeout = \"{SLOW_POLL}\"\n{postgres}"),
    );
    let b_config = config("b.toml", &postgres);
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let b = net.add_seednode("mainnet", "seed-b");
    let a_data = net.network("mainnet").seed_data.clone();
    let a_peer = net.network("mainnet").seed_peer_id.clone();
    let mut a = net.start_seednode_with("mainnet", &["--config", path_str(&a_config)]);
    let mut b_daemon = net.start_extra_seednode(&b, &["--config", path_str(&b_config)]);
    wait_listening(&a, 1);
    wait_listening(&b_daemon, 1);
    let node = slow_polling_node(&net, dir.path(), "n");
    let id = wait_pending(&a_data, "mainnet", &node.peer_id, WAIT);

    server.stop();
    // Down: operator commands fail at once with a clear, temporary error; nothing is applied.
    let id_text = id.to_string();
    for mut args in [vec!["pending"], vec!["approve", &id_text]] {
        let command = args[0];
        args.extend(["--data", path_str(&a_data)]);
        let run = cli("seednode", &args);
        assert!(
            !run.ok,
            "{command} succeeded with the database down: {}",
            run.stdout
        );
        assert!(
            run.stderr.contains("PostgreSQL database is unreachable")
                && run.stderr.contains("retry"),
            "{command}: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains(pg_testing::PASSWORD)
                && !run.stdout.contains(pg_testing::PASSWORD),
            "{command}: {}",
            run.stderr
        );
    }
    // A node asking to join meanwhile is told the seednode cannot serve it for now
    // (`unavailable`: it backs off and asks again), not queued and not denied.
    let late = net.start_node("late", &["mainnet"], &[]);
    wait_until(WAIT, "the late node's request to fail", || {
        let log = late.daemon.stderr_log();
        log.lines()
            .any(|l| l.contains("join request failed") && l.contains("reason=unavailable"))
            .then_some(())
            .ok_or_else(|| late.daemon.stderr_tail(10))
    });
    assert!(a.is_running() && b_daemon.is_running(), "a seednode exited");
    wait_until(
        WAIT,
        "A to notice its notification connection is gone",
        || {
            let log = a.stderr_log();
            log.contains("store notification connection lost")
                .then_some(())
                .ok_or_else(|| a.stderr_tail(10))
        },
    );

    server.start();
    // Up again, without restarting A or B: both listen again, and the request is still
    // pending (the approval tried meanwhile was not applied).
    wait_listening(&a, 2);
    wait_listening(&b_daemon, 2);
    assert!(a.is_running() && b_daemon.is_running(), "a seednode exited");
    // One warning per outage however many reconnection attempts failed, and never the
    // password.
    for seednode in [&a, &b_daemon] {
        let log = seednode.stderr_log();
        assert_eq!(
            log.matches("store notification connection lost").count(),
            1,
            "{}",
            seednode.stderr_tail(30)
        );
        assert!(!log.contains(pg_testing::PASSWORD), "{log}");
    }
    // The late node, asking again, is queued; the first request is still there.
    let late_id = wait_pending(&a_data, "mainnet", &late.peer_id, WAIT);
    let queue = pending(&a_data);
    let ids: Vec<_> = queue.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![id, late_id], "{queue:?}");
    assert_eq!(pending(&b.data), queue, "A and B list the same queue");

    // Approved through B: A, woken by its new LISTEN connection, pushes the token.
    approve(&b.data, id);
    wait_pushed_by(&node, &a_peer);
    let counts = agreed_counts(&a_data, &b.data, 1);
    assert_eq!(counts["pending"], 1, "{counts}");
    assert_eq!(counts["approved"], 1, "{counts}");
    assert_eq!(counts["issued"], 1, "{counts}");
    assert_eq!(pending(&a_data), pending(&b.data));
    let members_a = shared_rows(members(&a_data));
    assert_eq!(members_a.len(), 1, "{members_a:?}");
    assert_eq!(members_a, shared_rows(members(&b.data)));
}
