//! The session machine with real tokens: what a presentation proves, verified by
//! [`verify_token`] exactly as the node's verification workers run it.
//!
//! These replace the presentation tests that lived in the node's old event loop
//! (`strict_network_refuses_a_peer_presenting_other_networks_too`,
//! `non_strict_network_accepts_multi_network_peers`,
//! `network_not_joined_here_is_unknown_network_even_if_the_token_verifies`,
//! `token_labelled_with_another_network_is_refused`), now against the machine.

#![allow(clippy::unwrap_used)]

mod fixture;

use cordon_membership::session::{Action, Endpoint, SessionConfig, Sessions, verify_token};
use cordon_membership::{AccessList, PeerId, ProofKind, Verifier, VerifierConfig};
use cordon_protocol::{
    MembershipRequest, NetworkName, Outcome, PresentedToken, ReasonCode, TokenKind,
};
use fixture::*;

struct World {
    verifier: Verifier,
    main: Net,
    test: Net,
    peer: PeerId,
}

/// mainnet and testnet, each with its anchor and seednode, and a peer holding both tokens.
fn world() -> World {
    let main = Net::new("mainnet", 1, 2);
    let test = Net::new("testnet", 3, 4);
    let verifier = Verifier::new(
        VerifierConfig::default(),
        AccessList::new([main.trust(), test.trust()]).unwrap(),
    );
    World {
        verifier,
        main,
        test,
        peer: key(9).peer_id(),
    }
}

fn name(s: &str) -> NetworkName {
    s.parse().unwrap()
}

fn presented(label: &str, token: Vec<u8>) -> PresentedToken {
    PresentedToken {
        network: name(label),
        kind: TokenKind::Membership,
        token,
    }
}

/// Runs one presentation through the machine, verifying with the real verifier, and returns
/// the answer per network.
fn present(
    w: &World,
    local: &[(&str, bool)],
    tokens: Vec<PresentedToken>,
) -> (Vec<(String, Outcome)>, Sessions<u32>) {
    let mut s: Sessions<u32> = Sessions::new(
        SessionConfig::default(),
        local.iter().map(|(n, strict)| (name(n), *strict)),
    );
    s.handle_established(1, w.peer, Endpoint::Listener, [], t0());
    let id = s
        .handle_presentation(
            1,
            MembershipRequest {
                want: Vec::new(),
                tokens,
            },
            t0(),
        )
        .unwrap();
    let mut actions: Vec<Action<u32>> = std::iter::from_fn(|| s.poll_action()).collect();
    let verify = actions.iter().find_map(|a| match a {
        Action::Verify { tokens, .. } => Some(tokens.clone()),
        _ => None,
    });
    if let Some(tokens) = verify {
        let verdicts = tokens
            .iter()
            .map(|t| verify_token(&w.verifier, &w.peer, t, t0()))
            .collect();
        s.handle_verdicts(id, verdicts, t0());
        actions.extend(std::iter::from_fn(|| s.poll_action()));
    }
    let answer = actions
        .into_iter()
        .find_map(|a| match a {
            Action::Respond { response, .. } => Some(
                response
                    .results
                    .into_iter()
                    .map(|r| (r.network.to_string(), r.outcome))
                    .collect(),
            ),
            _ => None,
        })
        .expect("an answer");
    (answer, s)
}

#[test]
fn strict_network_refuses_a_peer_presenting_other_networks_too() {
    let w = world();
    let local = [("mainnet", true), ("testnet", false)];
    let both = vec![
        presented("mainnet", w.main.member(&w.peer)),
        presented("testnet", w.test.member(&w.peer)),
    ];
    let (answer, s) = present(&w, &local, both);
    assert_eq!(
        answer,
        vec![
            (
                "mainnet".into(),
                Outcome::Rejected {
                    reason: ReasonCode::StrictNetwork
                }
            ),
            ("testnet".into(), Outcome::Accepted),
        ]
    );
    assert!(s.proof(1, &name("mainnet")).is_none());
    assert!(s.proof(1, &name("testnet")).is_some());
    // The same mainnet token alone is accepted by the strict network.
    let (answer, s) = present(
        &w,
        &local,
        vec![presented("mainnet", w.main.member(&w.peer))],
    );
    assert_eq!(answer, vec![("mainnet".into(), Outcome::Accepted)]);
    let proof = s.proof(1, &name("mainnet")).unwrap();
    assert_eq!(proof.kind, ProofKind::Member);
    assert_eq!(proof.roles, vec!["member".to_string()]);
    assert_eq!(proof.issuer, Some(w.main.seednode.peer_id()));
}

#[test]
fn non_strict_network_accepts_multi_network_peers() {
    let w = world();
    let both = vec![
        presented("mainnet", w.main.member(&w.peer)),
        presented("testnet", w.test.member(&w.peer)),
    ];
    let (answer, _) = present(&w, &[("mainnet", false), ("testnet", false)], both);
    assert!(
        answer.iter().all(|(_, o)| *o == Outcome::Accepted),
        "{answer:?}"
    );
    assert_eq!(answer.len(), 2);
}

#[test]
fn network_not_joined_here_gets_the_one_unverified_code_even_if_the_token_verifies() {
    let w = world();
    // The verifier trusts testnet's anchor, but this process joined only mainnet.
    let (answer, s) = present(
        &w,
        &[("mainnet", false)],
        vec![presented("testnet", w.test.member(&w.peer))],
    );
    assert_eq!(
        answer,
        vec![(
            "testnet".into(),
            Outcome::Rejected {
                reason: ReasonCode::NotMember
            }
        )]
    );
    assert!(s.proof(1, &name("testnet")).is_none());
}

#[test]
fn token_labelled_with_another_network_is_refused() {
    let w = world();
    let (answer, s) = present(
        &w,
        &[("mainnet", false), ("testnet", false)],
        vec![presented("mainnet", w.test.member(&w.peer))],
    );
    assert_eq!(
        answer,
        vec![(
            "mainnet".into(),
            Outcome::Rejected {
                reason: ReasonCode::NotMember
            }
        )]
    );
    assert!(s.proof(1, &name("mainnet")).is_none());
}

#[test]
fn a_seednode_delegation_proves_a_seednode() {
    let w = world();
    let (answer, s) = {
        let mut s: Sessions<u32> =
            Sessions::new(SessionConfig::default(), [(name("mainnet"), false)]);
        let seed = w.main.seednode.peer_id();
        s.handle_established(1, seed, Endpoint::Listener, [], t0());
        let token = PresentedToken {
            network: name("mainnet"),
            kind: TokenKind::Delegation,
            token: w.main.delegation.clone(),
        };
        let id = s
            .handle_presentation(
                1,
                MembershipRequest {
                    want: Vec::new(),
                    tokens: vec![token.clone()],
                },
                t0(),
            )
            .unwrap();
        s.handle_verdicts(
            id,
            vec![verify_token(&w.verifier, &seed, &token, t0())],
            t0(),
        );
        let mut answer = Vec::new();
        while let Some(a) = s.poll_action() {
            if let Action::Respond { response, .. } = a {
                answer = response.results;
            }
        }
        (answer, s)
    };
    assert_eq!(answer[0].outcome, Outcome::Accepted);
    assert_eq!(
        s.proof(1, &name("mainnet")).map(|p| p.kind),
        Some(ProofKind::Seednode)
    );
    // A member cannot pass its membership off as a delegation.
    let fake = PresentedToken {
        network: name("mainnet"),
        kind: TokenKind::Delegation,
        token: w.main.member(&w.peer),
    };
    assert!(verify_token(&w.verifier, &w.peer, &fake, t0()).is_err());
}
