//! `seednode run --store URL` keeps the seednode's state in PostgreSQL (a real server, started
//! by `cordon_seednode::pg_testing`): a node's join request and its approval go through the
//! database, not `<data>/seednode.db`, and a restarted seednode finds them there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cordon_seednode::pg_testing;
use cordon_tests::{Net, approve, cli, members, node_state, path_str, wait_for, wait_pending};

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
