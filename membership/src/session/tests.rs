//! The session machine in virtual time: every test hands it `now` explicitly and reads back the
//! actions it asks for. No sockets, no runtime, no sleeping.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use cordon_protocol::{
    MembershipRequest, NetworkName, Outcome, PresentedToken, ReasonCode, TokenKind,
};
use libp2p_identity::PeerId;
use proptest::prelude::*;

use super::*;
use crate::keys::SecretKey;

const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn net(name: &str) -> NetworkName {
    name.parse().unwrap()
}

/// Peer ids are derived once: key derivation would dominate the property test otherwise.
fn peer(n: u8) -> PeerId {
    static PEERS: std::sync::OnceLock<Vec<PeerId>> = std::sync::OnceLock::new();
    PEERS.get_or_init(|| {
        (0..=255u8)
            .map(|i| SecretKey::from_seed([i; 32]).peer_id())
            .collect()
    })[usize::from(n)]
}

fn rid(n: u8) -> RevocationId {
    RevocationId(vec![n; 16])
}

fn proof(network: &str, kind: ProofKind, expires_at: SystemTime, id: u8) -> Proof {
    Proof {
        network: net(network),
        kind,
        issuer: Some(peer(200)),
        token: TokenId([id; 32]),
        revocation_ids: vec![rid(100), rid(id)],
        roles: vec!["member".into()],
        rights: Vec::new(),
        expires_at,
        revocation_floor: 0,
        anchor: anchor(1),
    }
}

fn anchor(n: u8) -> PublicKey {
    SecretKey::from_seed([n; 32]).public()
}

fn member(network: &str, expires_at: SystemTime, id: u8) -> Proof {
    proof(network, ProofKind::Member, expires_at, id)
}

fn token(network: &str) -> PresentedToken {
    PresentedToken {
        network: net(network),
        kind: TokenKind::Membership,
        token: network.as_bytes().to_vec(),
    }
}

fn request(networks: &[&str]) -> MembershipRequest {
    MembershipRequest {
        want: Vec::new(),
        tokens: networks.iter().map(|n| token(n)).collect(),
    }
}

/// mainnet (strict as given) and testnet, 10 s auth timeout.
fn sessions(strict_mainnet: bool) -> Sessions<u64> {
    Sessions::new(
        SessionConfig::default(),
        [(net("mainnet"), strict_mainnet), (net("testnet"), false)],
    )
}

fn drain(s: &mut Sessions<u64>) -> Vec<Action<u64>> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

/// The gates `actions` open (`open`) or close.
fn gates(actions: &[Action<u64>], open: bool) -> BTreeSet<(u64, Gate)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::OpenGate {
                connection, gate, ..
            } if open => Some((*connection, gate.clone())),
            Action::CloseGate {
                connection, gate, ..
            } if !open => Some((*connection, gate.clone())),
            _ => None,
        })
        .collect()
}

fn opened(actions: &[Action<u64>]) -> BTreeSet<(u64, Gate)> {
    gates(actions, true)
}

fn closed_gates(actions: &[Action<u64>]) -> BTreeSet<(u64, Gate)> {
    gates(actions, false)
}

fn closed_connections(actions: &[Action<u64>]) -> Vec<(u64, CloseReason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::CloseConnection {
                connection, reason, ..
            } => Some((*connection, *reason)),
            _ => None,
        })
        .collect()
}

/// The tokens we sent, per connection: in requests of our own (`Present`), or, with
/// `answers`, in answers to the peer's (`Respond`).
fn sent_tokens(actions: &[Action<u64>], answers: bool) -> Vec<(u64, Vec<(String, TokenKind)>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Present {
                connection,
                request,
                ..
            } if !answers => Some((*connection, &request.tokens)),
            Action::Respond {
                connection,
                response,
                ..
            } if answers => Some((*connection, &response.tokens)),
            _ => None,
        })
        .map(|(connection, tokens)| {
            let named = tokens
                .iter()
                .map(|t| (t.network.to_string(), t.kind))
                .collect();
            (connection, named)
        })
        .collect()
}

fn presented(actions: &[Action<u64>]) -> Vec<(u64, Vec<(String, TokenKind)>)> {
    sent_tokens(actions, false)
}

/// The tokens of our own that went back in answers, per connection.
fn answered(actions: &[Action<u64>]) -> Vec<(u64, Vec<(String, TokenKind)>)> {
    sent_tokens(actions, true)
}

fn response(actions: &[Action<u64>]) -> Vec<(String, Outcome)> {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Respond { response, .. } => Some(
                response
                    .results
                    .iter()
                    .map(|r| (r.network.to_string(), r.outcome))
                    .collect(),
            ),
            _ => None,
        })
        .expect("a response")
}

fn rejected(reason: ReasonCode) -> Outcome {
    Outcome::Rejected { reason }
}

/// Presents `networks` on `connection` and answers every verification with `verdict`.
fn prove(
    s: &mut Sessions<u64>,
    connection: u64,
    networks: &[&str],
    now: SystemTime,
    verdict: impl Fn(&str) -> Result<Proof, Rejection>,
) -> Vec<Action<u64>> {
    let id = s
        .handle_presentation(connection, request(networks), now)
        .expect("live connection");
    let mut actions = drain(s);
    let tokens = actions.iter().find_map(|a| match a {
        Action::Verify { id: v, tokens, .. } if *v == id => Some(tokens.clone()),
        _ => None,
    });
    if let Some(tokens) = tokens {
        let verdicts = tokens.iter().map(|t| verdict(t.network.as_str())).collect();
        s.handle_verdicts(id, verdicts, now);
        actions.extend(drain(s));
    }
    actions
}

fn valid(expires_at: SystemTime) -> impl Fn(&str) -> Result<Proof, Rejection> {
    move |n| Ok(member(n, expires_at, 1))
}

#[test]
fn dialer_presents_only_the_networks_it_dialed_for() {
    let mut s = sessions(false);
    s.set_membership(&net("mainnet"), Some(b"m".to_vec()));
    s.set_membership(&net("testnet"), Some(b"t".to_vec()));
    assert!(s.dial_intent(peer(1), &net("testnet")));
    s.handle_established(1, peer(1), Endpoint::Dialer, [], t0());
    let actions = drain(&mut s);
    assert_eq!(
        presented(&actions),
        vec![(1, vec![("testnet".into(), TokenKind::Membership)])]
    );
    // A network's Kademlia dialed this one: its token goes out too.
    s.handle_established(2, peer(2), Endpoint::Dialer, [net("mainnet")], t0());
    assert_eq!(
        presented(&drain(&mut s)),
        vec![(2, vec![("mainnet".into(), TokenKind::Membership)])]
    );
}

#[test]
fn listener_presents_only_what_the_dialer_proved() {
    let mut s = sessions(false);
    s.set_membership(&net("mainnet"), Some(b"m".to_vec()));
    s.set_membership(&net("testnet"), Some(b"t".to_vec()));
    s.handle_established(1, peer(1), Endpoint::Listener, [], t0());
    assert!(presented(&drain(&mut s)).is_empty(), "listener spoke first");
    // A refused presentation earns nothing.
    let actions = prove(&mut s, 1, &["testnet"], t0(), |_| {
        Err(Rejection::new(ReasonCode::BadSignature, "forged"))
    });
    assert!(presented(&actions).is_empty());
    assert_eq!(answered(&actions), vec![(1, vec![])]);
    // A proven testnet membership is answered with our testnet token in the same answer, never
    // mainnet's, and nothing is presented in a request of our own.
    let actions = prove(&mut s, 1, &["testnet"], t0(), valid(t0() + HOUR));
    assert!(presented(&actions).is_empty(), "{actions:?}");
    assert_eq!(
        answered(&actions),
        vec![(1, vec![("testnet".into(), TokenKind::Membership)])]
    );
}

#[test]
fn a_dialer_proves_the_listener_from_the_answer_and_sends_nothing_back() {
    let mut s = sessions(false);
    s.set_membership(&net("mainnet"), Some(b"m".to_vec()));
    s.dial_intent(peer(1), &net("mainnet"));
    s.handle_established(1, peer(1), Endpoint::Dialer, [], t0());
    assert_eq!(presented(&drain(&mut s)).len(), 1);
    let accepted = cordon_protocol::NetworkResult {
        network: net("mainnet"),
        outcome: Outcome::Accepted,
    };
    // The answer carries the listener's mainnet token and, unasked, a testnet token: only the
    // first is verified; the second is refused unverified.
    let id = s
        .handle_answer(
            1,
            MembershipResponse {
                results: vec![accepted.clone()],
                tokens: vec![token("mainnet"), token("testnet")],
            },
            t0(),
        )
        .expect("the listener's token is verified");
    let actions = drain(&mut s);
    let verifying: Vec<Vec<String>> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Verify { tokens, .. } => {
                Some(tokens.iter().map(|t| t.network.to_string()).collect())
            }
            _ => None,
        })
        .collect();
    assert_eq!(verifying, vec![vec!["mainnet".to_owned()]]);
    s.handle_verdicts(
        id,
        vec![Ok(member("mainnet", t0() + HOUR, 1))],
        t0() + SECOND,
    );
    let actions = drain(&mut s);
    assert!(
        opened(&actions).contains(&(1, Gate::Network(net("mainnet")))),
        "{actions:?}"
    );
    let refused: Vec<(Option<String>, ReasonCode)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Refused { refused, .. } => Some(refused.iter().map(|r| {
                (
                    r.network.as_ref().map(ToString::to_string),
                    r.rejection.reason,
                )
            })),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        refused,
        vec![(Some("testnet".to_owned()), ReasonCode::Malformed)]
    );
    // An answer is not answered, and the listener is not sent our token again.
    assert!(answered(&actions).is_empty(), "{actions:?}");
    assert!(presented(&actions).is_empty(), "{actions:?}");
    assert!(s.proof(1, &net("mainnet")).is_some());
    // A plain answer (no tokens) verifies nothing.
    assert_eq!(
        s.handle_answer(
            1,
            MembershipResponse {
                results: vec![accepted],
                tokens: Vec::new(),
            },
            t0()
        ),
        None
    );
}

#[test]
fn seednode_presents_a_delegation_only_to_a_peer_that_asked_for_or_proved_its_network() {
    let mut s = sessions(false);
    s.set_delegation(&net("mainnet"), Some(b"d".to_vec()));
    s.set_delegation(&net("testnet"), Some(b"t".to_vec()));
    // A stranger that asks nothing learns nothing, not even which networks we serve.
    s.handle_established(1, peer(1), Endpoint::Listener, [], t0());
    assert!(presented(&drain(&mut s)).is_empty());
    // A joining peer asks for mainnet (and a network we do not serve): it gets mainnet only.
    let asked = MembershipRequest {
        want: vec![net("mainnet"), net("labnet")],
        tokens: Vec::new(),
    };
    s.handle_presentation(1, asked.clone(), t0()).unwrap();
    let actions = drain(&mut s);
    assert!(presented(&actions).is_empty(), "{actions:?}");
    assert_eq!(
        answered(&actions),
        vec![(1, vec![("mainnet".into(), TokenKind::Delegation)])]
    );
    // A member that proves testnet on another connection gets testnet's delegation, only.
    s.handle_established(2, peer(2), Endpoint::Listener, [], t0());
    let actions = prove(&mut s, 2, &["testnet"], t0(), valid(t0() + HOUR));
    assert_eq!(
        answered(&actions),
        vec![(2, vec![("testnet".into(), TokenKind::Delegation)])]
    );
    // Once presented, a renewed delegation is not pushed unasked (it goes with the next answer).
    s.set_delegation(&net("testnet"), Some(b"t2".to_vec()));
    assert!(presented(&drain(&mut s)).is_empty());
}

#[test]
fn a_joining_dialer_asks_for_the_delegation_of_the_network_it_dialed_for() {
    let mut s = sessions(false);
    s.dial_intent(peer(1), &net("mainnet"));
    s.handle_established(1, peer(1), Endpoint::Dialer, [], t0());
    let actions = drain(&mut s);
    let asks: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Present { request, .. } => Some(request.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        asks,
        vec![MembershipRequest {
            want: vec![net("mainnet")],
            tokens: Vec::new(),
        }]
    );
    // Once it holds a token it presents the token there.
    s.set_membership(&net("mainnet"), Some(b"m".to_vec()));
    let actions = drain(&mut s);
    assert_eq!(
        presented(&actions),
        vec![(1, vec![("mainnet".into(), TokenKind::Membership)])]
    );
}

#[test]
fn verified_membership_opens_gates_routes_and_cancels_the_auth_deadline() {
    let mut s = sessions(false);
    s.handle_established(1, peer(1), Endpoint::Listener, [], t0());
    drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(t0() + 10 * SECOND));
    let actions = prove(&mut s, 1, &["mainnet"], t0() + SECOND, valid(t0() + HOUR));
    assert_eq!(
        response(&actions),
        vec![("mainnet".into(), Outcome::Accepted)]
    );
    assert_eq!(
        opened(&actions),
        BTreeSet::from([(1, Gate::Network(net("mainnet"))), (1, Gate::Rpc)])
    );
    assert!(actions.contains(&Action::AddRoute {
        peer: peer(1),
        network: net("mainnet")
    }));
    assert!(s.is_routed(&net("mainnet"), &peer(1)));
    // The next deadline is the membership's expiry, not the auth timeout.
    assert_eq!(s.poll_timeout(), Some(t0() + HOUR));
    s.handle_timeout(t0() + 11 * SECOND);
    assert!(closed_connections(&drain(&mut s)).is_empty());
}

#[test]
fn a_deferred_auth_deadline_restarts_from_the_deferral_and_never_touches_a_proven_connection() {
    let mut s = sessions(false);
    s.handle_established(1, peer(1), Endpoint::Listener, [], t0());
    s.handle_established(2, peer(2), Endpoint::Listener, [], t0());
    drain(&mut s);
    prove(&mut s, 2, &["mainnet"], t0(), valid(t0() + HOUR));
    // A join request of connection 1's peer is pending at 6 s: its deadline moves to 16 s.
    s.defer_auth(1, t0() + 6 * SECOND);
    // A proven connection has no deadline to defer: nothing is armed for it.
    s.defer_auth(2, t0() + 6 * SECOND);
    s.handle_timeout(t0() + 15 * SECOND);
    assert!(
        closed_connections(&drain(&mut s)).is_empty(),
        "closed at the original deadline"
    );
    s.handle_timeout(t0() + 16 * SECOND);
    assert_eq!(
        closed_connections(&drain(&mut s)),
        vec![(1, CloseReason::AuthTimeout)]
    );
    assert_eq!(s.stats().auth_timeouts, 1);
    // Closing: deferring again changes nothing.
    s.defer_auth(1, t0() + 17 * SECOND);
    s.handle_timeout(t0() + 60 * SECOND);
    assert!(closed_connections(&drain(&mut s)).is_empty());
}

#[test]
fn auth_timeout_closes_only_connections_that_proved_nothing() {
    let mut s = sessions(false);
    s.handle_established(1, peer(1), Endpoint::Listener, [], t0());
    s.handle_established(2, peer(2), Endpoint::Listener, [], t0());
    drain(&mut s);
    prove(&mut s, 2, &["mainnet"], t0(), valid(t0() + HOUR));
    s.handle_timeout(t0() + 9 * SECOND);
    assert!(
        closed_connections(&drain(&mut s)).is_empty(),
        "closed early"
    );
    s.handle_timeout(t0() + 10 * SECOND);
    assert_eq!(
        closed_connections(&drain(&mut s)),
        vec![(1, CloseReason::AuthTimeout)]
    );
    assert_eq!(s.stats().auth_timeouts, 1);
    // A closing connection's presentations are dropped unanswered.
    assert!(
        s.handle_presentation(1, request(&["mainnet"]), t0() + 10 * SECOND)
            .is_none()
    );
}

#[test]
fn expiry_closes_the_gates_and_later_the_routing_entry_of_a_departed_peer() {
    let mut s = sessions(false);
    s.handle_established(1, peer(1), Endpoint::Listener, [], t0());
    s.handle_established(2, peer(2), Endpoint::Listener, [], t0());
    prove(&mut s, 1, &["mainnet"], t0(), valid(t0() + HOUR));
    prove(&mut s, 2, &["mainnet"], t0(), valid(t0() + HOUR));
    drain(&mut s);
    // Peer 2 leaves; its routing entry stays while its membership is valid.
    s.handle_closed(2);
    assert!(s.is_routed(&net("mainnet"), &peer(2)));
    s.handle_timeout(t0() + HOUR - SECOND);
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(t0() + HOUR);
    let actions = drain(&mut s);
    assert_eq!(
        closed_gates(&actions),
        BTreeSet::from([(1, Gate::Network(net("mainnet"))), (1, Gate::Rpc)])
    );
    for p in [peer(1), peer(2)] {
        assert!(
            actions.contains(&Action::RemoveRoute {
                peer: p,
                network: net("mainnet"),
                reason: EndReason::Expired
            }),
            "{p} kept its routing entry: {actions:?}"
        );
        assert!(!s.is_routed(&net("mainnet"), &p));
    }
    assert!(actions.contains(&Action::Ended {
        peer: peer(1),
        connection: 1,
        network: net("mainnet"),
        reason: EndReason::Expired
    }));
    // The live connection now has an auth deadline to present a renewed token...
    assert_eq!(s.poll_timeout(), Some(t0() + HOUR + 10 * SECOND));
    // ...and is closed if it does not.
    s.handle_timeout(t0() + HOUR + 10 * SECOND);
    assert_eq!(
        closed_connections(&drain(&mut s)),
        vec![(1, CloseReason::AuthTimeout)]
    );
}

#[test]
fn a_renewed_token_extends_the_proof_without_reopening_the_gate() {
    let mut s = sessions(false);
    s.handle_established(1, peer(1), Endpoint::Listener, [], t0());
    prove(&mut s, 1, &["mainnet"], t0(), valid(t0() + HOUR));
    drain(&mut s);
    let actions = prove(
        &mut s,
        1,
        &["mainnet"],
        t0() + SECOND,
        valid(t0() + 2 * HOUR),
    );
    assert!(opened(&actions).is_empty(), "{actions:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::AddRoute { .. })));
    s.handle_timeout(t0() + HOUR + SECOND);
    assert!(drain(&mut s).is_empty(), "ended at the old expiry");
    assert_eq!(
        s.proof(1, &net("mainnet")).map(|p| p.expires_at),
        Some(t0() + 2 * HOUR)
    );
}

#[test]
fn strict_network_refuses_two_networks_in_one_presentation() {
    let mut s = sessions(true);
    s.handle_established(1, peer(1), Endpoint::Listener, [], t0());
    let actions = prove(&mut s, 1, &["mainnet", "testnet"], t0(), valid(t0() + HOUR));
    assert_eq!(
        response(&actions),
        vec![
            ("mainnet".into(), rejected(ReasonCode::StrictNetwork)),
            ("testnet".into(), Outcome::Accepted)
        ]
    );
    assert!(s.proof(1, &net("mainnet")).is_none());
    assert!(!s.is_routed(&net("mainnet"), &peer(1)));
}

#[test]
fn strict_network_holds_across_presentations_on_one_connection() {
    let mut s = sessions(true);
    s.handle_established(1, peer(1), Endpoint::Listener, [], t0());
    let actions = prove(&mut s, 1, &["mainnet"], t0(), valid(t0() + HOUR));
    assert_eq!(
        response(&actions),
        vec![("mainnet".into(), Outcome::Accepted)]
    );
    assert!(s.is_routed(&net("mainnet"), &peer(1)));
    // The same peer now presents testnet on the same connection.
    let actions = prove(&mut s, 1, &["testnet"], t0(), valid(t0() + HOUR));
    assert_eq!(
        response(&actions),
        vec![("testnet".into(), Outcome::Accepted)]
    );
    assert!(closed_gates(&actions).contains(&(1, Gate::Network(net("mainnet")))));
    assert!(actions.contains(&Action::Ended {
        peer: peer(1),
        connection: 1,
        network: net("mainnet"),
        reason: EndReason::StrictNetwork
    }));
    assert!(actions.contains(&Action::RemoveRoute {
        peer: peer(1),
        network: net("mainnet"),
        reason: EndReason::StrictNetwork
    }));
    assert!(s.proof(1, &net("mainnet")).is_none());
    assert!(!s.is_routed(&net("mainnet"), &peer(1)));
    // Presenting mainnet again on that connection is refused.
    let actions = prove(&mut s, 1, &["mainnet"], t0(), valid(t0() + HOUR));
    assert_eq!(
        response(&actions),
        vec![("mainnet".into(), rejected(ReasonCode::StrictNetwork))]
    );
    // Another connection is judged on its own.
    s.handle_established(2, peer(2), Endpoint::Listener, [], t0());
    let actions = prove(&mut s, 2, &["mainnet"], t0(), valid(t0() + HOUR));
    assert_eq!(
        response(&actions),
        vec![("mainnet".into(), Outcome::Accepted)]
    );
}

#[test]
fn strict_is_rechecked_when_a_verdict_arrives_after_another_presentation() {
    let mut s = sessions(true);
    s.handle_established(1, peer(1), Endpoint::Listener, [], t0());
    let main = s
        .handle_presentation(1, request(&["mainnet"]), t0())
        .unwrap();
    let test = s
        .handle_presentation(1, request(&["testnet"]), t0())
        .unwrap();
    drain(&mut s);
    s.handle_verdicts(test, vec![Ok(member("testnet", t0() + HOUR, 1))], t0());
    s.handle_verdicts(main, vec![Ok(member("mainnet", t0() + HOUR, 1))], t0());
    let actions = drain(&mut s);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Respond { id, response, .. }
            if *id == main && response.results[0].outcome == rejected(ReasonCode::StrictNetwork))),
        "{actions:?}"
    );
    assert!(s.proof(1, &net("mainnet")).is_none());
}

#[test]
fn unknown_networks_are_refused_without_verification() {
    let mut s = sessions(false);
    s.handle_established(1, peer(1), Endpoint::Listener, [], t0());
    drain(&mut s);
    s.handle_presentation(1, request(&["labnet"]), t0())
        .unwrap();
    let actions = drain(&mut s);
    assert!(!actions.iter().any(|a| matches!(a, Action::Verify { .. })));
    // The wire shows the one code of unverified tokens; the reason stays local.
    assert_eq!(
        response(&actions),
        vec![("labnet".into(), rejected(ReasonCode::NotMember))]
    );
    let refused: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Refused { refused, .. } => Some(refused),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0][0].rejection.reason, ReasonCode::UnknownNetwork);
}

/// Issue 12, item 2: what a refusal shows depends on whether the token verified, never on which
/// networks this node joined; the audit keeps the reason.
#[test]
fn refusals_of_tokens_that_did_not_verify_look_the_same_on_the_wire() {
    let unverified = [
        ReasonCode::Malformed,
        ReasonCode::BadSignature,
        ReasonCode::UnknownNetwork,
    ];
    for reason in unverified {
        let mut s = sessions(false);
        s.handle_established(1, peer(1), Endpoint::Listener, [], t0());
        // mainnet is joined here (its token is verified and refused), labnet is not.
        let actions = prove(&mut s, 1, &["mainnet", "labnet"], t0(), |_| {
            Err(Rejection::new(reason, "forged"))
        });
        assert_eq!(
            response(&actions),
            vec![
                ("mainnet".into(), rejected(ReasonCode::NotMember)),
                ("labnet".into(), rejected(ReasonCode::NotMember)),
            ],
            "{reason}"
        );
        let logged: Vec<ReasonCode> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Refused { refused, .. } => Some(refused),
                _ => None,
            })
            .flatten()
            .map(|r| r.rejection.reason)
            .collect();
        assert_eq!(logged, vec![ReasonCode::UnknownNetwork, reason]);
    }
    // A token that verified far enough is told why.
    for reason in [
        ReasonCode::Expired,
        ReasonCode::Revoked,
        ReasonCode::WrongSubject,
        ReasonCode::Policy,
    ] {
        let rejection = Rejection::new(reason, "verified");
        assert_eq!(rejection.disclosed(TokenKind::Membership), reason);
    }
    // A delegation is public: one presented by another peer than its seednode is not told.
    let copied = Rejection::new(ReasonCode::WrongSubject, "someone else's delegation");
    assert_eq!(
        copied.disclosed(TokenKind::Delegation),
        ReasonCode::NotMember
    );
}

#[test]
fn one_refused_action_per_presentation() {
    let mut s = sessions(false);
    s.handle_established(1, peer(1), Endpoint::Listener, [], t0());
    let actions = prove(&mut s, 1, &["mainnet", "testnet", "labnet"], t0(), |_| {
        Err(Rejection::new(ReasonCode::Expired, "old"))
    });
    let refused: Vec<&Action<u64>> = actions
        .iter()
        .filter(|a| matches!(a, Action::Refused { .. }))
        .collect();
    assert_eq!(refused.len(), 1, "{actions:?}");
    let Action::Refused { refused, .. } = refused[0] else {
        unreachable!()
    };
    assert_eq!(refused.len(), 3);
}

#[test]
fn revoke_closes_exactly_the_affected_connections() {
    let mut s = sessions(false);
    for (c, id) in [(1, 1), (2, 2), (3, 3)] {
        s.handle_established(c, peer(c as u8), Endpoint::Listener, [], t0());
        prove(&mut s, c, &["mainnet"], t0(), move |n| {
            Ok(member(n, t0() + HOUR, id))
        });
    }
    // Peer 4 proved earlier and left; its routing entry carries the revoked id too.
    s.handle_established(4, peer(4), Endpoint::Listener, [], t0());
    prove(&mut s, 4, &["mainnet"], t0(), |n| {
        Ok(member(n, t0() + HOUR, 2))
    });
    s.handle_closed(4);
    drain(&mut s);
    let closed = s.revoke(&BTreeSet::from([rid(2)]), t0() + SECOND);
    assert_eq!(closed, 1);
    let actions = drain(&mut s);
    assert_eq!(
        closed_connections(&actions),
        vec![(2, CloseReason::Revoked)]
    );
    assert_eq!(
        closed_gates(&actions),
        BTreeSet::from([(2, Gate::Network(net("mainnet"))), (2, Gate::Rpc)])
    );
    for p in [peer(2), peer(4)] {
        assert!(actions.contains(&Action::RemoveRoute {
            peer: p,
            network: net("mainnet"),
            reason: EndReason::Revoked
        }));
    }
    assert!(s.is_routed(&net("mainnet"), &peer(1)));
    assert!(s.is_routed(&net("mainnet"), &peer(3)));
    // The closing connection is not timed out again and accepts nothing more.
    s.handle_timeout(t0() + 30 * SECOND);
    assert!(closed_connections(&drain(&mut s)).is_empty());
    assert!(
        s.handle_presentation(2, request(&["mainnet"]), t0())
            .is_none()
    );
    // Revoking an id shared by every token (the delegation's) closes the rest.
    assert_eq!(s.revoke(&BTreeSet::from([rid(100)]), t0() + SECOND), 2);
}

#[test]
fn a_verdict_in_flight_during_a_revocation_is_refused() {
    let mut s = sessions(false);
    s.handle_established(1, peer(1), Endpoint::Listener, [], t0());
    let id = s
        .handle_presentation(1, request(&["mainnet"]), t0())
        .unwrap();
    drain(&mut s);
    assert_eq!(s.revoke(&BTreeSet::from([rid(7)]), t0()), 0);
    s.handle_verdicts(id, vec![Ok(member("mainnet", t0() + HOUR, 7))], t0());
    let actions = drain(&mut s);
    assert_eq!(
        response(&actions),
        vec![("mainnet".into(), rejected(ReasonCode::Revoked))]
    );
    assert!(s.proof(1, &net("mainnet")).is_none());
    // Once nothing is in flight the revoked ids are forgotten (the verifier holds them).
    assert!(s.revoked_since.is_empty());
}

#[test]
fn removing_an_anchor_ends_exactly_the_proofs_and_routes_that_chain_to_it() {
    let mut s = sessions(false);
    let under = |a: u8, id: u8| {
        move |n: &str| {
            let mut p = member(n, t0() + HOUR, id);
            p.anchor = anchor(a);
            Ok(p)
        }
    };
    // Peer 1 renewed under the new anchor 2; peers 2 and 3 still hold tokens of anchor 1;
    // peer 3 proved earlier and left, its routing entry remains.
    s.handle_established(1, peer(1), Endpoint::Listener, [], t0());
    prove(&mut s, 1, &["mainnet"], t0(), under(2, 1));
    s.handle_established(2, peer(2), Endpoint::Listener, [], t0());
    prove(&mut s, 2, &["mainnet"], t0(), under(1, 2));
    s.handle_established(3, peer(3), Endpoint::Listener, [], t0());
    prove(&mut s, 3, &["mainnet"], t0(), under(1, 3));
    s.handle_closed(3);
    // A verification of an old-anchor token is in flight across the change.
    s.handle_established(4, peer(4), Endpoint::Listener, [], t0());
    let in_flight = s
        .handle_presentation(4, request(&["mainnet"]), t0())
        .unwrap();
    drain(&mut s);

    // During the overlap both anchors are trusted: nothing ends.
    let both = BTreeMap::from([(net("mainnet"), BTreeSet::from([anchor(1), anchor(2)]))]);
    assert_eq!(s.set_trusted_anchors(both, t0()), 0);
    assert!(drain(&mut s).is_empty());

    let new_only = BTreeMap::from([(net("mainnet"), BTreeSet::from([anchor(2)]))]);
    assert_eq!(s.set_trusted_anchors(new_only, t0() + SECOND), 1);
    let actions = drain(&mut s);
    assert_eq!(
        closed_connections(&actions),
        vec![(2, CloseReason::Untrusted)]
    );
    for p in [peer(2), peer(3)] {
        assert!(actions.contains(&Action::RemoveRoute {
            peer: p,
            network: net("mainnet"),
            reason: EndReason::Untrusted
        }));
    }
    assert!(s.is_routed(&net("mainnet"), &peer(1)));
    assert!(s.proof(1, &net("mainnet")).is_some());

    let mut old = member("mainnet", t0() + HOUR, 4);
    old.anchor = anchor(1);
    s.handle_verdicts(in_flight, vec![Ok(old)], t0() + SECOND);
    let actions = drain(&mut s);
    assert_eq!(
        response(&actions),
        vec![("mainnet".into(), rejected(ReasonCode::NotMember))]
    );
    assert!(!s.is_routed(&net("mainnet"), &peer(4)));
}

#[test]
fn routing_table_is_capped() {
    let mut s: Sessions<u64> = Sessions::new(
        SessionConfig {
            max_routes_per_network: 2,
            ..SessionConfig::default()
        },
        [(net("mainnet"), false)],
    );
    for c in 1..=3u64 {
        s.handle_established(c, peer(c as u8), Endpoint::Listener, [], t0());
        let actions = prove(&mut s, c, &["mainnet"], t0(), valid(t0() + HOUR));
        assert_eq!(
            response(&actions),
            vec![("mainnet".into(), Outcome::Accepted)]
        );
    }
    assert_eq!(s.routes(&net("mainnet")), 2);
    assert_eq!(s.stats().routes_refused, 1);
}

#[test]
fn a_new_membership_is_presented_where_the_network_is_shared_only() {
    let mut s = sessions(false);
    // Connection 1: dialed for mainnet. 2: dialed for testnet. 3: inbound, peer proved mainnet.
    s.dial_intent(peer(1), &net("mainnet"));
    s.dial_intent(peer(2), &net("testnet"));
    s.handle_established(1, peer(1), Endpoint::Dialer, [], t0());
    s.handle_established(2, peer(2), Endpoint::Dialer, [], t0());
    s.handle_established(3, peer(3), Endpoint::Listener, [], t0());
    prove(&mut s, 3, &["mainnet"], t0(), valid(t0() + HOUR));
    drain(&mut s);
    s.set_membership(&net("mainnet"), Some(b"m".to_vec()));
    let mut got: Vec<u64> = presented(&drain(&mut s))
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    got.sort();
    assert_eq!(got, vec![1, 3]);
    // A renewal re-presents on the same connections.
    s.set_membership(&net("mainnet"), Some(b"m2".to_vec()));
    let mut got: Vec<u64> = presented(&drain(&mut s))
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    got.sort();
    assert_eq!(got, vec![1, 3]);
}

#[test]
fn an_intent_presents_on_a_connection_the_peer_dialled_for_another_network() {
    let mut s = sessions(false);
    s.set_membership(&net("mainnet"), Some(b"m".to_vec()));
    s.set_membership(&net("testnet"), Some(b"t".to_vec()));
    s.handle_established(1, peer(1), Endpoint::Listener, [], t0());
    prove(&mut s, 1, &["mainnet"], t0(), valid(t0() + HOUR));
    drain(&mut s);
    // Only our choice to reach the peer in testnet presents testnet on its connection.
    s.dial_intent(peer(1), &net("testnet"));
    assert_eq!(
        presented(&drain(&mut s)),
        vec![(1, vec![("testnet".into(), TokenKind::Membership)])]
    );
}

#[test]
fn a_presentation_refused_for_overload_is_sent_again_at_the_next_occasion() {
    let mut s = sessions(false);
    s.set_membership(&net("mainnet"), Some(b"m".to_vec()));
    s.dial_intent(peer(1), &net("mainnet"));
    s.handle_established(1, peer(1), Endpoint::Dialer, [], t0());
    assert_eq!(presented(&drain(&mut s)).len(), 1);
    // Without an answer, a second intent does not repeat the presentation.
    s.dial_intent(peer(1), &net("mainnet"));
    assert!(presented(&drain(&mut s)).is_empty());
    let refused = |reason| MembershipResponse {
        results: vec![cordon_protocol::NetworkResult {
            network: net("mainnet"),
            outcome: rejected(reason),
        }],
        tokens: Vec::new(),
    };
    // A real refusal stands.
    s.handle_answer(1, refused(ReasonCode::BadSignature), t0());
    s.dial_intent(peer(1), &net("mainnet"));
    assert!(presented(&drain(&mut s)).is_empty());
    // Overload does not: the next occasion presents again.
    s.handle_answer(1, refused(ReasonCode::RateLimited), t0());
    s.dial_intent(peer(1), &net("mainnet"));
    assert_eq!(presented(&drain(&mut s)).len(), 1);
}

#[test]
fn expired_on_arrival_is_refused() {
    let mut s = sessions(false);
    s.handle_established(1, peer(1), Endpoint::Listener, [], t0());
    let actions = prove(&mut s, 1, &["mainnet"], t0() + HOUR, valid(t0() + HOUR));
    assert_eq!(
        response(&actions),
        vec![("mainnet".into(), rejected(ReasonCode::Expired))]
    );
}

#[test]
fn dial_intents_are_bounded_and_keep_live_peers() {
    let mut s: Sessions<u64> = Sessions::new(
        SessionConfig {
            max_dial_intents: 2,
            ..SessionConfig::default()
        },
        [(net("mainnet"), false)],
    );
    assert!(s.dial_intent(peer(1), &net("mainnet")));
    s.handle_established(1, peer(1), Endpoint::Dialer, [], t0());
    assert!(s.dial_intent(peer(2), &net("mainnet")));
    // Full: peer 2 never connected and is dropped; peer 1 is live and stays.
    assert!(s.dial_intent(peer(3), &net("mainnet")));
    assert!(s.has_intent(&peer(1), &net("mainnet")));
    assert!(!s.has_intent(&peer(2), &net("mainnet")));
    assert!(s.has_intent(&peer(3), &net("mainnet")));
}

// ------------------------------------------------------------------------------ properties

#[derive(Debug, Clone)]
enum Op {
    Connect {
        c: u64,
        p: u8,
        dialer: bool,
    },
    Close {
        c: u64,
    },
    Present {
        c: u64,
        nets: Vec<u8>,
        ok: bool,
        ttl: u64,
        id: u8,
    },
    Advance {
        secs: u64,
    },
    Revoke {
        id: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..6u64, 0..4u8, any::<bool>()).prop_map(|(c, p, dialer)| Op::Connect { c, p, dialer }),
        (0..6u64).prop_map(|c| Op::Close { c }),
        (
            0..6u64,
            prop::collection::vec(0..3u8, 1..3),
            any::<bool>(),
            1..120u64,
            0..4u8
        )
            .prop_map(|(c, nets, ok, ttl, id)| Op::Present {
                c,
                nets,
                ok,
                ttl,
                id
            }),
        (0..40u64).prop_map(|secs| Op::Advance { secs }),
        (0..4u8).prop_map(|id| Op::Revoke { id }),
    ]
}

const NETS: [&str; 3] = ["mainnet", "testnet", "labnet"];

/// What the driver would hold if it applied every action.
#[derive(Default)]
struct Driver {
    gates: BTreeSet<(u64, Gate)>,
    routes: BTreeSet<(String, PeerId)>,
    /// Per live listener-side connection, networks the peer proved there so far.
    proven_ever: BTreeMap<u64, BTreeSet<String>>,
    listener: BTreeSet<u64>,
}

impl Driver {
    fn apply(&mut self, actions: Vec<Action<u64>>) -> Result<(), TestCaseError> {
        for a in actions {
            match a {
                Action::OpenGate {
                    connection, gate, ..
                } => {
                    prop_assert!(self.gates.insert((connection, gate)), "opened twice");
                }
                Action::CloseGate {
                    connection, gate, ..
                } => {
                    prop_assert!(self.gates.remove(&(connection, gate)), "closed twice");
                }
                Action::AddRoute { peer, network } => {
                    prop_assert!(self.routes.insert((network.to_string(), peer)));
                }
                Action::RemoveRoute { peer, network, .. } => {
                    prop_assert!(self.routes.remove(&(network.to_string(), peer)));
                }
                Action::Verified {
                    connection, proof, ..
                } => {
                    self.proven_ever
                        .entry(connection)
                        .or_default()
                        .insert(proof.network.to_string());
                }
                Action::Present {
                    connection,
                    request,
                    ..
                } if self.listener.contains(&connection) => {
                    // No membership leaks to a dialer that did not prove the network here.
                    for t in &request.tokens {
                        let proven = self
                            .proven_ever
                            .get(&connection)
                            .is_some_and(|p| p.contains(t.network.as_str()));
                        prop_assert!(
                            proven,
                            "presented {} to a listener-side peer that did not prove it",
                            t.network
                        );
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn gates_and_routes_always_match_the_proofs(ops in prop::collection::vec(op(), 1..60)) {
        let mut s: Sessions<u64> = Sessions::new(
            SessionConfig { max_routes_per_network: 3, ..SessionConfig::default() },
            [(net("mainnet"), true), (net("testnet"), false)],
        );
        s.set_membership(&net("mainnet"), Some(b"m".to_vec()));
        s.set_membership(&net("testnet"), Some(b"t".to_vec()));
        let mut now = t0();
        let mut live: BTreeMap<u64, PeerId> = BTreeMap::new();
        let mut d = Driver::default();
        for op in ops {
            let advanced = matches!(op, Op::Advance { .. });
            match op {
                Op::Connect { c, p, dialer } => {
                    if live.contains_key(&c) {
                        continue;
                    }
                    let endpoint = if dialer { Endpoint::Dialer } else { Endpoint::Listener };
                    if !dialer {
                        d.listener.insert(c);
                    }
                    live.insert(c, peer(p));
                    s.handle_established(c, peer(p), endpoint, [], now);
                }
                Op::Close { c } => {
                    if live.remove(&c).is_some() {
                        s.handle_closed(c);
                        d.gates.retain(|(conn, _)| *conn != c);
                        d.listener.remove(&c);
                        d.proven_ever.remove(&c);
                    }
                }
                Op::Present { c, nets, ok, ttl, id } => {
                    let names: Vec<&str> = nets.iter().map(|i| NETS[*i as usize]).collect();
                    let mut dedup = names.clone();
                    dedup.sort();
                    dedup.dedup();
                    if let Some(pid) = s.handle_presentation(c, request(&dedup), now) {
                        let actions = drain(&mut s);
                        let verify = actions.iter().find_map(|a| match a {
                            Action::Verify { id: v, tokens, .. } if *v == pid => Some(tokens.clone()),
                            _ => None,
                        });
                        d.apply(actions)?;
                        if let Some(tokens) = verify {
                            let verdicts = tokens.iter().map(|t| if ok {
                                Ok(member(t.network.as_str(), now + Duration::from_secs(ttl), id))
                            } else {
                                Err(Rejection::new(ReasonCode::BadSignature, "no"))
                            }).collect();
                            s.handle_verdicts(pid, verdicts, now);
                        }
                    }
                }
                Op::Advance { secs } => {
                    now += Duration::from_secs(secs);
                    s.handle_timeout(now);
                }
                Op::Revoke { id } => {
                    s.revoke(&BTreeSet::from([rid(id)]), now);
                }
            }
            d.apply(drain(&mut s))?;
            // Gates match the proofs the machine holds.
            let mut expected = BTreeSet::new();
            for c in live.keys() {
                let mut any = false;
                for p in s.proofs(*c) {
                    prop_assert!(p.expires_at > now || !advanced, "expired proof kept");
                    expected.insert((*c, Gate::Network(p.network.clone())));
                    any = true;
                }
                if any {
                    expected.insert((*c, Gate::Rpc));
                }
            }
            prop_assert_eq!(&d.gates, &expected);
            // Routes match, stay under the cap, and none outlives its expiry.
            for n in ["mainnet", "testnet"] {
                prop_assert!(s.routes(&net(n)) <= 3);
            }
            let machine_routes: BTreeSet<(String, PeerId)> = (0..4u8)
                .flat_map(|p| s.routed_networks(&peer(p)).into_iter().map(move |n| (n.to_string(), peer(p))))
                .collect();
            prop_assert_eq!(&d.routes, &machine_routes);
            // No strict network stays proven on a connection where the peer named two.
            for c in live.keys() {
                if let Some(conn) = s.connections.get(c) && conn.named.several {
                    prop_assert!(s.proof(*c, &net("mainnet")).is_none());
                }
            }
            // Timers never run late: nothing due remains after handle_timeout.
            if advanced && let Some(next) = s.poll_timeout() {
                prop_assert!(next > now, "a timer due at {next:?} survived handle_timeout");
            }
        }
    }
}
