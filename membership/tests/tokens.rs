//! Issuing and verifying delegation and membership tokens, one test per refusal reason.

#![allow(clippy::unwrap_used)]

mod fixture;

use std::time::Duration;

use biscuit_auth::macros::{block, check, fact};
use biscuit_auth::{Biscuit, BlockBuilder};
use cordon_membership::{
    AccessList, DelegationRequest, IssueError, NetworkTrust, Refusal, RefusalCode, RevocationId,
    Verifier, VerifierConfig,
};
use fixture::*;

#[test]
fn valid_token_yields_its_verdict() {
    let net = Net::new("mainnet", 1, 2);
    let node = key(10).peer_id();
    let issued = net
        .issuer()
        .issue(&node, &roles(&["operator", "member"]), DAY, t0())
        .unwrap();
    let verdict = net
        .verifier()
        .verify_membership(&issued.bytes, &node, t0() + HOUR)
        .unwrap();
    assert_eq!(verdict.network, "mainnet");
    assert_eq!(verdict.subject, node);
    assert_eq!(verdict.issuer, net.seednode.public());
    assert_eq!(verdict.roles, roles(&["member", "operator"]));
    assert_eq!(verdict.expires_at, t0() + DAY);
    assert_eq!(verdict.token_id, issued.token_id);
    assert_eq!(verdict.revocation_ids.len(), 2);
    assert_eq!(verdict.revocation_ids[1], issued.revocation_id);
}

#[test]
fn token_presented_by_another_peer_is_wrong_subject() {
    let net = Net::new("mainnet", 1, 2);
    let owner = key(10).peer_id();
    let thief = key(11).peer_id();
    let token = net.member(&owner);
    let err = net
        .verifier()
        .verify_membership(&token, &thief, t0())
        .unwrap_err();
    assert_eq!(err.code(), RefusalCode::WrongSubject);
    assert!(matches!(err, Refusal::WrongSubject { token_subject } if token_subject == owner));
}

#[test]
fn expired_membership_is_refused_after_skew() {
    let net = Net::new("mainnet", 1, 2);
    let node = key(10).peer_id();
    let token = net.member(&node);
    let verifier = net.verifier();
    // Within the 60 s skew allowance: still accepted.
    verifier
        .verify_membership(&token, &node, t0() + DAY + Duration::from_secs(30))
        .unwrap();
    let err = verifier
        .verify_membership(&token, &node, t0() + DAY + Duration::from_secs(61))
        .unwrap_err();
    assert!(matches!(err, Refusal::MembershipExpired { .. }), "{err}");
    assert_eq!(err.code(), RefusalCode::Expired);
}

#[test]
fn expired_delegation_is_refused() {
    let net = Net::with_delegation(
        "mainnet",
        1,
        2,
        &DelegationRequest {
            network: "mainnet".into(),
            seednode: key(2).public(),
            expires_at: t0() + 2 * HOUR,
            allowed_roles: roles(&["member"]),
            allowed_rights: Vec::new(),
            max_lifetime: DAY,
        },
    );
    let node = key(10).peer_id();
    let token = net
        .issuer()
        .issue(&node, &roles(&["member"]), 2 * HOUR, t0())
        .unwrap();
    let err = net
        .verifier()
        .verify_membership(&token.bytes, &node, t0() + 3 * HOUR)
        .unwrap_err();
    assert!(matches!(err, Refusal::DelegationExpired { .. }), "{err}");
    assert_eq!(err.code(), RefusalCode::Expired);
    let err = net
        .verifier()
        .verify_delegation(&net.delegation, &key(2).peer_id(), t0() + 3 * HOUR)
        .unwrap_err();
    assert!(matches!(err, Refusal::DelegationExpired { .. }), "{err}");
}

#[test]
fn unknown_anchor_is_bad_signature() {
    let net = Net::new("mainnet", 1, 2);
    let node = key(10).peer_id();
    let token = net.member(&node);
    let stranger = Net::new("mainnet", 3, 2);
    let err = stranger
        .verifier()
        .verify_membership(&token, &node, t0())
        .unwrap_err();
    assert!(
        matches!(err, Refusal::UnknownAnchor { key_id: Some(id) } if id == key(1).public().key_id()),
        "{err}"
    );
    assert_eq!(err.code(), RefusalCode::BadSignature);
}

#[test]
fn rotated_anchor_is_accepted_while_listed_and_refused_once_removed() {
    let old = Net::new("mainnet", 1, 2);
    let new = Net::new("mainnet", 4, 2);
    let node = key(10).peer_id();
    let old_token = old.member(&node);
    let new_token = new.member(&node);
    let during = Verifier::new(
        VerifierConfig::default(),
        AccessList::new([NetworkTrust {
            name: "mainnet".into(),
            anchors: vec![old.anchor.public(), new.anchor.public()],
            strict: false,
        }])
        .unwrap(),
    );
    during.verify_membership(&old_token, &node, t0()).unwrap();
    during.verify_membership(&new_token, &node, t0()).unwrap();
    let after = new.verifier();
    after.verify_membership(&new_token, &node, t0()).unwrap();
    let err = after
        .verify_membership(&old_token, &node, t0())
        .unwrap_err();
    assert!(matches!(err, Refusal::UnknownAnchor { .. }), "{err}");
}

#[test]
fn swapping_the_access_list_live_refuses_cached_tokens_of_a_removed_anchor() {
    let old = Net::new("mainnet", 1, 2);
    let new = Net::new("mainnet", 4, 2);
    let node = key(10).peer_id();
    let old_token = old.member(&node);
    let new_token = new.member(&node);
    let trust = |anchors| {
        AccessList::new([NetworkTrust {
            name: "mainnet".into(),
            anchors,
            strict: false,
        }])
        .unwrap()
    };
    // One verifier for the whole rotation, as a running node has.
    let verifier = Verifier::new(VerifierConfig::default(), trust(vec![old.anchor.public()]));
    let verdict = verifier.verify_membership(&old_token, &node, t0()).unwrap();
    assert_eq!(verdict.anchor, old.anchor.public());
    assert!(matches!(
        verifier.verify_membership(&new_token, &node, t0()),
        Err(Refusal::UnknownAnchor { .. })
    ));

    verifier.set_access(trust(vec![old.anchor.public(), new.anchor.public()]));
    verifier.verify_membership(&old_token, &node, t0()).unwrap();
    let verdict = verifier.verify_membership(&new_token, &node, t0()).unwrap();
    assert_eq!(verdict.anchor, new.anchor.public());

    verifier.set_access(trust(vec![new.anchor.public()]));
    verifier.verify_membership(&new_token, &node, t0()).unwrap();
    // The old token's verdict was cached: the new list still refuses it.
    let err = verifier
        .verify_membership(&old_token, &node, t0())
        .unwrap_err();
    assert!(matches!(err, Refusal::UnknownAnchor { .. }), "{err}");
    let delegation = verifier
        .verify_delegation(&new.delegation, &new.seednode.peer_id(), t0())
        .unwrap();
    assert_eq!(delegation.anchor, new.anchor.public());
    assert!(
        verifier
            .verify_delegation(&old.delegation, &old.seednode.peer_id(), t0())
            .is_err()
    );
}

/// Appends a third-party block signed by `signer` to a delegation.
fn append_third_party(
    net: &Net,
    signer: &cordon_membership::SecretKey,
    block: BlockBuilder,
) -> Vec<u8> {
    let delegation = Biscuit::from(&net.delegation, net.anchor.public().to_biscuit()).unwrap();
    let request = delegation.third_party_request().unwrap();
    let signed = request
        .create_block(&signer.biscuit_private(), block)
        .unwrap();
    delegation
        .append_third_party(signer.public().to_biscuit(), signed)
        .unwrap()
        .to_vec()
        .unwrap()
}

fn membership_block(
    node: &cordon_membership::PeerId,
    role: &str,
    lifetime: Duration,
) -> BlockBuilder {
    let issued = t0();
    let expires = t0() + lifetime;
    BlockBuilder::new()
        .context("cordon-membership/1".into())
        .fact(fact!("node({p})", p = node.to_bytes()))
        .unwrap()
        .fact(fact!("issued({t})", t = issued))
        .unwrap()
        .fact(fact!("expires({t})", t = expires))
        .unwrap()
        .fact(fact!("role({r})", r = role.to_string()))
        .unwrap()
}

#[test]
fn block_signed_by_undelegated_key_is_refused() {
    let net = Net::new("mainnet", 1, 2);
    let node = key(10).peer_id();
    let rogue = key(66);
    let token = append_third_party(&net, &rogue, membership_block(&node, "member", DAY));
    let err = net
        .verifier()
        .verify_membership(&token, &node, t0())
        .unwrap_err();
    assert!(
        matches!(err, Refusal::UnendorsedIssuer { signer: Some(k) } if k == rogue.public()),
        "{err}"
    );
    assert_eq!(err.code(), RefusalCode::BadSignature);
}

#[test]
fn first_party_membership_block_is_refused() {
    let net = Net::new("mainnet", 1, 2);
    let node = key(10).peer_id();
    let delegation = Biscuit::from(&net.delegation, net.anchor.public().to_biscuit()).unwrap();
    let token = delegation
        .append(membership_block(&node, "member", DAY))
        .unwrap()
        .to_vec()
        .unwrap();
    let err = net
        .verifier()
        .verify_membership(&token, &node, t0())
        .unwrap_err();
    assert!(
        matches!(err, Refusal::UnendorsedIssuer { signer: None }),
        "{err}"
    );
}

#[test]
fn issuing_beyond_delegation_bounds_is_refused() {
    let net = Net::new("mainnet", 1, 2);
    let node = key(10).peer_id();
    let issuer = net.issuer();
    let err = issuer
        .issue(&node, &roles(&["admin"]), DAY, t0())
        .unwrap_err();
    assert!(
        matches!(err, IssueError::RoleNotDelegated { ref role, .. } if role == "admin"),
        "{err}"
    );
    let err = issuer
        .issue(&node, &roles(&["member"]), 8 * DAY, t0())
        .unwrap_err();
    assert!(
        matches!(err, IssueError::LifetimeExceeded { requested_secs, max_secs }
        if requested_secs == 8 * 86_400 && max_secs == 7 * 86_400),
        "{err}"
    );
    let err = issuer
        .issue(&node, &roles(&["member"]), 6 * DAY, t0() + 28 * DAY)
        .unwrap_err();
    assert!(
        matches!(err, IssueError::OutlivesDelegation { .. }),
        "{err}"
    );
}

#[test]
fn seednode_signed_token_beyond_bounds_is_refused_by_verifier() {
    let net = Net::new("mainnet", 1, 2);
    let node = key(10).peer_id();
    // The seednode key itself signs a role the anchor never delegated.
    let token = append_third_party(&net, &net.seednode, membership_block(&node, "admin", DAY));
    let err = net
        .verifier()
        .verify_membership(&token, &node, t0())
        .unwrap_err();
    assert!(matches!(err, Refusal::Policy { .. }), "{err}");
    assert_eq!(err.code(), RefusalCode::Policy);
    // ... and a lifetime over the delegated maximum.
    let token = append_third_party(
        &net,
        &net.seednode,
        membership_block(&node, "member", 8 * DAY),
    );
    let err = net
        .verifier()
        .verify_membership(&token, &node, t0())
        .unwrap_err();
    assert!(
        matches!(err, Refusal::Policy { ref detail } if detail.contains("lifetime")),
        "{err}"
    );
}

#[test]
fn revoked_membership_id_is_refused_even_when_cached() {
    let net = Net::new("mainnet", 1, 2);
    let node = key(10).peer_id();
    let issued = net
        .issuer()
        .issue(&node, &roles(&["member"]), DAY, t0())
        .unwrap();
    let verifier = net.verifier();
    verifier
        .verify_membership(&issued.bytes, &node, t0())
        .unwrap();
    verifier.revoke([issued.revocation_id.clone()]);
    let err = verifier
        .verify_membership(&issued.bytes, &node, t0())
        .unwrap_err();
    assert!(
        matches!(err, Refusal::Revoked { ref id } if *id == issued.revocation_id),
        "{err}"
    );
    assert_eq!(err.code(), RefusalCode::Revoked);
    // Another node's token from the same seednode is unaffected.
    let other = key(11).peer_id();
    verifier
        .verify_membership(&net.member(&other), &other, t0())
        .unwrap();
}

#[test]
fn revoked_delegation_id_refuses_every_token_of_that_seednode() {
    let net = Net::new("mainnet", 1, 2);
    let a = key(10).peer_id();
    let b = key(11).peer_id();
    let (ta, tb) = (net.member(&a), net.member(&b));
    let verifier = net.verifier();
    let delegation_id = verifier
        .verify_delegation(&net.delegation, &net.seednode.peer_id(), t0())
        .unwrap()
        .revocation_id;
    verifier.revoke([delegation_id]);
    for (token, peer) in [(&ta, &a), (&tb, &b)] {
        let err = verifier.verify_membership(token, peer, t0()).unwrap_err();
        assert_eq!(err.code(), RefusalCode::Revoked, "{err}");
    }
    let err = verifier
        .verify_delegation(&net.delegation, &net.seednode.peer_id(), t0())
        .unwrap_err();
    assert_eq!(err.code(), RefusalCode::Revoked);
}

#[test]
fn truncated_garbage_and_oversized_bytes_are_malformed() {
    let net = Net::new("mainnet", 1, 2);
    let node = key(10).peer_id();
    let token = net.member(&node);
    let verifier = net.verifier();
    for len in [0, 1, token.len() / 2, token.len() - 1] {
        let err = verifier
            .verify_membership(&token[..len], &node, t0())
            .unwrap_err();
        assert_eq!(err.code(), RefusalCode::Malformed, "len {len}: {err}");
    }
    let err = verifier
        .verify_membership(b"definitely not a biscuit", &node, t0())
        .unwrap_err();
    assert_eq!(err.code(), RefusalCode::Malformed, "{err}");
    let big = vec![0u8; 4097];
    let err = verifier.verify_membership(&big, &node, t0()).unwrap_err();
    assert_eq!(
        err,
        Refusal::TooLarge {
            size: 4097,
            max: 4096
        }
    );
    assert_eq!(err.code(), RefusalCode::Malformed);
}

#[test]
fn token_for_network_not_in_access_list_is_unknown_network() {
    // The anchor trusted for mainnet also signs a delegation for "othernet".
    let othernet = Net::with_delegation(
        "othernet",
        1,
        2,
        &DelegationRequest {
            network: "othernet".into(),
            seednode: key(2).public(),
            expires_at: t0() + 30 * DAY,
            allowed_roles: roles(&["member"]),
            allowed_rights: Vec::new(),
            max_lifetime: DAY,
        },
    );
    let mainnet = Net::new("mainnet", 1, 2);
    let node = key(10).peer_id();
    let token = append_third_party(
        &othernet,
        &othernet.seednode,
        membership_block(&node, "member", DAY),
    );
    let err = mainnet
        .verifier()
        .verify_membership(&token, &node, t0())
        .unwrap_err();
    assert!(
        matches!(err, Refusal::UnknownNetwork { ref network } if network == "othernet"),
        "{err}"
    );
    assert_eq!(err.code(), RefusalCode::UnknownNetwork);
}

#[test]
fn anchor_of_another_network_cannot_sign_for_this_one() {
    // testnet's anchor signs a delegation naming mainnet; a node trusting both networks must
    // still refuse it for mainnet.
    let mainnet = Net::new("mainnet", 1, 2);
    let forged = Net::new("mainnet", 5, 2);
    let testnet = Net::new("testnet", 5, 3);
    let verifier = Verifier::new(
        VerifierConfig::default(),
        AccessList::new([mainnet.trust(), testnet.trust()]).unwrap(),
    );
    let node = key(10).peer_id();
    let err = verifier
        .verify_membership(&forged.member(&node), &node, t0())
        .unwrap_err();
    assert!(
        matches!(err, Refusal::AnchorNotForNetwork { ref network, .. } if network == "mainnet"),
        "{err}"
    );
    assert_eq!(err.code(), RefusalCode::BadSignature);
}

fn heavy_block() -> BlockBuilder {
    let mut b = BlockBuilder::new();
    for i in 0..48i64 {
        b = b.fact(fact!("h({i})", i = i)).unwrap();
    }
    b.check(check!(
        "check if h($a), h($b), h($c), h($d), $a + $b + $c + $d == 191"
    ))
    .unwrap()
}

#[test]
fn appended_heavy_datalog_block_is_refused_as_malformed_before_datalog() {
    let net = Net::new("mainnet", 1, 2);
    let node = key(10).peer_id();
    let token = Biscuit::from(net.member(&node), net.anchor.public().to_biscuit()).unwrap();
    let attacked = token.append(heavy_block()).unwrap().to_vec().unwrap();
    assert!(
        attacked.len() <= 4096,
        "fits the size cap: {}",
        attacked.len()
    );
    let err = net
        .verifier()
        .verify_membership(&attacked, &node, t0())
        .unwrap_err();
    assert!(
        matches!(err, Refusal::Malformed { detail } if detail.contains("two blocks")),
        "{err}"
    );
}

#[test]
fn heavy_third_party_block_from_a_stranger_is_refused_before_datalog() {
    let net = Net::new("mainnet", 1, 2);
    let node = key(10).peer_id();
    let block = heavy_block()
        .merge(block!("node({p})", p = node.to_bytes()))
        .context("cordon-membership/1".into());
    let token = append_third_party(&net, &key(77), block);
    let err = net
        .verifier()
        .verify_membership(&token, &node, t0())
        .unwrap_err();
    assert!(matches!(err, Refusal::UnendorsedIssuer { .. }), "{err}");
}

#[test]
fn seednode_presents_its_delegation() {
    let net = Net::new("mainnet", 1, 2);
    let verifier = net.verifier();
    let verdict = verifier
        .verify_delegation(&net.delegation, &net.seednode.peer_id(), t0())
        .unwrap();
    assert_eq!(verdict.facts.network, "mainnet");
    assert_eq!(&verdict.facts.delegate, net.seednode.public().as_bytes());
    assert_eq!(verdict.facts.allowed_roles, roles(&["member", "operator"]));
    // A phishing seednode replaying someone else's delegation is refused.
    let err = verifier
        .verify_delegation(&net.delegation, &key(99).peer_id(), t0())
        .unwrap_err();
    assert_eq!(err.code(), RefusalCode::WrongSubject);
    // A membership token is not a delegation.
    let node = key(10).peer_id();
    let err = verifier
        .verify_delegation(&net.member(&node), &node, t0())
        .unwrap_err();
    assert_eq!(err.code(), RefusalCode::Malformed);
}

#[test]
fn cached_verdict_still_checks_subject_and_expiry() {
    let net = Net::new("mainnet", 1, 2);
    let node = key(10).peer_id();
    let token = net.member(&node);
    let verifier = net.verifier();
    verifier.verify_membership(&token, &node, t0()).unwrap();
    let err = verifier
        .verify_membership(&token, &key(11).peer_id(), t0())
        .unwrap_err();
    assert_eq!(err.code(), RefusalCode::WrongSubject);
    let err = verifier
        .verify_membership(&token, &node, t0() + 2 * DAY)
        .unwrap_err();
    assert_eq!(err.code(), RefusalCode::Expired);
}

#[test]
fn tokens_are_standard_biscuits_with_the_anchor_key_id() {
    let net = Net::new("mainnet", 1, 2);
    let node = key(10).peer_id();
    let token = net.member(&node);
    let parsed = Biscuit::from(&token, net.anchor.public().to_biscuit()).unwrap();
    assert_eq!(parsed.root_key_id(), Some(net.anchor.public().key_id()));
    assert_eq!(parsed.block_count(), 2);
    let b64 = parsed.to_base64().unwrap();
    Biscuit::from_base64(&b64, net.anchor.public().to_biscuit()).unwrap();
    let _ = RevocationId(vec![]);
}

#[test]
fn explicit_rights_are_carried_and_bounded_by_the_delegation() {
    let net = Net::with_delegation(
        "mainnet",
        1,
        2,
        &DelegationRequest {
            network: "mainnet".into(),
            seednode: key(2).public(),
            expires_at: t0() + 30 * DAY,
            allowed_roles: roles(&["member"]),
            allowed_rights: roles(&["dht_put"]),
            max_lifetime: DAY,
        },
    );
    let node = key(10).peer_id();
    let issuer = net.issuer();
    let token = issuer
        .issue_with_rights(&node, &roles(&["member"]), &roles(&["dht_put"]), DAY, t0())
        .unwrap();
    assert_eq!(token.rights, roles(&["dht_put"]));
    let verdict = net
        .verifier()
        .verify_membership(&token.bytes, &node, t0())
        .unwrap();
    assert_eq!(verdict.rights, roles(&["dht_put"]));
    // A plain token carries no rights.
    let plain = net
        .verifier()
        .verify_membership(&net.member(&node), &node, t0())
        .unwrap();
    assert!(plain.rights.is_empty());
    // The issuer refuses a right the delegation does not allow...
    let err = issuer
        .issue_with_rights(&node, &roles(&["member"]), &roles(&["admin"]), DAY, t0())
        .unwrap_err();
    assert!(
        matches!(err, IssueError::RightNotDelegated { ref right, .. } if right == "admin"),
        "{err}"
    );
    // ... and so does the verifier when the seednode key signs one anyway.
    let block = membership_block(&node, "member", DAY)
        .fact(fact!("right({r})", r = "admin".to_string()))
        .unwrap();
    let forged = append_third_party(&net, &net.seednode, block);
    let err = net
        .verifier()
        .verify_membership(&forged, &node, t0())
        .unwrap_err();
    assert!(
        matches!(err, Refusal::Policy { ref detail } if detail.contains("right")),
        "{err}"
    );
}

/// What a holder can do without any key but its own: take the (public, unsealed) delegation a
/// seednode presents, and re-append its membership's third-party block (payload and the
/// seednode's external signature, unchanged) with a fresh chain key. Upstream biscuit-auth
/// accepts the result; its block-1 signature differs from the original's.
fn remint(delegation: &[u8], member_token: &[u8]) -> Vec<u8> {
    use biscuit_auth::format::schema;
    use prost::Message;
    let token = schema::Biscuit::decode(member_token).unwrap();
    let block = &token.blocks[0];
    let contents = schema::ThirdPartyBlockContents {
        payload: block.block.clone(),
        external_signature: block.external_signature.clone().unwrap(),
    };
    let reminted = biscuit_auth::UnverifiedBiscuit::from(delegation)
        .unwrap()
        .append_third_party(&contents.encode_to_vec())
        .unwrap();
    reminted.to_vec().unwrap()
}

#[test]
fn reminted_membership_keeps_its_revocation_id_and_is_refused_once_revoked() {
    let net = Net::new("mainnet", 1, 2);
    let node = key(10).peer_id();
    let issued = net
        .issuer()
        .issue(&node, &roles(&["member"]), DAY, t0())
        .unwrap();
    let reminted = remint(&net.delegation, &issued.bytes);
    let original = Biscuit::from(&issued.bytes, net.anchor.public().to_biscuit()).unwrap();
    let copy = Biscuit::from(&reminted, net.anchor.public().to_biscuit()).unwrap();
    // The attack works at the biscuit level: a valid token, same block, new block-1 signature.
    assert_ne!(reminted, issued.bytes);
    assert_ne!(
        original.revocation_identifiers()[1],
        copy.revocation_identifiers()[1]
    );
    let verifier = net.verifier();
    let verdict = verifier.verify_membership(&reminted, &node, t0()).unwrap();
    // ...but Cordon identifies both by the seednode's serial, so they share one id.
    assert_eq!(verdict.revocation_ids[1], issued.revocation_id);
    verifier.revoke([issued.revocation_id.clone()]);
    for token in [&issued.bytes, &reminted] {
        let err = verifier.verify_membership(token, &node, t0()).unwrap_err();
        assert_eq!(err.code(), RefusalCode::Revoked, "{err}");
    }
}

#[test]
fn legacy_membership_without_serial_verifies_under_its_block_signature_id() {
    let net = Net::new("mainnet", 1, 2);
    let node = key(10).peer_id();
    let token = append_third_party(&net, &net.seednode, membership_block(&node, "member", DAY));
    let verifier = net.verifier();
    let verdict = verifier.verify_membership(&token, &node, t0()).unwrap();
    let block_signature = Biscuit::from(&token, net.anchor.public().to_biscuit())
        .unwrap()
        .revocation_identifiers()[1]
        .clone();
    assert_eq!(
        verdict.revocation_ids[1],
        RevocationId::legacy_membership(&block_signature)
    );
    assert_eq!(verdict.revocation_floor, 0);
    verifier.revoke([verdict.revocation_ids[1].clone()]);
    let err = verifier.verify_membership(&token, &node, t0()).unwrap_err();
    assert_eq!(err.code(), RefusalCode::Revoked);
}

#[test]
fn issued_tokens_carry_a_distinct_serial_and_the_issuers_floor() {
    let net = Net::new("mainnet", 1, 2);
    let node = key(10).peer_id();
    let issuer = net.issuer();
    issuer.set_revocation_floor(7);
    issuer.set_revocation_floor(3);
    let a = issuer.issue(&node, &roles(&["member"]), DAY, t0()).unwrap();
    let b = issuer.issue(&node, &roles(&["member"]), DAY, t0()).unwrap();
    assert_ne!(a.revocation_id, b.revocation_id);
    assert_eq!(
        a.revocation_id.0.len(),
        cordon_membership::REVOCATION_ID_LEN
    );
    let verdict = net
        .verifier()
        .verify_membership(&a.bytes, &node, t0())
        .unwrap();
    assert_eq!(verdict.revocation_floor, 7);
    assert_eq!(verdict.revocation_ids[1], a.revocation_id);
}

/// Issue 11, item 7: the signature-free pre-check passes what verification would accept and
/// refuses, with the code verification would give, what is not worth verifying.
#[test]
fn precheck_refuses_cheaply_what_verification_would_refuse() {
    let main = Net::new("mainnet", 1, 2);
    let test = Net::new("testnet", 3, 4);
    let verifier = Verifier::new(
        VerifierConfig::default(),
        AccessList::new([main.trust(), test.trust()]).unwrap(),
    );
    let node = key(10).peer_id();
    let token = main.member(&node);
    verifier.precheck(&token, true, "mainnet").unwrap();
    // A seednode's delegation passes as a delegation, not as a membership.
    verifier
        .precheck(&main.delegation, false, "mainnet")
        .unwrap();
    let err = verifier
        .precheck(&main.delegation, true, "mainnet")
        .unwrap_err();
    assert_eq!(err.code(), RefusalCode::Malformed, "{err}");
    // A copied token passes: its refusal, `wrong_subject`, may only come from verification
    // (a pre-check refusal is shown on the wire as the one code of unverified tokens).
    let thief = key(11).peer_id();
    verifier.precheck(&token, true, "mainnet").unwrap();
    let err = verifier
        .verify_membership(&token, &thief, t0())
        .unwrap_err();
    assert!(matches!(err, Refusal::WrongSubject { token_subject } if token_subject == node));
    // Another network's token labelled mainnet.
    let testnet_token = test.member(&node);
    let err = verifier
        .precheck(&testnet_token, true, "mainnet")
        .unwrap_err();
    assert!(
        matches!(&err, Refusal::UnknownNetwork { network } if network == "testnet"),
        "{err}"
    );
    // An anchor nobody trusts.
    let stranger = Net::new("mainnet", 5, 6);
    let err = verifier
        .precheck(&stranger.member(&node), true, "mainnet")
        .unwrap_err();
    assert_eq!(err.code(), RefusalCode::BadSignature, "{err}");
    // Garbage, and a valid membership with a block appended (three blocks).
    let err = verifier.precheck(b"garbage", true, "mainnet").unwrap_err();
    assert_eq!(err.code(), RefusalCode::Malformed);
    let appended = Biscuit::from(&token, main.anchor.public().to_biscuit())
        .unwrap()
        .append(block!("extra(true);"))
        .unwrap()
        .to_vec()
        .unwrap();
    let err = verifier.precheck(&appended, true, "mainnet").unwrap_err();
    assert_eq!(err.code(), RefusalCode::Malformed, "{err}");
    assert!(verifier.verify_membership(&appended, &node, t0()).is_err());
    // A delegation with a membership block the presenter signed itself (anyone holding a
    // delegation can make one): refused before any signature is checked.
    let rogue = key(66);
    let forged = append_third_party(
        &main,
        &rogue,
        membership_block(&rogue.peer_id(), "member", DAY),
    );
    let err = verifier.precheck(&forged, true, "mainnet").unwrap_err();
    assert!(
        matches!(&err, Refusal::UnendorsedIssuer { signer: Some(k) } if *k == rogue.public()),
        "{err}"
    );
    // The genuine seednode's block passes (and verifies).
    let genuine = append_third_party(
        &main,
        &main.seednode,
        membership_block(&node, "member", DAY),
    );
    verifier.precheck(&genuine, true, "mainnet").unwrap();
}

/// The cache-only lookup answers exactly when a full verification would hit the cache.
#[test]
fn cached_verdicts_are_answered_without_cryptography_until_the_cache_is_stale() {
    let net = Net::new("mainnet", 1, 2);
    let node = key(10).peer_id();
    let token = net.member(&node);
    let verifier = net.verifier();
    assert!(
        verifier
            .verify_membership_cached(&token, &node, t0())
            .is_none()
    );
    let verdict = verifier.verify_membership(&token, &node, t0()).unwrap();
    assert_eq!(
        verifier.verify_membership_cached(&token, &node, t0()),
        Some(Ok(verdict.clone()))
    );
    // The presenter and the clock are still checked on a cached verdict.
    let thief = key(11).peer_id();
    assert!(matches!(
        verifier.verify_membership_cached(&token, &thief, t0()),
        Some(Err(Refusal::WrongSubject { .. }))
    ));
    assert!(matches!(
        verifier.verify_membership_cached(&token, &node, t0() + 2 * DAY),
        Some(Err(Refusal::MembershipExpired { .. }))
    ));
    // A revocation (of anything) makes the cached verdict stale.
    verifier.revoke([verdict.revocation_ids[1].clone()]);
    assert!(
        verifier
            .verify_membership_cached(&token, &node, t0())
            .is_none()
    );
    assert!(matches!(
        verifier.verify_membership(&token, &node, t0()),
        Err(Refusal::Revoked { .. })
    ));
}
