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
    let first = net.start_node("first", &["lab"], &["--invite", &code]);
    first.wait_state("lab", "member", JOIN);
    assert!(pending(&seed.seed_data).is_empty());
    assert_eq!(member_peers(&seed.seed_data), [first.peer_id.as_str()]);

    // The same single-use code again: refused.
    let second = net.start_node("second", &["lab"], &["--invite", &code]);
    let state = settled_non_member(&second, "lab");
    // A wrong code: refused.
    let mut wrong = code.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    let guesser = net.start_node("guesser", &["lab"], &["--invite", &wrong]);
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
