//! TLS between real `seednode` processes and a real PostgreSQL (started by
//! `cordon_seednode::pg_testing`, which offers TLS with a certificate from its own test CA).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cordon_seednode::pg_testing;
use cordon_tests::{Net, approve, free_port, path_str, run_with_timeout, wait_pending};

const WAIT: Duration = Duration::from_secs(60);

/// `(application_name, ssl)` of every connection to `database`, as the server sees them.
fn connections(runtime: &tokio::runtime::Runtime, database: &str) -> Vec<(String, bool)> {
    runtime.block_on(async {
        let db = pg_testing::admin(pg_testing::server(), "postgres").await;
        db.query(
            "SELECT a.application_name, s.ssl FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.datname = $1",
            &[&database],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
    })
}

#[test]
fn a_seednode_set_to_verify_full_serves_over_tls_and_refuses_a_server_its_ca_does_not_vouch_for() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let options = runtime.block_on(pg_testing::fresh_database());
    let database = options.url.rsplit('/').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let config = |name: &str, ca_file: &std::path::Path| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[seednode.postgres]\nurl = \"{}\"\ntls = \"verify-full\"\nca_file = \"{}\"\n",
                options.url,
                ca_file.display()
            ),
        )
        .unwrap();
        path
    };
    let trusted = config("trusted.toml", &pg_testing::server().ca_file);
    let _a = net.start_seednode_with("mainnet", &["--config", path_str(&trusted)]);

    // It works as a store: a request is queued and approved.
    let node = net.start_node("n", &["mainnet"], &[]);
    let seed_data = net.network("mainnet").seed_data.clone();
    let id = wait_pending(&seed_data, "mainnet", &node.peer_id, WAIT);
    approve(&seed_data, id);
    node.wait_state("mainnet", "member", WAIT);
    // And every connection it holds is encrypted, as the server sees it.
    let held = connections(&runtime, &database);
    let seednode: Vec<&(String, bool)> = held
        .iter()
        .filter(|(app, _)| app == "cordon-seednode")
        .collect();
    assert!(!seednode.is_empty(), "{held:?}");
    assert!(seednode.iter().all(|(_, ssl)| *ssl), "{held:?}");

    // A second seednode trusting another CA refuses the server at start, and says why.
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, pg_testing::untrusted_ca_pem()).unwrap();
    let untrusted = config("untrusted.toml", &other_ca);
    let b = net.add_seednode("mainnet", "seed-b");
    let listen = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    let refused = run_with_timeout(
        "seednode",
        &[
            "run",
            "--data",
            path_str(&b.data),
            "--networks",
            path_str(&net.descriptor),
            "--delegation",
            path_str(&b.delegation),
            "--listen",
            &listen,
            "--config",
            path_str(&untrusted),
        ],
        Duration::from_secs(60),
    );
    assert!(!refused.ok, "started: {}", refused.stdout);
    assert!(
        refused.stderr.contains("UnknownIssuer") && refused.stderr.contains("ca_file"),
        "{}",
        refused.stderr
    );

    // `store migrate` takes the same settings, checked before it reads anything.
    let migrate = run_with_timeout(
        "seednode",
        &[
            "store",
            "migrate",
            "--from",
            "sqlite:/nonexistent/seednode.db",
            "--to",
            &options.url,
            "--tls",
            "verify-full",
        ],
        Duration::from_secs(60),
    );
    assert!(!migrate.ok, "{}", migrate.stdout);
    assert!(
        migrate.stderr.contains("ca_file is required"),
        "{}",
        migrate.stderr
    );
}
