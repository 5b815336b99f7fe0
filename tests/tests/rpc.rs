//! Remote commands between members (`node call`), against real processes on loopback: every
//! call is authorized by the callee's local policy, rate limited per caller, and recorded in the
//! callee's audit trail.
//!
//! Each test stands up a seednode (approval policy) and approves its nodes through the operator
//! CLI, some with `--role operator`, then drives `node call --data <caller> <callee> ...`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use cordon_tests::{Net, Node, Run, cli, wait_pending, wait_until};
use serde_json::Value;

/// How long a join (request, approval, delivery) may take.
const JOIN: Duration = Duration::from_secs(60);
/// How long members may take to route each other (discovery runs every few seconds).
const CONVERGE: Duration = Duration::from_secs(60);
/// How long an audit record may take to appear.
const AUDIT: Duration = Duration::from_secs(15);

fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Starts node `label` in `networks`, approves each of its join requests at the network's
/// seednode (with `--role role` if given), and waits until it is a member everywhere.
fn join(net: &Net, label: &str, networks: &[&str], grant: &[&str], extra: &[&str]) -> Node {
    let node = net.start_node(label, networks, extra);
    for network in networks {
        let seed = net.network(network);
        let id = wait_pending(&seed.seed_data, network, &node.peer_id, JOIN);
        let id = id.to_string();
        let mut args = vec![
            "approve",
            id.as_str(),
            "--data",
            path_str(&seed.seed_data),
            "--json",
        ];
        args.extend(grant);
        cli("seednode", &args).success();
    }
    for network in networks {
        node.wait_state(network, "member", JOIN);
    }
    node
}

/// Waits until `a` routes every one of `others` in `network`.
fn wait_routes(a: &Node, others: &[&Node], network: &str) {
    let want: BTreeSet<String> = others.iter().map(|n| n.peer_id.clone()).collect();
    let names: Vec<&str> = others.iter().map(|n| n.label.as_str()).collect();
    wait_until(
        CONVERGE,
        &format!("{} to route {names:?} in {network}", a.label),
        || {
            let peers = a.peers(network);
            if want.is_subset(&peers) {
                Ok(())
            } else {
                Err(format!("{} routes {peers:?}", a.label))
            }
        },
    );
}

/// `node call --data <from> --json [--network N] <to> <command...>`.
fn call(from: &Node, to: &Node, network: Option<&str>, command: &[&str]) -> Run {
    let mut args = vec!["call", "--data", path_str(&from.data), "--json"];
    if let Some(n) = network {
        args.extend(["--network", n]);
    }
    args.push(&to.peer_id);
    args.extend(command);
    let run = cli("node", &args);
    eprintln!(
        "[{} -> {}] node call {command:?}: ok={} stdout={:?} stderr={:?}",
        from.label,
        to.label,
        run.ok,
        run.stdout.trim(),
        run.stderr.trim()
    );
    run
}

/// Panics unless the call succeeded.
fn call_ok(from: &Node, to: &Node, command: &[&str]) -> Run {
    let run = call(from, to, None, command);
    assert!(
        run.ok,
        "{} calling {} {command:?} failed\nstdout:\n{}\nstderr:\n{}",
        from.label, to.label, run.stdout, run.stderr
    );
    run
}

/// Whether a failed call reports the error `code` on stderr (`error: <code>...`).
fn refused_with(run: &Run, code: &str) -> bool {
    !run.ok && run.stderr.contains("error:") && run.stderr.contains(code)
}

/// Panics unless the call failed with `code`.
fn call_refused(from: &Node, to: &Node, command: &[&str], code: &str) -> Run {
    let run = call(from, to, None, command);
    assert!(
        refused_with(&run, code),
        "{} calling {} {command:?}: expected `error: {code}` and a non-zero exit\nok: {}\nstdout:\n{}\nstderr:\n{}",
        from.label,
        to.label,
        run.ok,
        run.stdout,
        run.stderr
    );
    run
}

/// Every record in `<data>/audit.log` (unparsable lines skipped).
fn audit(data: &Path) -> Vec<Value> {
    std::fs::read_to_string(data.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits until `node`'s audit trail holds a record matching `pred`; returns it.
fn wait_audit(node: &Node, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_until(AUDIT, &format!("{} to audit {what}", node.label), || {
        let records = audit(&node.data);
        records.iter().find(|r| pred(r)).cloned().ok_or_else(|| {
            let kinds: Vec<String> = records
                .iter()
                .map(|r| {
                    format!(
                        "{}({} {})",
                        r["kind"].as_str().unwrap_or("?"),
                        r["peer"].as_str().unwrap_or("-"),
                        r["command"].as_str().unwrap_or("-")
                    )
                })
                .collect();
            format!("{} records: {kinds:?}", records.len())
        })
    })
}

/// Every string in a JSON document, with arrays of byte values (how `--json` prints binary
/// fields) decoded as UTF-8 too.
fn strings_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => {
            let bytes: Option<Vec<u8>> = items
                .iter()
                .map(|i| i.as_u64().and_then(|n| u8::try_from(n).ok()))
                .collect();
            match bytes {
                Some(bytes) if !bytes.is_empty() => {
                    out.push(String::from_utf8_lossy(&bytes).into_owned());
                }
                _ => items.iter().for_each(|i| strings_in(i, out)),
            }
        }
        Value::Object(map) => map.values().for_each(|i| strings_in(i, out)),
        _ => {}
    }
}

/// Whether a call's output shows `text`: literally, as a JSON string, or as JSON byte values
/// (also hex or base64 encoded).
fn shows_value(out: &str, text: &str) -> bool {
    use base64::Engine as _;
    let hex: String = text.bytes().map(|b| format!("{b:02x}")).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(text);
    let mut strings = vec![out.to_owned()];
    if let Ok(v) = serde_json::from_str::<Value>(out) {
        strings_in(&v, &mut strings);
    }
    strings
        .iter()
        .any(|s| s.contains(text) || s.contains(&hex) || s.contains(&b64))
}

#[test]
fn member_lacking_a_right_is_denied_while_operator_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let _seed = net.start_seednode("mainnet");
    let a = join(&net, "a", &["mainnet"], &[], &[]);
    let o = join(&net, "o", &["mainnet"], &["--role", "operator"], &[]);
    let b = join(&net, "b", &["mainnet"], &[], &[]);
    wait_routes(&a, &[&b, &o], "mainnet");
    wait_routes(&b, &[&a], "mainnet");
    wait_routes(&o, &[&a], "mainnet");

    // A plain member may run every read-only command ...
    let pong = call_ok(&b, &a, &["ping"]);
    eprintln!("ping: {}", pong.stdout.trim());
    let info = call_ok(&b, &a, &["info"]);
    assert!(
        info.stdout.contains("mainnet"),
        "info does not name the shared network: {}",
        info.stdout
    );
    let peers = call_ok(&b, &a, &["peers"]);
    assert!(
        peers.stdout.contains(&o.peer_id),
        "A's peers answer does not list O, a member A routes: {}",
        peers.stdout
    );
    let echo = call_ok(&b, &a, &["echo", "hi-from-b"]);
    assert!(
        shows_value(&echo.stdout, "hi-from-b"),
        "echo did not return its text: {}",
        echo.stdout
    );
    // Issue 12, item 7: bytes are shown as text only when they are printable UTF-8, and the
    // JSON says which encoding it used; anything else (here a terminal escape sequence a peer
    // could send back) is base64, so it never reaches the operator's terminal raw.
    let echoed = serde_json::from_str::<Value>(&echo.stdout).expect("JSON");
    assert_eq!(
        echoed["echo"]["payload"],
        serde_json::json!({"encoding": "utf8", "data": "hi-from-b"}),
        "{echoed}"
    );
    let escape = "\u{1b}[2J\u{1b}]0;owned\u{7}";
    let echoed = call_ok(&b, &a, &["echo", escape]);
    let echoed = serde_json::from_str::<Value>(&echoed.stdout).expect("JSON");
    assert_eq!(echoed["echo"]["payload"]["encoding"], "base64", "{echoed}");
    let decoded = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(echoed["echo"]["payload"]["data"].as_str().unwrap())
            .unwrap()
    };
    assert_eq!(decoded, escape.as_bytes());
    let plain = cli(
        "node",
        &[
            "call",
            "--data",
            path_str(&b.data),
            &a.peer_id,
            "echo",
            escape,
        ],
    );
    assert!(plain.ok, "{}", plain.stderr);
    assert!(
        plain.stdout.starts_with("base64:") && !plain.stdout.contains('\u{1b}'),
        "plain output: {:?}",
        plain.stdout
    );
    call_ok(&b, &a, &["dht_get", "k"]);

    // ... but not store a record: the default policy gives `dht_put` to operators only.
    call_refused(&b, &a, &["dht_put", "k", "value-of-b"], "denied");

    // The operator may.
    let value = "value-of-operator-o";
    call_ok(&o, &a, &["dht_put", "k", value]);
    // And the member now reads the operator's record from A.
    let got = call_ok(&b, &a, &["dht_get", "k"]);
    assert!(
        shows_value(&got.stdout, value),
        "B's dht_get k on A does not return O's value {value:?}: {}",
        got.stdout
    );
    assert!(
        !shows_value(&got.stdout, "value-of-b"),
        "the denied put was stored: {}",
        got.stdout
    );

    // A recorded the refusal and the executions.
    let denied = wait_audit(&a, "command_denied for B's dht_put", |r| {
        r["kind"] == "command_denied"
            && r["peer"] == b.peer_id.as_str()
            && r["command"] == "dht_put"
    });
    eprintln!("audit: {denied}");
    wait_audit(&a, "command_executed for O's dht_put", |r| {
        r["kind"] == "command_executed"
            && r["peer"] == o.peer_id.as_str()
            && r["command"] == "dht_put"
    });
    for command in ["ping", "info", "peers", "echo", "dht_get"] {
        wait_audit(&a, &format!("command_executed for B's {command}"), |r| {
            r["kind"] == "command_executed"
                && r["peer"] == b.peer_id.as_str()
                && r["command"] == command
        });
    }
    // Nothing recorded B's put as executed.
    assert!(
        !audit(&a.data)
            .iter()
            .any(|r| r["kind"] == "command_executed"
                && r["peer"] == b.peer_id.as_str()
                && r["command"] == "dht_put"),
        "A's audit has B's dht_put as executed"
    );
}

#[test]
fn peers_lists_only_members_of_the_shared_network() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .network("testnet", "approval")
        .build();
    let _seed_main = net.start_seednode("mainnet");
    let _seed_test = net.start_seednode("testnet");
    let main_seed = net.network("mainnet").seed_peer_id.clone();
    let test_seed = net.network("testnet").seed_peer_id.clone();

    let both = join(&net, "both", &["mainnet", "testnet"], &[], &[]);
    let x = join(&net, "x", &["mainnet"], &[], &[]);
    let y = join(&net, "y", &["mainnet"], &[], &[]);
    let t = join(&net, "t", &["testnet"], &[], &[]);
    // `both` knows members of each network, so a leak would show.
    wait_routes(&both, &[&x, &y], "mainnet");
    wait_routes(&both, &[&t], "testnet");
    wait_routes(&x, &[&both], "mainnet");
    wait_routes(&t, &[&both], "testnet");

    // A mainnet-only caller learns mainnet members only.
    let run = call_ok(&x, &both, &["peers"]);
    assert!(
        run.stdout.contains(&y.peer_id),
        "the mainnet answer lacks y, a mainnet member `both` routes: {}",
        run.stdout
    );
    for (label, id) in [("t", &t.peer_id), ("seed-testnet", &test_seed)] {
        assert!(
            !run.stdout.contains(id.as_str()),
            "a mainnet-only caller learned testnet peer {label} ({id}): {}",
            run.stdout
        );
    }

    // And the other way round.
    let run = call_ok(&t, &both, &["peers"]);
    for (label, id) in [
        ("x", &x.peer_id),
        ("y", &y.peer_id),
        ("seed-mainnet", &main_seed),
    ] {
        assert!(
            !run.stdout.contains(id.as_str()),
            "a testnet-only caller learned mainnet peer {label} ({id}): {}",
            run.stdout
        );
    }

    // Asking explicitly about a network the caller is not a member of is refused.
    let run = call(&x, &both, Some("testnet"), &["peers"]);
    assert!(!run.ok, "x got testnet peers: {}", run.stdout);
    for id in [&t.peer_id, &test_seed] {
        assert!(!run.stdout.contains(id.as_str()) && !run.stderr.contains(id.as_str()));
    }
}

#[test]
fn rate_limit_triggers_at_the_configured_rate_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let limits = dir.path().join("limits.toml");
    std::fs::write(&limits, "rpc_per_peer = { burst = 3, per_sec = 1.0 }\n").unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let _seed = net.start_seednode("mainnet");
    let a = join(
        &net,
        "a",
        &["mainnet"],
        &[],
        &["--limits", path_str(&limits)],
    );
    let b = join(&net, "b", &["mainnet"], &[], &[]);
    // Both sides verified each other on a live connection before the burst, so every call
    // reaches A's limiter (no call is spent on connection setup).
    wait_routes(&a, &[&b], "mainnet");
    wait_routes(&b, &[&a], "mainnet");

    let start = Instant::now();
    let runs: Vec<Run> = (0..5).map(|_| call(&b, &a, None, &["ping"])).collect();
    let took = start.elapsed();
    eprintln!("5 pings took {took:.2?}");
    for (i, run) in runs.iter().take(3).enumerate() {
        assert!(
            run.ok,
            "ping {} of the burst of 3 failed\nstdout:\n{}\nstderr:\n{}",
            i + 1,
            run.stdout,
            run.stderr
        );
    }
    // At 1 call per second refilled, 5 calls within well under 2 s cannot all pass.
    assert!(
        took < Duration::from_millis(1800),
        "the 5 calls took {took:?}: too slow to test a rate of 1 per second"
    );
    let limited: Vec<usize> = runs
        .iter()
        .enumerate()
        .skip(3)
        .filter(|(_, r)| refused_with(r, "rate_limited"))
        .map(|(i, _)| i + 1)
        .collect();
    assert!(
        !limited.is_empty(),
        "neither ping 4 nor 5 was rate_limited: {:?}",
        &runs[3..]
    );
    for r in &runs[3..] {
        assert!(
            r.ok || refused_with(r, "rate_limited"),
            "a call failed for another reason than rate_limited: {r:?}"
        );
    }
    eprintln!("rate limited: call(s) {limited:?}");

    // The bucket refills at 1 per second: after ~2 s calls pass again.
    std::thread::sleep(Duration::from_secs(2));
    wait_until(
        Duration::from_secs(5),
        "a ping to pass again after the refill",
        || {
            let r = call(&b, &a, None, &["ping"]);
            if r.ok { Ok(()) } else { Err(r.stderr) }
        },
    );
}

#[test]
fn explicit_right_in_the_token_lets_a_member_store_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let _seed = net.start_seednode("mainnet");
    let a = join(&net, "a", &["mainnet"], &[], &[]);
    // A plain member whose token carries the explicit right `dht_put` (the delegation allows it).
    let w = join(&net, "w", &["mainnet"], &["--right", "dht_put"], &[]);
    let b = join(&net, "b", &["mainnet"], &[], &[]);
    wait_routes(&a, &[&w, &b], "mainnet");
    wait_routes(&w, &[&a], "mainnet");
    wait_routes(&b, &[&a], "mainnet");

    call_refused(&b, &a, &["dht_put", "k", "from-b"], "denied");
    call_ok(&w, &a, &["dht_put", "k", "from-w"]);
    let got = call_ok(&b, &a, &["dht_get", "k"]);
    assert!(shows_value(&got.stdout, "from-w"), "{}", got.stdout);
}

#[test]
fn a_record_stored_on_one_member_is_read_through_another() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let _seed = net.start_seednode("mainnet");
    let a = join(&net, "a", &["mainnet"], &[], &[]);
    let c = join(&net, "c", &["mainnet"], &[], &[]);
    let w = join(&net, "w", &["mainnet"], &["--right", "dht_put"], &[]);
    wait_routes(&a, &[&c, &w], "mainnet");
    wait_routes(&c, &[&a, &w], "mainnet");
    wait_routes(&w, &[&a, &c], "mainnet");

    // C has never been called with this key: the miss is answered as such.
    let miss = call_ok(&w, &c, &["dht_get", "shared-key"]);
    let miss: Value = serde_json::from_str(&miss.stdout).unwrap();
    assert!(miss["record"]["record"].is_null(), "{miss}");

    // W stores the record on A; A replicates it through mainnet's Kademlia, so C answers it.
    call_ok(&w, &a, &["dht_put", "shared-key", "replicated-value"]);
    wait_until(JOIN, "C to answer the record stored on A", || {
        let got = call_ok(&w, &c, &["dht_get", "shared-key"]);
        if shows_value(&got.stdout, "replicated-value") {
            Ok(())
        } else {
            Err(got.stdout)
        }
    });
}
