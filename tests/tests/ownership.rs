//! Issue 12, item 6: a daemon trusts only what its own user controls. Mode checks alone let a
//! daemon run by root use a data directory (or a key file) another user owns, or one below a
//! directory another user can write, where that user can swap the files; and `node status`
//! would talk to a control socket another user planted. Against the real binaries.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use cordon_tests::{Net, cli, path_str, run_with_timeout};

/// A uid no test runs as (`nobody` on Debian).
const OTHER_UID: u32 = 65534;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), None).unwrap();
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    })
}

/// `node run` on `data` in mainnet, on loopback.
fn run_args<'a>(net: &'a Net, data: &'a Path) -> [&'a str; 9] {
    [
        "run",
        "--data",
        path_str(data),
        "--networks",
        path_str(&net.descriptor),
        "--network",
        "mainnet",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
    ]
}

/// `node run` on `data`; it must refuse to start, saying why and the fix.
fn run_refused(net: &Net, data: &Path, why: &[&str]) {
    let run = run_with_timeout("node", &run_args(net, data), Duration::from_secs(10));
    assert!(!run.ok, "node run started on {}", data.display());
    for text in why {
        assert!(
            run.stderr.contains(text),
            "node run on {} failed without saying {text:?}:\n{}",
            data.display(),
            run.stderr
        );
    }
}

#[test]
fn a_data_directory_other_users_can_swap_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();

    // Below a directory anyone may write (no sticky bit): anyone can rename the data directory
    // away and put their own in its place.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let data = shared.join("data");
    let init = cli("node", &["init", "--data", path_str(&data)]);
    assert!(init.ok, "{}", init.stderr);
    chmod(&shared, 0o777);
    run_refused(&net, &data, &["another user can replace", "sticky"]);
    // With the sticky bit (as /tmp has it) the node starts (control: the refusal above is
    // about the parent, nothing else).
    chmod(&shared, 0o1777);
    let mut node = cordon_tests::Daemon::spawn(
        "sticky",
        "node",
        &run_args(&net, &data),
        &dir.path().join("logs"),
    );
    let status = cordon_tests::wait_for(Duration::from_secs(20), "node status", || {
        let run = cli("node", &["status", "--data", path_str(&data), "--json"]);
        run.ok.then_some(run)
    });
    assert!(status.stdout.contains("mainnet"), "{}", status.stdout);

    if !is_root() {
        // Making a directory or socket belong to another user takes root; CI runs as root.
        eprintln!("not root: the foreign-owner cases below need chown and were not run");
        node.stop();
        return;
    }
    // A control socket that belongs to another user: `node status` will not talk to it.
    let socket = data.join("control.sock");
    chown(&socket, OTHER_UID);
    let run = cli("node", &["status", "--data", path_str(&data), "--json"]);
    assert!(
        !run.ok,
        "node status used another user's socket: {}",
        run.stdout
    );
    assert!(
        run.stderr.contains("control socket") && run.stderr.contains("belongs to uid 65534"),
        "{}",
        run.stderr
    );
    chown(&socket, 0);
    assert!(cli("node", &["status", "--data", path_str(&data)]).ok);
    node.stop();

    // The data directory belongs to another user (mode 0700 and all).
    chown(&data, OTHER_UID);
    run_refused(&net, &data, &["belongs to uid 65534", "chown"]);
    chown(&data, 0);
    // Its identity key belongs to another user.
    let key = data.join("identity.key");
    chown(&key, OTHER_UID);
    run_refused(&net, &data, &["key file", "belongs to uid 65534"]);
    chown(&key, 0);
    // A parent directory belongs to another user (who may rename anything in it).
    chmod(&shared, 0o755);
    chown(&shared, OTHER_UID);
    run_refused(
        &net,
        &data,
        &["belongs to uid 65534", "another user can replace"],
    );
}
