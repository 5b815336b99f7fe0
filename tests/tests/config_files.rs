//! Both daemons run from their config files alone, and `check-config` refuses a wrong key, a
//! wrong type and an out-of-range limit, naming each (real binaries on loopback).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use cordon_tests::{
    Daemon, Net, approve, cli, node_state, node_status, path_str, seednode_ready, wait_for,
    wait_pending,
};

const WAIT: Duration = Duration::from_secs(60);

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_owned()
}

/// The seednode's and the node's config files, with relative paths and non-default limits.
fn config_files(net: &Net, node_data: &str) -> (PathBuf, PathBuf) {
    let n = net.network("mainnet");
    let root = &net.root;
    let rel = |p: &Path| p.strip_prefix(root).unwrap().display().to_string();
    let seed = write(
        &root.join("seednode.toml"),
        &format!(
            "data = \"{}\"\ndescriptor = \"networks.toml\"\nlisten = [\"/ip4/127.0.0.1/tcp/{}\"]\n\
             label = \"seed-from-file\"\n\n[limits]\nauth_timeout = \"15s\"\n\n\
             [seednode]\ndelegations = [\"{}\"]\n\n[seednode.store]\nmax_pending_per_network = 5\n",
            rel(&n.seed_data),
            n.port,
            rel(&n.delegation),
        ),
    );
    let node = write(
        &root.join("node.toml"),
        &format!(
            "data = \"{node_data}\"\ndescriptor = \"networks.toml\"\nnetworks = [\"mainnet\"]\n\
             listen = [\"/ip4/127.0.0.1/tcp/0\"]\nlabel = \"node-from-file\"\n\n\
             [limits]\nmax_connections = 100\n"
        ),
    );
    (seed, node)
}

#[test]
fn both_daemons_run_from_their_config_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let (node_data, node_peer) = net.init_node("n");
    let (seed_toml, node_toml) = config_files(&net, "n");
    let seed_data = net.network("mainnet").seed_data.clone();

    for (bin, file) in [("seednode", &seed_toml), ("node", &node_toml)] {
        let ok = cli(bin, &["check-config", "--config", path_str(file)]);
        assert!(
            ok.ok,
            "{bin} check-config refused a good file: {}",
            ok.stderr
        );
        assert!(ok.stdout.contains("configuration ok"), "{}", ok.stdout);
    }

    let mut seed = Daemon::spawn(
        "seed",
        "seednode",
        &["run", "--config", path_str(&seed_toml)],
        &net.logs,
    );
    seed.wait_ready(WAIT, "the seednode to start from its file", || {
        seednode_ready(&seed_data)
    })
    .unwrap_or_else(|e| panic!("seednode exited: {e}\n{}", seed.stderr_tail(40)));
    let mut node = Daemon::spawn(
        "node",
        "node",
        &["run", "--config", path_str(&node_toml)],
        &net.logs,
    );
    node.wait_ready(WAIT, "the node to start from its file", || {
        cordon_tests::try_node_status(&node_data)
    })
    .unwrap_or_else(|e| panic!("node exited: {e}\n{}", node.stderr_tail(40)));

    // The files' values are the ones in force.
    let status = node_status(&node_data);
    assert_eq!(status["limits"]["max_connections"], 100, "{status}");
    let seed_status = cli(
        "seednode",
        &["status", "--data", path_str(&seed_data), "--json"],
    );
    let seed_status: serde_json::Value = serde_json::from_str(&seed_status.stdout).unwrap();
    assert_eq!(
        seed_status["limits"]["auth_timeout_secs"], 15,
        "{seed_status}"
    );

    // And they work together: the node's join request, labelled from its file, is approved.
    let id = wait_pending(&seed_data, "mainnet", &node_peer, WAIT);
    let pending = cordon_tests::pending(&seed_data);
    assert!(
        pending.iter().any(|p| p["label"] == "node-from-file"),
        "{pending:?}"
    );
    approve(&seed_data, id);
    wait_for(WAIT, "the node to become a member", || {
        (node_state(&node_data, "mainnet").as_deref() == Some("member")).then_some(())
    });
}

#[test]
fn check_config_names_a_wrong_key_a_wrong_type_and_an_out_of_range_limit() {
    let dir = tempfile::tempdir().unwrap();
    let net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    net.init_node("n");
    let (seed_toml, node_toml) = config_files(&net, "n");
    let cases: [(&str, &str, &[&str]); 3] = [
        (
            "[limits]\nmax_conections = 5\n",
            "limits.max_conections",
            &["unknown field `max_conections`", "max_connections"],
        ),
        (
            "[limits]\nmax_connections = \"many\"\n",
            "limits.max_connections",
            &["invalid type"],
        ),
        (
            "[limits]\nmax_connections = 0\n",
            "limits.max_connections",
            &["must be between 1 and 1000000, got 0"],
        ),
    ];
    for (bin, good) in [("node", &node_toml), ("seednode", &seed_toml)] {
        // Keep the file otherwise valid: drop its own [limits] table, append the bad one.
        let base = std::fs::read_to_string(good)
            .unwrap()
            .replace("[limits]\nmax_connections = 100\n", "")
            .replace("[limits]\nauth_timeout = \"15s\"\n", "");
        assert!(!base.contains("[limits]"), "{base}");
        for (bad, key, words) in cases {
            let file = write(
                &net.root.join(format!("bad-{bin}.toml")),
                &format!("{base}{bad}"),
            );
            let run = cli(bin, &["check-config", "--config", path_str(&file)]);
            assert!(!run.ok, "{bin} check-config accepted {bad:?}");
            let err = run.stderr;
            assert!(err.contains(path_str(&file)), "no file named: {err}");
            assert!(err.contains(key), "key {key} not named: {err}");
            for w in words {
                assert!(err.contains(w), "{w:?} missing: {err}");
            }
            // `run` refuses the same file before starting anything.
            let run = cli(bin, &["run", "--config", path_str(&file)]);
            assert!(
                !run.ok && run.stderr.contains(key),
                "{bin} run: {}",
                run.stderr
            );
        }
    }
    // The seednode's own table is checked too, with its full key.
    let base = std::fs::read_to_string(&seed_toml).unwrap();
    let file = write(
        &net.root.join("bad-store.toml"),
        &base.replace("max_pending_per_network = 5", "max_pending_per_network = 0"),
    );
    let run = cli("seednode", &["check-config", "--config", path_str(&file)]);
    assert!(
        !run.ok
            && run
                .stderr
                .contains("seednode.store.max_pending_per_network"),
        "{}",
        run.stderr
    );
}
