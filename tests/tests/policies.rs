//! Join policies other than `approval`: `open` admits without an operator, `invite` admits with
//! a valid single-use code only.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use cordon_tests::{Net, Node, invite, members, network_status, pending, wait_until};

const JOIN: Duration = Duration::from_secs(60);

fn member_peers(seed_data: &std::path::Path) -> Vec<String> {
    members(seed_data)
        .iter()
        .map(|m| m["peer"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until `node` leaves the `joining` state (its request was answered) and returns the
/// state it settled in, panicking at once if that is `member`.
fn settled_non_member(node: &Node, network: &str) -> String {
    wait_until(
        JOIN,
        &format!("the seednode to answer {}'s join request", node.label),
        || match node.state(network) {
            Some(s) if s == "member" => panic!("{} became a member of {network}", node.label),
            Some(s) if s == "denied" || s == "pending" => Ok(s),
            other => Err(format!("state {other:?}")),
        },
    )
}

#[test]
fn open_policy_admits_without_operator() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path()).network("testnet", "open").build();
    let _seed = net.start_seednode("testnet");
    let seed = net.network("testnet").clone();

    let n = net.start_node("n", &["testnet"], &[]);
    n.wait_state("testnet", "member", JOIN);
    let status = n.status();
    let entry = network_status(&status, "testnet").unwrap();
    assert!(!entry["token_expires_at"].is_null(), "{status}");
    assert!(entry["pending_request"].is_null(), "{status}");
    assert!(
        pending(&seed.seed_data).is_empty(),
        "nothing waits for an operator"
    );
    assert_eq!(member_peers(&seed.seed_data), [n.peer_id.as_str()]);
}

#[test]
fn invite_policy_admits_with_a_valid_code_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path()).network("lab", "invite").build();
    let _seed = net.start_seednode("lab");
    let seed = net.network("lab").clone();
    let code = invite(&seed.seed_data, "lab");

    // A valid code: member without any operator action.
    let first = net.start_node("first", &["lab"], &["--invite", &format!("lab={code}")]);
    first.wait_state("lab", "member", JOIN);
    assert!(pending(&seed.seed_data).is_empty());
    assert_eq!(member_peers(&seed.seed_data), [first.peer_id.as_str()]);

    // The same single-use code again: refused.
    let second = net.start_node("second", &["lab"], &["--invite", &format!("lab={code}")]);
    let state = settled_non_member(&second, "lab");
    // A wrong code: refused.
    let mut wrong = code.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    let guesser = net.start_node("guesser", &["lab"], &["--invite", &format!("lab={wrong}")]);
    let guesser_state = settled_non_member(&guesser, "lab");
    // A bad code is refused outright (`invalid_invite`), not queued for an operator.
    assert_eq!(state, "denied", "reused code");
    assert_eq!(guesser_state, "denied", "wrong code");
    assert!(pending(&seed.seed_data).is_empty());

    // Neither is admitted later either (nothing is queued for automatic approval).
    cordon_tests::hold_for(Duration::from_secs(5), || {
        for node in [&second, &guesser] {
            assert_ne!(
                node.state("lab").as_deref(),
                Some("member"),
                "{}",
                node.label
            );
        }
    });
    assert_eq!(member_peers(&seed.seed_data), [first.peer_id.as_str()]);
    for node in [&second, &guesser] {
        assert!(
            !first.peers("lab").contains(&node.peer_id),
            "a member routes to {}",
            node.label
        );
    }
}

/// Issue 12, item 1: an invite code is bound to its network. A node joining two invite-only
/// networks with one network's code (from a private file) redeems it there; the other network's
/// seednode never receives it: its request waits for an operator instead of being denied for
/// a code that was never its own (before the fix one `--invite` went to every seednode).
#[test]
fn an_invite_goes_only_to_its_own_network() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("lab", "invite")
        .network("dev", "invite")
        .build();
    let _lab_seed = net.start_seednode("lab");
    let mut dev_seed = net.start_seednode("dev");
    let lab = net.network("lab").clone();
    let dev = net.network("dev").clone();
    let code = invite(&lab.seed_data, "lab");
    let file = dir.path().join("lab.invite");
    std::fs::write(&file, format!("{code}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let node = net.start_node(
        "both",
        &["lab", "dev"],
        &["--invite-file", &format!("lab={}", file.display())],
    );
    node.wait_state("lab", "member", JOIN);
    assert_eq!(member_peers(&lab.seed_data), [node.peer_id.as_str()]);
    // dev's seednode got a request without a code: queued for its operator, not denied.
    assert_eq!(settled_non_member(&node, "dev"), "pending");
    let queued: Vec<String> = pending(&dev.seed_data)
        .iter()
        .map(|p| p["peer"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(queued, [node.peer_id.as_str()]);
    let log = dev_seed.stderr_log();
    assert!(
        !log.contains("invalid_invite"),
        "dev's seednode was sent an invite: {}",
        dev_seed.stderr_tail(20)
    );
    dev_seed.stop();
}

/// An invite file other users can read is refused at start with the fix, never quoting the
/// code; so is an invite for a network the node does not join.
#[test]
fn an_exposed_invite_file_or_an_unbound_invite_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let net = Net::builder(dir.path()).network("lab", "invite").build();
    let (data, _) = net.init_node("n");
    let file = dir.path().join("lab.invite");
    std::fs::write(&file, "c0ffee00c0ffee00").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let base = [
        "run".to_owned(),
        "--data".into(),
        data.display().to_string(),
        "--networks".into(),
        net.descriptor.display().to_string(),
        "--network".into(),
        "lab".into(),
        "--check".into(),
    ];
    let check = |extra: &[String], env: Option<&str>| {
        let mut cmd = std::process::Command::new(cordon_tests::bin("node"));
        cmd.args(base.iter().chain(extra));
        cmd.env_remove("CORDON_INVITE");
        if let Some(value) = env {
            cmd.env("CORDON_INVITE", value);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = check(
        &["--invite-file".into(), format!("lab={}", file.display())],
        None,
    );
    assert!(!ok, "{out}");
    assert!(out.contains("chmod 600"), "{out}");
    assert!(!out.contains("c0ffee"), "the error quotes the code: {out}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, out) = check(
        &["--invite-file".into(), format!("lab={}", file.display())],
        None,
    );
    assert!(ok, "{out}");
    // From the environment: bound to a network this node does not join.
    let (ok, out) = check(&[], Some("dev=c0ffee00c0ffee00"));
    assert!(!ok, "{out}");
    assert!(out.contains("does not join"), "{out}");
    assert!(!out.contains("c0ffee"), "the error quotes the code: {out}");
    // The old unbound form is refused with the fix.
    let (ok, out) = check(&["--invite".into(), "c0ffee00c0ffee00".into()], None);
    assert!(!ok, "{out}");
    assert!(out.contains("NETWORK=CODE"), "{out}");
    assert!(!out.contains("c0ffee"), "the error quotes the code: {out}");
    let (ok, out) = check(&[], Some("lab=c0ffee00c0ffee00"));
    assert!(ok, "{out}");
}

/// The seednode's `membership_checks.auth_timeouts`.
fn auth_timeouts(seed_data: &std::path::Path) -> u64 {
    cordon_tests::node_status(seed_data)["membership_checks"]["auth_timeouts"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_pending_node_keeps_its_connection_while_it_polls_and_loses_it_once_denied() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    // Connections that prove nothing close after 2 s; the node polls twice a second.
    let seed_config = dir.path().join("seed.toml");
    std::fs::write(&seed_config, "[limits]\nauth_timeout = \"2s\"\n").unwrap();
    let _seed = net.start_seednode_with("mainnet", &["--config", seed_config.to_str().unwrap()]);
    let seed = net.network("mainnet").clone();
    let node_config = dir.path().join("node.toml");
    std::fs::write(&node_config, "[limits]\npoll_interval = \"500ms\"\n").unwrap();
    let node = net.start_node(
        "n",
        &["mainnet"],
        &["--config", node_config.to_str().unwrap()],
    );
    let id = cordon_tests::wait_pending(&seed.seed_data, "mainnet", &node.peer_id, JOIN);

    // Three auth timeouts while the request waits: the connection it polls on stays open.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        auth_timeouts(&seed.seed_data),
        0,
        "the seednode closed a pending requester's connection for proving nothing"
    );
    assert_eq!(node.state("mainnet").as_deref(), Some("pending"));
    assert!(
        node.status()["connections"].as_u64() >= Some(1),
        "the pending node is connected: {}",
        node.status()
    );

    // Once denied, nothing is pending for it: its connection goes like any stranger's.
    cordon_tests::deny(&seed.seed_data, id, "not this one");
    node.wait_state("mainnet", "denied", JOIN);
    wait_until(
        Duration::from_secs(20),
        "the seednode to close the denied node's connection",
        || match auth_timeouts(&seed.seed_data) {
            0 => Err("no auth timeout yet".to_owned()),
            _ => Ok(()),
        },
    );
}
