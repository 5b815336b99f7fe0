//! DESIGN section 5, outcomes 1 and 2, against real processes on loopback.
//!
//! Each test stands up a mainnet (anchor, seednode, two members approved through the operator
//! CLI) and a testnet (anchor, seednode), then points a raw libp2p client (its own identity, no
//! Cordon node logic) at member 1. The client presents a chosen token on
//! `/cordon/membership/2`, reads the verdict, then asks member 1 for closest peers on
//! `/cordon/mainnet/kad/1.0.0`. A refused client must learn no peer id through Kademlia and must
//! never appear in any mainnet routing table (`node peers --network mainnet --json`).
//!
//! `strict_network_holds_across_presentations_on_one_connection` runs against a strict mainnet
//! and a member of both networks: a client holding genuine mainnet and testnet tokens must not
//! keep mainnet by presenting the two networks in separate requests on one connection.
//!
//! `valid_token_is_accepted_and_kad_answers` is the control: with a genuine token the same
//! client is accepted, FIND_NODE returns members, and the member routes the client. Without it
//! the refusal tests could pass vacuously.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "nonmember/fixture.rs"]
mod fixture;
#[path = "nonmember/raw.rs"]
mod raw;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cordon_membership::{PeerId, SecretKey};
use cordon_protocol::{
    MembershipRequest, NetworkName, NetworkResult, Outcome, PresentedToken, ReasonCode, TokenKind,
};
use fixture::{Network, Options, Proc};
use libp2p::swarm::ConnectionId;
use raw::{FindNode, ProbeFailure, RawClient, State};

/// The members' `auth_timeout` (the `node run` default).
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

fn net_name(s: &str) -> NetworkName {
    s.parse().unwrap()
}

fn membership(network: &str, token: Vec<u8>) -> PresentedToken {
    PresentedToken {
        network: net_name(network),
        kind: TokenKind::Membership,
        token,
    }
}

fn rejected(network: &str, reason: ReasonCode) -> NetworkResult {
    NetworkResult {
        network: net_name(network),
        outcome: Outcome::Rejected { reason },
    }
}

/// Runs `f`; on panic prints the daemons' log tails and the raw client's log, then re-panics.
fn checked<T>(net: &Network, client: &Arc<Mutex<State>>, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(e) => {
            net.dump_logs();
            let log = client
                .lock()
                .map(|s| s.log.join("\n"))
                .unwrap_or_else(|e| e.into_inner().log.join("\n"));
            eprintln!("========== raw client log ==========\n{log}\n");
            std::panic::resume_unwind(e)
        }
    }
}

/// Mainnet processes whose routing tables must never hold a refused peer.
fn mainnet_procs(net: &Network) -> Vec<&Proc> {
    let mut all = vec![&net.main_seed];
    all.extend(net.members.iter().chain(net.dual.as_ref()));
    all
}

/// Every overlay peer id (both seednodes, both members), named.
fn overlay_ids(net: &Network) -> Vec<(PeerId, String)> {
    net.procs()
        .into_iter()
        .map(|p| (p.peer, p.daemon.label.clone()))
        .collect()
}

/// Checks, repeatedly for `window`, that no mainnet process routes `peer`.
fn assert_never_routed(net: &Network, peer: &PeerId, window: Duration) {
    let id = peer.to_string();
    let until = Instant::now() + window;
    loop {
        for proc in mainnet_procs(net) {
            let peers = proc.mainnet_peers();
            assert!(
                !peers.contains(&id),
                "{} routes the refused raw client {id} on mainnet: {peers:?}",
                proc.daemon.label
            );
        }
        if Instant::now() >= until {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A refused FIND_NODE: nothing answered and no peer id was learned.
fn assert_learns_nothing(net: &Network, via: &PeerId, found: &FindNode, when: &str) {
    let learned = found.learned(via);
    let overlay: Vec<String> = overlay_ids(net)
        .into_iter()
        .filter(|(p, _)| found.result.contains(p) || learned.contains(p))
        .map(|(p, name)| format!("{name} ({p})"))
        .collect();
    assert!(
        overlay.is_empty(),
        "{when}: FIND_NODE through the member revealed overlay peers {overlay:?}: {found:?}"
    );
    assert!(
        found.result.is_empty() && learned.is_empty(),
        "{when}: FIND_NODE through the member learned something: {found:?}"
    );
    eprintln!(
        "[{when}] FIND_NODE learned nothing (error: {:?}, took {:.1?})",
        found.error, found.took
    );
}

/// The member refuses to even negotiate its Kademlia protocol with us (the gate, not an empty
/// table, is why FIND_NODE learned nothing).
fn assert_kad_refused(client: &mut RawClient, member: &PeerId, when: &str) {
    let probe = client.probe_kad(member);
    assert_eq!(
        probe,
        Err(ProbeFailure::Unsupported),
        "{when}: the member negotiated /cordon/mainnet/kad/1.0.0 with an unverified peer"
    );
}

/// The member logged the refusal of `peer` with `reason`, and recorded it in its audit trail.
fn assert_refusal_logged(member: &Proc, peer: &PeerId, reason: ReasonCode) {
    let peer = peer.to_string();
    let reason = reason.to_string();
    fixture::wait_for(
        &format!("{} to log the refusal ({reason})", member.daemon.label),
        Duration::from_secs(10),
        || {
            member
                .daemon
                .log()
                .lines()
                .any(|l| {
                    l.contains("membership refused")
                        && l.contains(&peer)
                        && l.contains(&format!("reason={reason}"))
                })
                .then_some(())?;
            // ... and recorded it in its hash-chained audit trail.
            let audit = std::fs::read_to_string(member.data.join("audit.log")).ok()?;
            audit
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .any(|r| {
                    r["kind"] == "membership_refused"
                        && r["peer"] == peer.as_str()
                        && r["reason"] == reason.as_str()
                })
                .then_some(())
        },
    );
}

/// The shared body of the refusal tests: present `request` to member 1, expect exactly
/// `expected`, then prove FIND_NODE learns nothing and nobody routes the client.
/// `expected` is what the client is told; `logged` the reasons the member must log and audit
/// (the wire shows one code for every token that did not verify, DESIGN.md section 4).
fn refused_case(
    name: &str,
    request: impl FnOnce(&Network, &PeerId) -> MembershipRequest,
    expected: Vec<NetworkResult>,
    logged: &[ReasonCode],
) {
    let started = Instant::now();
    let net = Network::start();
    let key = SecretKey::generate();
    let mut client = RawClient::start(&key);
    let shared = client.shared();
    checked(&net, &shared, || {
        let member = &net.members[0];
        let request = request(&net, &client.peer);
        eprintln!(
            "[{name}] raw client {} presents {} token(s) to {} ({})",
            client.peer,
            request.tokens.len(),
            member.daemon.label,
            member.peer
        );
        client.connect(&member.addr, &member.peer);
        let response = client
            .present(&member.peer, request)
            .expect("the member answers the presentation");
        assert_eq!(
            response.results, expected,
            "[{name}] wrong verdict from the member"
        );
        for reason in logged {
            assert_refusal_logged(member, &client.peer, *reason);
        }
        let found = client.find_node(&member.peer, &member.addr);
        assert_learns_nothing(&net, &member.peer, &found, name);
        assert_kad_refused(&mut client, &member.peer, name);
        assert!(
            client.state().connected(&member.peer),
            "[{name}] the connection dropped before the checks ran"
        );
        assert_never_routed(&net, &client.peer, Duration::from_secs(3));
    });
    eprintln!("[{name}] passed in {:.1?}", started.elapsed());
}

#[test]
fn no_token_is_refused_and_learns_no_member() {
    let name = "no_token";
    let started = Instant::now();
    let net = Network::start();
    let key = SecretKey::generate();
    let mut client = RawClient::start(&key);
    let shared = client.shared();
    checked(&net, &shared, || {
        let member = &net.members[0];
        let established = client.connect(&member.addr, &member.peer);

        // 1. Nothing presented at all.
        let found = client.find_node(&member.peer, &member.addr);
        assert_learns_nothing(&net, &member.peer, &found, "no_token/nothing presented");
        assert_kad_refused(&mut client, &member.peer, "no_token/nothing presented");
        assert_never_routed(&net, &client.peer, Duration::from_secs(1));

        // 2. An empty presentation: the member answers, but accepts nothing.
        let response = client
            .present(&member.peer, MembershipRequest::default())
            .expect("the member answers an empty presentation");
        assert!(
            response.results.is_empty(),
            "an empty presentation earned verdicts: {response:?}"
        );
        let found = client.find_node(&member.peer, &member.addr);
        assert_learns_nothing(&net, &member.peer, &found, "no_token/empty presentation");
        assert_kad_refused(&mut client, &member.peer, "no_token/empty presentation");
        assert_never_routed(&net, &client.peer, Duration::from_secs(1));

        // 3. The member closes the unauthenticated connection after its auth timeout.
        let (closed_at, cause) = client.wait(
            "the member to close the unauthenticated connection",
            AUTH_TIMEOUT + Duration::from_secs(15),
            |s| {
                s.conns
                    .get(&member.peer)?
                    .iter()
                    .find(|r| r.established == established)?
                    .closed
                    .clone()
            },
        );
        let after = closed_at - established;
        eprintln!("[{name}] member closed the connection after {after:.1?} ({cause})");
        // Issue 12, item 3: in all that time identify told the stranger nothing (no listen
        // addresses, no protocols): the member serves identify only to peers that proved a
        // network.
        let identified: Vec<_> = client
            .state()
            .identified
            .iter()
            .filter(|(p, _, _)| *p == member.peer)
            .cloned()
            .collect();
        assert!(
            identified.is_empty(),
            "[{name}] the member answered a stranger's identify: {identified:?}"
        );
        assert!(
            after >= AUTH_TIMEOUT - Duration::from_millis(500)
                && after <= AUTH_TIMEOUT + Duration::from_secs(5),
            "connection closed after {after:?}, expected about {AUTH_TIMEOUT:?}"
        );
        let peer = client.peer.to_string();
        fixture::wait_for(
            "the member to log the auth timeout",
            Duration::from_secs(5),
            || {
                member
                    .daemon
                    .log()
                    .lines()
                    .any(|l| l.contains("auth_timeout") && l.contains(&peer))
                    .then_some(())
            },
        );
        let status = member.status().expect("member status");
        assert!(
            status["membership_checks"]["auth_timeouts"].as_u64() >= Some(1),
            "member status does not count the auth timeout: {}",
            status["membership_checks"]
        );
        assert_never_routed(&net, &client.peer, Duration::ZERO);
    });
    eprintln!("[{name}] passed in {:.1?}", started.elapsed());
}

#[test]
fn other_network_token_is_refused_without_naming_the_reason() {
    // A genuine testnet membership for the raw client's own PeerId, issued with the testnet
    // seednode's real key and delegation: it verifies, but member 1 is mainnet-only.
    refused_case(
        "other_network",
        |net, peer| {
            let token = net.mint(
                "testnet",
                peer,
                SystemTime::now(),
                Duration::from_secs(3600),
            );
            MembershipRequest {
                want: Vec::new(),
                tokens: vec![membership("testnet", token)],
            }
        },
        vec![rejected("testnet", ReasonCode::NotMember)],
        &[ReasonCode::UnknownNetwork],
    );
}

#[test]
fn other_network_token_labelled_mainnet_is_refused_without_naming_the_reason() {
    // The same genuine testnet token, but claimed to be for mainnet.
    refused_case(
        "other_network_labelled_mainnet",
        |net, peer| {
            let token = net.mint(
                "testnet",
                peer,
                SystemTime::now(),
                Duration::from_secs(3600),
            );
            MembershipRequest {
                want: Vec::new(),
                tokens: vec![membership("mainnet", token)],
            }
        },
        vec![rejected("mainnet", ReasonCode::NotMember)],
        &[ReasonCode::UnknownNetwork],
    );
}

#[test]
fn expired_token_is_refused_with_expired() {
    // A mainnet membership for the raw client's PeerId, signed by the real seednode under the
    // real delegation, that expired an hour ago (well past any clock-skew allowance).
    refused_case(
        "expired",
        |net, peer| {
            let issued = SystemTime::now() - Duration::from_secs(2 * 3600);
            let token = net.mint("mainnet", peer, issued, Duration::from_secs(3600));
            MembershipRequest {
                want: Vec::new(),
                tokens: vec![membership("mainnet", token)],
            }
        },
        vec![rejected("mainnet", ReasonCode::Expired)],
        &[ReasonCode::Expired],
    );
}

#[test]
fn copied_token_is_refused_with_wrong_subject() {
    // Member 2's real token file, presented by the raw client (another PeerId) to member 1.
    refused_case(
        "copied",
        |net, _peer| {
            let path = net.members[1].data.join("tokens").join("mainnet.biscuit");
            let token =
                std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            MembershipRequest {
                want: Vec::new(),
                tokens: vec![membership("mainnet", token)],
            }
        },
        vec![rejected("mainnet", ReasonCode::WrongSubject)],
        &[ReasonCode::WrongSubject],
    );
}

/// Issue 12, item 2: refusals are not an oracle for a node's networks. Clients present tokens
/// that do not verify (garbage; memberships forged on a real mainnet or testnet delegation,
/// claiming its seednode's signature, so only the signature checks refuse them) labelled
/// mainnet, testnet and labnet, to a mainnet member and to the testnet seednode. Every answer
/// is the same code, whichever network the receiver is in; the reasons (malformed,
/// bad_signature, unknown_network) are in the receivers' logs and audit trails.
#[test]
fn a_stranger_cannot_tell_from_refusals_which_networks_a_node_is_in() {
    let started = Instant::now();
    let net = Network::start();
    let labels = ["mainnet", "testnet", "labnet"];
    let root = net.dir.path();
    let forged = |network: &str, key: &SecretKey| {
        let delegation =
            std::fs::read(root.join(format!("{network}.delegation"))).expect("the delegation");
        let seednode = SecretKey::load(&root.join(format!("seed-{network}")).join("identity.key"))
            .expect("the seednode's key")
            .public();
        cordon_tests::forge::membership(&delegation, key, Some(&seednode))
    };
    let targets = [(&net.members[0], "mainnet"), (&net.test_seed, "testnet")];
    let kinds = ["garbage", "forged mainnet", "forged testnet"];
    let mut answers = Vec::new();
    let mut ip = 60;
    for (target, joined) in targets {
        for kind in kinds {
            // One client per kind and target, from its own address: three failed presentations
            // stay under the ban threshold (five).
            ip += 1;
            let key = SecretKey::generate();
            let mut client = RawClient::start_at(&key, &format!("127.0.0.{ip}"));
            let shared = client.shared();
            checked(&net, &shared, || {
                let token = match kind {
                    "garbage" => b"not a biscuit at all".to_vec(),
                    "forged mainnet" => forged("mainnet", &key),
                    _ => forged("testnet", &key),
                };
                client.connect(&target.addr, &target.peer);
                for label in labels {
                    let response = client
                        .present(
                            &target.peer,
                            MembershipRequest {
                                want: Vec::new(),
                                tokens: vec![membership(label, token.clone())],
                            },
                        )
                        .expect("the target answers");
                    eprintln!(
                        "{} ({joined}): {kind} labelled {label}: {:?}",
                        target.daemon.label, response.results
                    );
                    answers.push(((target.daemon.label.clone(), kind, label), response.results));
                }
                // The reasons stay local: a label this target is not in is unknown there; its
                // own network's label is malformed (garbage), or bad_signature (its own
                // network's forgery) or unknown_network (the other network's, whose anchor is
                // not trusted for it).
                let own = match kind {
                    "garbage" => ReasonCode::Malformed,
                    k if k.ends_with(joined) => ReasonCode::BadSignature,
                    _ => ReasonCode::UnknownNetwork,
                };
                assert_refusal_logged(target, &client.peer, own);
                assert_refusal_logged(target, &client.peer, ReasonCode::UnknownNetwork);
            });
        }
    }
    let differ: Vec<_> = answers
        .iter()
        .filter(|((_, _, label), results)| *results != vec![rejected(label, ReasonCode::NotMember)])
        .collect();
    assert!(
        differ.is_empty(),
        "refusals that tell a stranger something (every answer must be not_member): {differ:#?}"
    );
    assert_eq!(answers.len(), 2 * kinds.len() * labels.len());
    eprintln!("[oracle] passed in {:.1?}", started.elapsed());
}

#[test]
fn valid_token_is_accepted_and_kad_answers() {
    let name = "valid";
    let started = Instant::now();
    let net = Network::start();
    let key = SecretKey::generate();
    let mut client = RawClient::start(&key);
    let shared = client.shared();
    checked(&net, &shared, || {
        let member = &net.members[0];
        let others: BTreeSet<PeerId> = [net.members[1].peer, net.main_seed.peer].into();
        let token = net.mint(
            "mainnet",
            &client.peer,
            SystemTime::now(),
            Duration::from_secs(3600),
        );
        let request = MembershipRequest {
            want: Vec::new(),
            tokens: vec![membership("mainnet", token)],
        };
        let established = client.connect(&member.addr, &member.peer);
        let response = client
            .present(&member.peer, request.clone())
            .expect("the member answers the presentation");
        assert_eq!(
            response.results,
            vec![NetworkResult {
                network: net_name("mainnet"),
                outcome: Outcome::Accepted,
            }],
            "a valid token was not accepted"
        );
        // Peers learned through FIND_NODE get the same (valid) presentation when we dial them.
        client.auto_present(Some(request));

        // FIND_NODE through member 1 reveals the other mainnet peers.
        let first = client.find_node(&member.peer, &member.addr);
        eprintln!("[{name}] first FIND_NODE: {first:?}");
        assert!(
            first.result.contains(&member.peer),
            "member 1 did not answer FIND_NODE after accepting us: {first:?}"
        );
        let learned = first.learned(&member.peer);
        assert!(
            learned.iter().any(|p| others.contains(p)),
            "FIND_NODE through member 1 revealed none of {others:?}: {first:?}"
        );

        // The gate is open: the member negotiates its Kademlia protocol with us now (our probe
        // is not Kademlia, so the member's kad then drops the stream).
        let probe = client.probe_kad(&member.peer);
        assert!(
            probe != Err(ProbeFailure::Unsupported),
            "the member refused Kademlia to a verified peer: {probe:?}"
        );
        eprintln!("[{name}] kad protocol probe after Accepted: {probe:?}");

        // Member 1 routes the verified client: the check the refusal tests rely on can fail.
        let id = client.peer.to_string();
        fixture::wait_for(
            "member 1 to route the verified raw client",
            Duration::from_secs(15),
            || member.mainnet_peers().contains(&id).then_some(()),
        );

        // Once the learned peers verified us too, a second query returns them as answers.
        client.wait(
            "a learned member to accept the raw client",
            Duration::from_secs(20),
            |s| {
                others
                    .iter()
                    .any(|p| learned.contains(p) && s.accepted_by.contains(p))
                    .then_some(())
            },
        );
        let second = client.find_node(&member.peer, &member.addr);
        eprintln!("[{name}] second FIND_NODE: {second:?}");
        assert!(
            second.result.iter().any(|p| others.contains(p)),
            "the FIND_NODE result holds none of {others:?}: {second:?}"
        );

        // A verified connection outlives the auth timeout (the refused one does not).
        let deadline = established + AUTH_TIMEOUT + Duration::from_secs(3);
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        }
        assert!(
            client.state().connected(&member.peer),
            "member 1 closed a verified connection"
        );
    });
    eprintln!("[{name}] passed in {:.1?}", started.elapsed());
}

/// The single open connection the raw client has to `peer`; panics if there is none, or if there
/// ever was another one (a reconnect or a second connection would make later checks test a
/// different connection).
fn only_connection(client: &RawClient, peer: &PeerId, when: &str) -> ConnectionId {
    let state = client.state();
    let records = state.conns.get(peer).map(Vec::as_slice).unwrap_or_default();
    match records {
        [one] if one.closed.is_none() => one.id,
        _ => panic!(
            "{when}: expected exactly one open connection to {peer} (no reconnect), found \
             {records:?}"
        ),
    }
}

/// Whether `member` logged and audited a `strict_network` refusal or withdrawal for `peer`.
fn strict_network_recorded(member: &Proc, peer: &PeerId) -> (bool, bool) {
    let peer = peer.to_string();
    let reason = ReasonCode::StrictNetwork.to_string();
    let logged = member
        .daemon
        .log()
        .lines()
        .any(|l| l.contains(&peer) && l.contains(&reason));
    let audited = std::fs::read_to_string(member.data.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|r| r["peer"] == peer.as_str() && r["reason"] == reason.as_str());
    (logged, audited)
}

/// Genuine mainnet and testnet memberships for `peer`, issued by the real seednodes.
fn mainnet_and_testnet(net: &Network, peer: &PeerId) -> (PresentedToken, PresentedToken) {
    let mint = |network| {
        let token = net.mint(network, peer, SystemTime::now(), Duration::from_secs(3600));
        membership(network, token)
    };
    (mint("mainnet"), mint("testnet"))
}

#[test]
fn strict_network_holds_across_presentations_on_one_connection() {
    let name = "strict_across";
    let started = Instant::now();
    let net = Network::start_with(Options {
        strict_mainnet: true,
        dual_member: true,
        ..Options::default()
    });
    let target = net
        .dual
        .as_ref()
        .expect("the fixture started the dual member");

    // 1. Control: both networks in ONE presentation -> mainnet refuses with strict_network.
    let key = SecretKey::generate();
    let mut client = RawClient::start(&key);
    let shared = client.shared();
    checked(&net, &shared, || {
        let (main, test) = mainnet_and_testnet(&net, &client.peer);
        client.connect(&target.addr, &target.peer);
        let response = client
            .present(
                &target.peer,
                MembershipRequest {
                    want: Vec::new(),
                    tokens: vec![main, test],
                },
            )
            .expect("the target answers the presentation");
        eprintln!("[{name}] one presentation of mainnet+testnet: {response:?}");
        let verdict = response
            .results
            .iter()
            .find(|r| r.network == net_name("mainnet"));
        assert_eq!(
            verdict.map(|r| &r.outcome),
            Some(&Outcome::Rejected {
                reason: ReasonCode::StrictNetwork
            }),
            "[{name}] strict mainnet did not refuse a peer presenting mainnet and testnet in one \
             request: {response:?}"
        );
        assert_refusal_logged(target, &client.peer, ReasonCode::StrictNetwork);
        assert_kad_refused(&mut client, &target.peer, &format!("{name}/one request"));
        assert_never_routed(&net, &client.peer, Duration::from_secs(2));
    });
    drop(client);

    // 2. The attack: a second identity presents mainnet, then testnet, on one connection.
    let key = SecretKey::generate();
    let mut client = RawClient::start(&key);
    let shared = client.shared();
    checked(&net, &shared, || {
        let id = client.peer.to_string();
        let (main, test) = mainnet_and_testnet(&net, &client.peer);
        client.connect(&target.addr, &target.peer);
        let conn = only_connection(&client, &target.peer, "after connecting");
        eprintln!(
            "[{name}] attacker {} on connection {conn} to {} ({})",
            client.peer, target.daemon.label, target.peer
        );

        // 2a. Mainnet alone is accepted and opens the mainnet gate: the setup works.
        let response = client
            .present(
                &target.peer,
                MembershipRequest {
                    want: Vec::new(),
                    tokens: vec![main],
                },
            )
            .expect("the target answers the mainnet presentation");
        assert_eq!(
            response.results,
            vec![NetworkResult {
                network: net_name("mainnet"),
                outcome: Outcome::Accepted,
            }],
            "[{name}] a lone genuine mainnet token was not accepted"
        );
        let probe = client.probe_kad(&target.peer);
        assert!(
            probe != Err(ProbeFailure::Unsupported),
            "[{name}] the target refused mainnet Kademlia after accepting mainnet: {probe:?}"
        );
        eprintln!("[{name}] kad probe after the mainnet presentation: {probe:?}");
        fixture::wait_for(
            "the target to route the attacker on mainnet",
            Duration::from_secs(15),
            || target.mainnet_peers().contains(&id).then_some(()),
        );
        assert_eq!(
            only_connection(&client, &target.peer, "after the mainnet presentation"),
            conn
        );

        // 2b. Testnet alone, on the same connection. Whatever the testnet verdict, strict
        // mainnet must now be withdrawn on this connection.
        let response = client
            .present(
                &target.peer,
                MembershipRequest {
                    want: Vec::new(),
                    tokens: vec![test],
                },
            )
            .expect("the target answers the testnet presentation");
        eprintln!("[{name}] testnet presentation on the same connection: {response:?}");
        let window = Duration::from_secs(15);
        let deadline = Instant::now() + window;
        loop {
            let probe = client.probe_kad(&target.peer);
            assert_eq!(
                only_connection(&client, &target.peer, "after the testnet presentation"),
                conn,
                "[{name}] the probe ran on another connection"
            );
            let routed = target.mainnet_peers().contains(&id);
            let (logged, audited) = strict_network_recorded(target, &client.peer);
            let closed = probe == Err(ProbeFailure::Unsupported);
            if closed && !routed && logged && audited {
                eprintln!(
                    "[{name}] mainnet withdrawn on connection {conn} after the testnet \
                     presentation"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "[{name}] STRICT BYPASS: after presenting mainnet and then testnet in separate \
                 requests on one connection ({conn}), strict mainnet stayed open for {window:?}: \
                 mainnet kad gate {} (probe: {probe:?}, expected Unsupported); the target {} the \
                 attacker in its mainnet routing table; strict_network logged: {logged}, \
                 audited: {audited}",
                if closed { "closed" } else { "STILL OPEN" },
                if routed {
                    "STILL ROUTES"
                } else {
                    "no longer routes"
                },
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    eprintln!("[{name}] passed in {:.1?}", started.elapsed());
}

/// The seednode's head version held by `proc` for mainnet (from `node status`).
fn seed_head_version(proc: &Proc, seed: &PeerId) -> Option<u64> {
    let status = proc.status()?;
    let network = status["networks"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == "mainnet")?
        .clone();
    network["revocation_heads"]
        .as_array()?
        .iter()
        .find(|h| h["signer"] == seed.to_string().as_str())
        .and_then(|h| h["version"].as_u64())
}

/// A member peer (a raw client holding a genuine token) keeps an early revocation head, then
/// feeds it back after a newer head revoked someone: the member ignores it, keeps the newer
/// head, and keeps refusing the revoked peer.
#[test]
fn member_feeding_an_old_revocation_head_is_ignored() {
    use cordon_protocol::{RevocationRequest, RevocationResponse};

    let net = Network::start();
    let key = SecretKey::generate();
    let mut client = RawClient::start(&key);
    let shared = client.shared();
    checked(&net, &shared, || {
        let member = &net.members[0];
        let victim = &net.members[1];
        let seed = net.main_seed.peer;
        let token = net.mint(
            "mainnet",
            &client.peer,
            SystemTime::now(),
            Duration::from_secs(3600),
        );
        become_member(&mut client, member, token);

        // Ask for everything the member holds: the seednode's current head.
        let old = fixture::wait_for(
            "the member to serve the seednode's head",
            Duration::from_secs(20),
            || match client.revocation(
                &member.peer,
                RevocationRequest::Sync {
                    network: net_name("mainnet"),
                    heads: Vec::new(),
                    keep: false,
                },
            ) {
                Ok(RevocationResponse::Updates { updates, .. }) if !updates.is_empty() => {
                    Some(updates[0].clone())
                }
                _ => None,
            },
        );
        let old_version = seed_head_version(member, &seed).expect("member holds a head");

        // The operator revokes member 2; member 1 drops it on the newer head.
        let out = std::process::Command::new(cordon_tests::bin("seednode"))
            .args([
                "revoke",
                "--peer",
                &victim.peer.to_string(),
                "--data",
                net.main_seed.data.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let victim_id = victim.peer.to_string();
        fixture::wait_for(
            "member 1 to drop the revoked member",
            Duration::from_secs(30),
            || (!member.mainnet_peers().contains(&victim_id)).then_some(()),
        );
        let new_version = seed_head_version(member, &seed).unwrap();
        assert!(new_version > old_version);

        // The old head, fed back by a member, is acknowledged and ignored.
        let answer = client.revocation(
            &member.peer,
            RevocationRequest::Push {
                network: net_name("mainnet"),
                update: old,
            },
        );
        assert_eq!(answer, Ok(RevocationResponse::Ack));
        assert_eq!(
            seed_head_version(member, &seed),
            Some(new_version),
            "the member rolled back to the old head"
        );
        cordon_tests::hold_for(Duration::from_secs(5), || {
            assert!(
                !member.mainnet_peers().contains(&victim_id),
                "the revoked member is routed again after the old head"
            );
        });
    });
}

/// The records of `kind` in a process's audit log.
fn audit_of(proc: &Proc, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(proc.data.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["kind"] == kind)
        .collect()
}

/// A member's ping to another, through the CLI.
fn ping(from: &Proc, to: &PeerId) -> cordon_tests::Run {
    cordon_tests::cli(
        "node",
        &[
            "call",
            "--data",
            from.data.to_str().unwrap(),
            "--network",
            "mainnet",
            &to.to_string(),
            "ping",
        ],
    )
}

/// Issue 11, item 1: a stranger floods a member with `Deliver` messages on `/cordon/join/1`
/// carrying a copy of the member's own token (every peer it presented to has one). Before the
/// fix each was verified on the event loop, stored (two fsyncs) and answered `ack`, and the
/// stranger was never cut off. Now a delivery is accepted only from a peer proven as a seednode
/// of the network on that connection while a join or renewal is pending: the flood is refused
/// unverified, counts toward bans (the stranger is banned and disconnected), writes nothing to
/// the data directory, and calls between members keep answering throughout.
#[test]
fn unsolicited_token_deliveries_are_refused_and_the_flooder_is_banned() {
    use cordon_protocol::JoinMessage;

    let net = Network::start();
    let key = SecretKey::generate();
    let client = RawClient::start(&key);
    let shared = client.shared();
    checked(&net, &shared, || {
        let member = &net.members[0];
        let other = &net.members[1];
        let token_file = member.data.join("tokens").join("mainnet.biscuit");
        let own_token = std::fs::read(&token_file).expect("the member holds its token");
        let written = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified());
        let token_mtime = written(&token_file).unwrap();
        let pending_file = member.data.join("join_state.json");
        let pending_before = written(&pending_file).ok();

        client.connect(&member.addr, &member.peer);
        client.join_flood(
            &member.peer,
            JoinMessage::Deliver {
                network: net_name("mainnet"),
                request_id: 1,
                token: own_token.clone(),
            },
            2_000,
            16,
        );
        // Calls between members keep answering during the flood.
        for i in 0..5 {
            let answer = ping(other, &member.peer);
            assert!(answer.ok, "ping {i} during the flood: {}", answer.stderr);
        }
        let flood = fixture::wait_for(
            "the flood to end (answered, refused or cut off)",
            Duration::from_secs(60),
            || {
                let s = client.state();
                let f = s.join_flood.clone();
                let cut_off = !s.connected(&member.peer);
                let answered = f.answers.values().sum::<u64>() + f.failures;
                (cut_off || answered >= 2_000).then_some(f)
            },
        );
        eprintln!("flood: {flood:?}");
        assert!(
            !flood.answers.contains_key("Ack"),
            "an unsolicited delivery was accepted: {flood:?}"
        );
        // The stranger is banned, and the connection it flooded on is closed.
        fixture::wait_for(
            "the member to ban the flooder",
            Duration::from_secs(20),
            || {
                audit_of(member, "ban_applied")
                    .iter()
                    .any(|r| r["peer"] == client.peer.to_string().as_str())
                    .then_some(())
            },
        );
        fixture::wait_for(
            "the flooder to be disconnected",
            Duration::from_secs(20),
            || (!client.state().connected(&member.peer)).then_some(()),
        );
        // Nothing was written to the data directory: the token file and the pending requests
        // are as they were, and the member still holds the same token.
        assert_eq!(
            written(&token_file).unwrap(),
            token_mtime,
            "token file rewritten"
        );
        assert_eq!(std::fs::read(&token_file).unwrap(), own_token);
        assert_eq!(
            written(&pending_file).ok(),
            pending_before,
            "pending requests rewritten"
        );
        let answer = ping(other, &member.peer);
        assert!(answer.ok, "ping after the flood: {}", answer.stderr);
    });
}

/// Issue 11, item 4: a seednode used to present every delegation it holds on every inbound
/// connection, so any stranger learned which networks it serves. Now a stranger that asks for
/// nothing is shown nothing; one that asks for a network is shown that network's delegation
/// only (the same no-leak rule members follow).
#[test]
fn a_seednode_shows_a_stranger_nothing_until_asked_and_then_only_what_was_asked() {
    let net = Network::start();
    let key = SecretKey::generate();
    let mut client = RawClient::start(&key);
    let shared = client.shared();
    checked(&net, &shared, || {
        let seed = &net.main_seed;
        client.connect(&seed.addr, &seed.peer);
        // Long enough for any presentation at connection time to arrive.
        std::thread::sleep(Duration::from_secs(3));
        let shown = client.state().presented_to_us.clone();
        assert!(shown.is_empty(), "shown to a stranger: {shown:?}");

        let answer = client
            .present(
                &seed.peer,
                MembershipRequest {
                    want: vec![net_name("testnet"), net_name("mainnet")],
                    tokens: Vec::new(),
                },
            )
            .expect("the seednode answers");
        assert!(answer.results.is_empty(), "{answer:?}");
        // The delegation comes in the answer, and nothing else is shown.
        let networks: Vec<(String, TokenKind)> = answer
            .tokens
            .iter()
            .map(|t| (t.network.to_string(), t.kind))
            .collect();
        let shown = client.state().presented_to_us.clone();
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert_eq!(
            networks,
            vec![("mainnet".to_owned(), TokenKind::Delegation)]
        );
    });
}

/// Issue 11, item 3: a `dht_get` that missed locally is answered from the network's Kademlia.
/// The answer's key used to be taken on trust and the first answer won, so a hostile member
/// answering every GET_VALUE with a validly signed record for another key got that record served
/// as the answer. Now a record is taken only if it is for the key asked and verifies, and the
/// lookup keeps going past answers that are not.
#[test]
fn a_member_answering_get_value_with_another_keys_record_is_not_believed() {
    use cordon_protocol::SignedRecord;

    let net = Network::start();
    let key = SecretKey::generate();
    let mut client = RawClient::start(&key);
    let shared = client.shared();
    checked(&net, &shared, || {
        let asked = &net.members[0];
        let caller = &net.members[1];
        // The hostile peer is a member the policy allows to put (an operator), so its record
        // would be believed for its own key: only the key check stands in the way.
        let token = net.mint_with_role(
            "mainnet",
            &client.peer,
            "operator",
            SystemTime::now(),
            Duration::from_secs(3600),
        );
        // A validly signed record, with its publisher's token, but for the key "decoy",
        // answered to every GET_VALUE.
        let signed = SignedRecord::sign(
            &key.libp2p_keypair(),
            &net_name("mainnet"),
            b"decoy".to_vec(),
            b"planted".to_vec(),
            1,
            unix_now(),
        )
        .unwrap();
        let value = cordon_protocol::encode(
            &cordon_protocol::ReplicatedRecord {
                record: signed,
                token: token.clone(),
            },
            64 * 1024,
        )
        .unwrap();
        client.answer_every_get_with(libp2p::kad::Record::new(b"decoy".to_vec(), value));
        // The hostile peer is a member: the asked member routes it and queries it.
        become_member(&mut client, asked, token);

        let got = fixture::cli_json(
            "node",
            &[
                "call",
                "--data",
                caller.data.to_str().unwrap(),
                "--network",
                "mainnet",
                "--json",
                &asked.peer.to_string(),
                "dht_get",
                "wanted",
            ],
        )
        .expect("the dht_get call answers");
        eprintln!("dht_get wanted -> {got}");
        assert!(
            got["record"]["record"].is_null(),
            "another key's record was served for \"wanted\": {got}"
        );
        // The control: asked for its own key, the same answer is believed (the lookup reached
        // the hostile member, and only the key check refused its answer above).
        let decoy = dht_get(caller, &asked.peer, "decoy");
        assert_eq!(
            decoy["record"]["record"]["value"]["data"], "planted",
            "{decoy}"
        );
    });
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A member's `dht_get KEY` on `on`, through the CLI: the JSON answer.
fn dht_get(from: &Proc, on: &PeerId, key: &str) -> serde_json::Value {
    fixture::cli_json(
        "node",
        &[
            "call",
            "--data",
            from.data.to_str().unwrap(),
            "--network",
            "mainnet",
            "--json",
            &on.to_string(),
            "dht_get",
            key,
        ],
    )
    .unwrap_or_else(|| panic!("dht_get {key} answers"))
}

/// The raw client connects to `to` and presents `token` for `network`, which must be accepted.
fn present_accepted(client: &mut RawClient, to: &Proc, network: &str, token: Vec<u8>) {
    client.connect(&to.addr, &to.peer);
    let response = client
        .present(
            &to.peer,
            MembershipRequest {
                want: Vec::new(),
                tokens: vec![membership(network, token)],
            },
        )
        .unwrap_or_else(|e| panic!("{} answers the presentation: {e}", to.daemon.label));
    assert_eq!(response.results[0].outcome, Outcome::Accepted);
}

/// The raw client presents `token` to `member` and waits until the member routes it.
fn become_member(client: &mut RawClient, member: &Proc, token: Vec<u8>) {
    present_accepted(client, member, "mainnet", token);
    let id = client.peer.to_string();
    fixture::wait_for(
        "the member to route the raw member",
        Duration::from_secs(20),
        || member.mainnet_peers().contains(&id).then_some(()),
    );
}

/// Issue 12, item 3: the addresses a verified member claims are filtered before they enter a
/// routing table (and from there every member's FIND_NODE answers and the address book).
/// Raw members claim private, public, undialable (QUIC, DNS, which Cordon does not dial) and
/// never-dialable (multicast, unspecified) addresses. Mainnet accepts private addresses (its
/// descriptor says so: every process here is on loopback) and keeps the private and public
/// TCP ones; testnet does not, and keeps only the public one.
#[test]
fn claimed_addresses_are_filtered_before_they_are_routed() {
    let started = Instant::now();
    let net = Network::start_with(Options {
        public_testnet: true,
        ..Options::default()
    });
    let claims: Vec<libp2p::Multiaddr> = [
        "/ip4/10.1.2.3/tcp/4001",
        "/ip4/203.0.113.7/tcp/4001",
        "/ip4/203.0.113.7/udp/4001/quic-v1",
        "/dns4/example.org/tcp/4001",
        "/ip4/224.0.0.1/tcp/4001",
        "/ip4/0.0.0.0/tcp/4001",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    let hour = Duration::from_secs(3600);
    let routed = |proc: &Proc, network: &str, peer: &PeerId| -> BTreeSet<String> {
        fixture::wait_for(
            &format!("{} to route the raw member in {network}", proc.daemon.label),
            Duration::from_secs(20),
            || {
                proc.routed_addrs(network, &peer.to_string())
                    .filter(|a| !a.is_empty())
            },
        )
        .into_iter()
        // `node peers` shows each address with the peer's /p2p suffix.
        .map(|a| a.split("/p2p/").next().unwrap_or_default().to_owned())
        .collect()
    };

    let key = SecretKey::generate();
    let mut client = RawClient::start(&key);
    let shared = client.shared();
    checked(&net, &shared, || {
        client.claim(claims.clone());
        let member = &net.members[0];
        let token = net.mint("mainnet", &client.peer, SystemTime::now(), hour);
        become_member(&mut client, member, token);
        let real = client.state().listen[0].to_string();
        let got = routed(member, "mainnet", &client.peer);
        let want: BTreeSet<String> = [
            real.as_str(),
            "/ip4/10.1.2.3/tcp/4001",
            "/ip4/203.0.113.7/tcp/4001",
        ]
        .map(str::to_owned)
        .into();
        assert_eq!(got, want, "mainnet (private addresses accepted)");
    });

    let key = SecretKey::generate();
    let mut client = RawClient::start(&key);
    let shared = client.shared();
    checked(&net, &shared, || {
        client.claim(claims.clone());
        let seed = &net.test_seed;
        let token = net.mint("testnet", &client.peer, SystemTime::now(), hour);
        present_accepted(&mut client, seed, "testnet", token);
        let got = routed(seed, "testnet", &client.peer);
        let want: BTreeSet<String> = ["/ip4/203.0.113.7/tcp/4001".to_owned()].into();
        assert_eq!(got, want, "testnet (public addresses only)");
    });
    eprintln!("[claimed_addresses] passed in {:.1?}", started.elapsed());
}

/// Issue 11, item 2: a plain member, whose rpc `dht_put` the default policy denies, pushes
/// records straight into another member's Kademlia by raw PUT_VALUE: records signed by
/// throw-away keys and records it signed itself, bare (as they travelled before the fix) and
/// wrapped with its own membership token. Before the fix every bare one was stored, served to
/// other members' `dht_get` and re-replicated. Now a replicated record must carry its
/// publisher's membership token and is kept only if that token proves the publisher a member
/// allowed `dht_put`: nothing is stored or served, each refusal is audited, the rpc `dht_put`
/// stays denied, and the store still takes a record from a member allowed to put.
#[test]
fn a_member_without_dht_put_cannot_store_records_through_raw_put_value() {
    use cordon_protocol::{
        Command, ReplicatedRecord, RpcErrorCode, RpcRequest, RpcResponse, RpcResult, SignedRecord,
    };

    let net = Network::start();
    let key = SecretKey::generate();
    let mut client = RawClient::start(&key);
    let shared = client.shared();
    checked(&net, &shared, || {
        let target = &net.members[0];
        let reader = &net.members[1];
        let mainnet = net_name("mainnet");
        let hour = Duration::from_secs(3600);
        let token = net.mint("mainnet", &client.peer, SystemTime::now(), hour);
        become_member(&mut client, target, token.clone());

        let sign = |keypair: &libp2p::identity::Keypair, k: &str, value: &[u8], seq: u64| {
            SignedRecord::sign(
                keypair,
                &mainnet,
                k.as_bytes().to_vec(),
                value.to_vec(),
                seq,
                unix_now(),
            )
            .unwrap()
        };
        let own = key.libp2p_keypair();
        let put_request = |record: SignedRecord, token: &[u8]| RpcRequest {
            network: mainnet.clone(),
            command: Command::DhtPut {
                record,
                token: token.to_vec(),
            },
        };
        // The member's rpc `dht_put` of record `seq` must be denied.
        let assert_rpc_put_denied = |client: &mut RawClient, seq: u64, when: &str| {
            let put = client
                .rpc(
                    &target.peer,
                    put_request(sign(&own, "rpc-key", b"v", seq), &token),
                )
                .expect("the rpc answers");
            assert!(
                matches!(
                    put,
                    RpcResponse::Err {
                        code: RpcErrorCode::Denied,
                        ..
                    }
                ),
                "the plain member's rpc dht_put was not denied {when}: {put:?}"
            );
        };
        // The rpc path is closed to a plain member by the default policy.
        assert_rpc_put_denied(&mut client, 1, "at first");

        // The raw path: 10 records each of four kinds.
        let mut keys = Vec::new();
        for i in 0..40 {
            let k = format!("junk-{i}");
            let throwaway = SecretKey::generate().libp2p_keypair();
            let value = match i % 4 {
                // Signed by a throw-away key, bare.
                0 => cordon_protocol::encode(&sign(&throwaway, &k, b"junk", 1), 64 * 1024),
                // Signed by the member itself, bare.
                1 => cordon_protocol::encode(&sign(&own, &k, b"squat", 1), 64 * 1024),
                // Signed by a throw-away key, with the member's (valid) token.
                2 => cordon_protocol::encode(
                    &ReplicatedRecord {
                        record: sign(&throwaway, &k, b"junk", 1),
                        token: token.clone(),
                    },
                    64 * 1024,
                ),
                // Signed by the member, with its own token: a member, but without `dht_put`.
                _ => cordon_protocol::encode(
                    &ReplicatedRecord {
                        record: sign(&own, &k, b"squat", 1),
                        token: token.clone(),
                    },
                    64 * 1024,
                ),
            }
            .unwrap();
            let outcome = client.put_record_to(
                &target.peer,
                libp2p::kad::Record::new(k.clone().into_bytes(), value),
            );
            eprintln!("PUT_VALUE {k}: {outcome:?}");
            keys.push(k);
        }
        // Another member asks for one of each kind, and more: none is served.
        for k in keys.iter().take(8) {
            let got = dht_get(reader, &target.peer, k);
            assert!(
                got["record"]["record"].is_null(),
                "a record pushed by raw PUT_VALUE was served for {k}: {got}"
            );
        }
        // Each refusal is in the target's audit.
        let client_id = client.peer.to_string();
        fixture::wait_for(
            "the target to audit the refused replicated records",
            Duration::from_secs(30),
            || {
                audit_of(target, "command_denied")
                    .iter()
                    .any(|r| r["peer"] == client_id.as_str() && r["command"] == "dht_replicate")
                    .then_some(())
            },
        );
        // The rpc path is still closed.
        assert_rpc_put_denied(&mut client, 2, "after the pushes");

        // A member the policy allows to put (an operator) still stores, with its token, and
        // the record is served.
        let operator_key = SecretKey::generate();
        let mut operator = RawClient::start(&operator_key);
        let operator_token = net.mint_with_role(
            "mainnet",
            &operator.peer,
            "operator",
            SystemTime::now(),
            hour,
        );
        become_member(&mut operator, target, operator_token.clone());
        let stored = operator
            .rpc(
                &target.peer,
                put_request(
                    sign(&operator_key.libp2p_keypair(), "junk-0", b"legit", 1),
                    &operator_token,
                ),
            )
            .expect("the rpc answers");
        assert_eq!(stored, RpcResponse::Ok(RpcResult::Stored));
        let got = dht_get(reader, &target.peer, "junk-0");
        assert_eq!(got["record"]["record"]["value"]["data"], "legit", "{got}");
    });
}

/// Issue 11, item 7: strangers on 120 source addresses (127.0.0.2 to 127.0.0.121; only
/// 127.0.0.1 is exempt from per-address limits) flood a member with forged memberships, each
/// distinct: a quarter with a membership block they signed themselves, the rest with one
/// claiming the seednode's signature, which only signature checks refuse. Meanwhile a member presents its
/// own token 200 times, and 20 members never verified before (on 127.0.1.1 to 127.0.1.20, so
/// another /24 prefix) present theirs once each. Before the fix every forged presentation took
/// a place in the 64-place verification queue, and members were refused `rate_limited` while
/// it was full. Now a membership verified before is answered from the verdict cache without
/// queueing, a self-signed block fails the signature-free pre-check, and each source address
/// (8 places) and prefix (32) gets only a share of the queue: no member's presentation is
/// refused, and no stranger's is accepted.
#[test]
fn presentations_from_many_addresses_never_refuse_a_member() {
    const ATTACKERS: u32 = 120;
    const NEWCOMERS: u32 = 20;
    let net = Network::start();
    let key = SecretKey::generate();
    let mut member = RawClient::start(&key);
    let shared = member.shared();
    checked(&net, &shared, || {
        let target = &net.members[0];
        let hour = Duration::from_secs(3600);
        let token = net.mint("mainnet", &member.peer, SystemTime::now(), hour);
        become_member(&mut member, target, token.clone());

        let delegation =
            std::fs::read(net.dir.path().join("mainnet.delegation")).expect("the delegation");
        let seednode = SecretKey::load(&net.dir.path().join("seed-mainnet").join("identity.key"))
            .expect("the seednode's key")
            .public();
        let attackers: Vec<(RawClient, Vec<u8>)> = (2..=ATTACKERS + 1)
            .map(|i| {
                let key = SecretKey::generate();
                let client = RawClient::start_at(&key, &format!("127.0.0.{i}"));
                client.connect(&target.addr, &target.peer);
                // A quarter sign their block themselves, the rest claim the seednode's signature.
                let claim = (i % 4 != 0).then_some(&seednode);
                let forged = cordon_tests::forge::membership(&delegation, &key, claim);
                (client, forged)
            })
            .collect();
        let newcomers: Vec<(RawClient, Vec<u8>)> = (1..=NEWCOMERS)
            .map(|i| {
                let key = SecretKey::generate();
                let client = RawClient::start_at(&key, &format!("127.0.1.{i}"));
                let token = net.mint("mainnet", &client.peer, SystemTime::now(), hour);
                client.connect(&target.addr, &target.peer);
                (client, token)
            })
            .collect();
        for (client, forged) in &attackers {
            client.present_flood(
                &target.peer,
                MembershipRequest {
                    want: Vec::new(),
                    tokens: vec![membership("mainnet", forged.clone())],
                },
                200,
                16,
            );
        }
        member.present_flood(
            &target.peer,
            MembershipRequest {
                want: Vec::new(),
                tokens: vec![membership("mainnet", token)],
            },
            200,
            2,
        );
        for (client, token) in &newcomers {
            client.present_flood(
                &target.peer,
                MembershipRequest {
                    want: Vec::new(),
                    tokens: vec![membership("mainnet", token.clone())],
                },
                1,
                1,
            );
        }
        let answers = member.wait(
            "the member's 200 presentations to be answered",
            Duration::from_secs(120),
            |s| (s.present_flood.values().sum::<u64>() >= 200).then(|| s.present_flood.clone()),
        );
        let mut newcomer_answers = std::collections::BTreeMap::<String, u64>::new();
        for (client, _) in &newcomers {
            let got = client.wait(
                "a newcomer's presentation to be answered",
                Duration::from_secs(60),
                |s| (!s.present_flood.is_empty()).then(|| s.present_flood.clone()),
            );
            for (outcome, n) in got {
                *newcomer_answers.entry(outcome).or_default() += n;
            }
        }
        let mut strangers_answers = std::collections::BTreeMap::<String, u64>::new();
        for (a, _) in &attackers {
            for (outcome, n) in &a.state().present_flood {
                *strangers_answers.entry(outcome.clone()).or_default() += n;
            }
        }
        eprintln!(
            "member's answers: {answers:?}; newcomers' answers: {newcomer_answers:?}; \
             strangers' answers so far: {strangers_answers:?}"
        );
        // The flood reached the member: it refused the strangers and banned them.
        let strangers: BTreeSet<String> =
            attackers.iter().map(|(a, _)| a.peer.to_string()).collect();
        let banned: BTreeSet<String> = fixture::wait_for(
            "the member to ban most of the strangers",
            Duration::from_secs(30),
            || {
                let banned: BTreeSet<String> = audit_of(target, "ban_applied")
                    .iter()
                    .filter_map(|r| r["peer"].as_str().map(str::to_owned))
                    .filter(|p| strangers.contains(p))
                    .collect();
                (banned.len() >= strangers.len() / 2).then_some(banned)
            },
        );
        eprintln!("{} of {} strangers banned", banned.len(), strangers.len());
        assert_eq!(
            answers,
            std::collections::BTreeMap::from([("accepted".to_owned(), 200)]),
            "a member's presentation was refused during the flood"
        );
        assert_eq!(
            newcomer_answers,
            std::collections::BTreeMap::from([("accepted".to_owned(), u64::from(NEWCOMERS))]),
            "a new member's presentation was refused during the flood"
        );
        assert!(
            !strangers_answers.contains_key("accepted"),
            "a forged membership was accepted: {strangers_answers:?}"
        );
    });
}
