//! Differential: a membership verified through a known delegation (the fast path, which skips
//! block 0's signature and reads block 1 without datalog) gets exactly the verdict of the full
//! biscuit path, over real, corrupted and re-minted tokens. Every comparison runs both paths on
//! the same bytes: one verifier with the delegation cache on, one with it off.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fixture;

use biscuit_auth::macros::{check, fact, rule};
use biscuit_auth::{Biscuit, BlockBuilder};
use cordon_membership::{
    DelegationRequest, PeerId, RefusalCode, Verifier, VerifierConfig, issue_delegation,
};
use fixture::*;

/// The two paths over one network: `fast` knows the delegation (it verified one membership).
struct Paths {
    net: Net,
    fast: Verifier,
    full: Verifier,
}

impl Paths {
    fn new(net: Net) -> Self {
        let access = net.verifier().access();
        let fast = Verifier::new(VerifierConfig::default(), (*access).clone());
        let full = Verifier::new(
            VerifierConfig {
                delegation_cache: 0,
                ..VerifierConfig::default()
            },
            (*access).clone(),
        );
        let warm = key(200).peer_id();
        fast.verify_membership_uncached(&net.member(&warm), &warm, t0())
            .expect("a genuine membership verifies");
        Self { net, fast, full }
    }

    /// Both paths' verdicts on `token`, asserted equal; returns whether the fast path took it.
    fn compare(&self, token: &[u8], presenter: &PeerId) -> bool {
        let hits = self.fast.known_delegation_hits();
        let fast = self.fast.verify_membership_uncached(token, presenter, t0());
        let full = self.full.verify_membership_uncached(token, presenter, t0());
        assert_eq!(
            fast,
            full,
            "the paths disagree on a token of {} bytes",
            token.len()
        );
        self.fast.known_delegation_hits() > hits
    }

    /// A membership token whose block 1 is `block`, signed by `signer` as a third party.
    fn mint(&self, signer: u8, block: BlockBuilder) -> Vec<u8> {
        let delegation = Biscuit::from(&self.net.delegation, self.net.anchor.public().to_biscuit())
            .expect("delegation");
        let signer = key(signer);
        let signed = delegation
            .third_party_request()
            .expect("request")
            .create_block(&signer.biscuit_private(), block)
            .expect("block");
        delegation
            .append_third_party(signer.public().to_biscuit(), signed)
            .expect("append")
            .to_vec()
            .expect("bytes")
    }
}

fn net() -> Net {
    Net::with_delegation(
        "mainnet",
        1,
        2,
        &DelegationRequest {
            network: "mainnet".into(),
            seednode: key(2).public(),
            expires_at: t0() + 30 * DAY,
            allowed_roles: roles(&["member", "operator", "relay"]),
            allowed_rights: roles(&["dht_put", "relay"]),
            max_lifetime: 7 * DAY,
        },
    )
}

/// Block 1 as the issuer writes it, with its parts chosen by the caller.
struct Parts {
    context: &'static str,
    node: Vec<u8>,
    issued: std::time::SystemTime,
    expires: std::time::SystemTime,
    serial: Vec<u8>,
    floor: i64,
    roles: Vec<&'static str>,
}

impl Parts {
    fn of(node: &PeerId) -> Self {
        Self {
            context: "cordon-membership/2",
            node: node.to_bytes(),
            issued: t0(),
            expires: t0() + DAY,
            serial: vec![7; 16],
            floor: 0,
            roles: vec!["member"],
        }
    }

    fn block(&self) -> BlockBuilder {
        let mut b = BlockBuilder::new()
            .context(self.context.to_owned())
            .fact(fact!("node({p})", p = self.node.clone()))
            .unwrap()
            .fact(fact!("issued({t})", t = self.issued))
            .unwrap()
            .fact(fact!("expires({t})", t = self.expires))
            .unwrap()
            .fact(fact!("serial({s})", s = self.serial.clone()))
            .unwrap()
            .fact(fact!("revocation_floor({f})", f = self.floor))
            .unwrap();
        for r in &self.roles {
            b = b.fact(fact!("role({r})", r = r.to_string())).unwrap();
        }
        b
    }
}

#[test]
fn genuine_memberships_take_the_fast_path_with_the_full_verdict() {
    let paths = Paths::new(net());
    let issuer = paths.net.issuer();
    let role_sets = [
        roles(&["member"]),
        roles(&["operator"]),
        roles(&["member", "operator", "relay"]),
    ];
    let right_sets = [
        Vec::new(),
        roles(&["dht_put"]),
        roles(&["dht_put", "relay"]),
    ];
    let mut fast = 0;
    for i in 0..27u8 {
        let node = key(20 + i).peer_id();
        let token = issuer
            .issue_with_rights(
                &node,
                &role_sets[usize::from(i % 3)],
                &right_sets[usize::from(i / 3 % 3)],
                DAY,
                t0(),
            )
            .expect("issue")
            .bytes;
        if paths.compare(&token, &node) {
            fast += 1;
        }
        // The same token from the wrong peer, and at the wrong times.
        paths.compare(&token, &key(99).peer_id());
        let fast_late = paths
            .fast
            .verify_membership_uncached(&token, &node, t0() + 2 * DAY);
        let full_late = paths
            .full
            .verify_membership_uncached(&token, &node, t0() + 2 * DAY);
        assert_eq!(fast_late, full_late);
        assert!(fast_late.is_err(), "an expired token is refused");
    }
    assert_eq!(fast, 27, "every genuine membership took the fast path");
}

#[test]
fn a_revoked_delegation_or_membership_is_refused_on_the_fast_path() {
    let paths = Paths::new(net());
    let node = key(30).peer_id();
    let issued = paths
        .net
        .issuer()
        .issue(&node, &roles(&["member"]), DAY, t0())
        .unwrap();
    assert!(paths.compare(&issued.bytes, &node));
    for v in [&paths.fast, &paths.full] {
        v.revoke([issued.revocation_id.clone()]);
    }
    assert!(
        paths.compare(&issued.bytes, &node),
        "refused on the fast path"
    );
    assert!(
        paths
            .fast
            .verify_membership_uncached(&issued.bytes, &node, t0())
            .is_err()
    );

    let other = key(31).peer_id();
    let token = paths.net.member(&other);
    let delegation = cordon_membership::verify::read_delegation(
        &paths.net.delegation,
        &paths.net.anchor.public(),
    )
    .unwrap()
    .1;
    for v in [&paths.fast, &paths.full] {
        v.revoke([delegation.clone()]);
    }
    assert!(paths.compare(&token, &other));
    assert!(
        paths
            .fast
            .verify_membership_uncached(&token, &other, t0())
            .is_err()
    );
}

#[test]
fn re_minted_blocks_get_the_full_paths_verdict() {
    let paths = Paths::new(net());
    let node = key(40).peer_id();
    let base = Parts::of(&node);
    // (case, token, whether the fast path takes it: `None` where either is right).
    let mut cases: Vec<(&str, Vec<u8>, Option<bool>)> = Vec::new();
    let mut add = |name, token, fast| cases.push((name, token, fast));

    add("as issued", paths.mint(2, base.block()), Some(true));
    add(
        "signed by a key not delegated",
        paths.mint(9, base.block()),
        Some(false),
    );
    add(
        "legacy context",
        paths.mint(
            2,
            Parts {
                context: "cordon-membership/1",
                ..Parts::of(&node)
            }
            .block(),
        ),
        Some(false),
    );
    add(
        "unknown context",
        paths.mint(
            2,
            Parts {
                context: "cordon-membership/9",
                ..Parts::of(&node)
            }
            .block(),
        ),
        Some(false),
    );
    add(
        "no role",
        paths.mint(
            2,
            Parts {
                roles: vec![],
                ..Parts::of(&node)
            }
            .block(),
        ),
        Some(false),
    );
    add(
        "role not delegated",
        paths.mint(
            2,
            Parts {
                roles: vec!["admin"],
                ..Parts::of(&node)
            }
            .block(),
        ),
        Some(true),
    );
    add(
        "three roles",
        paths.mint(
            2,
            Parts {
                roles: vec!["relay", "member", "operator"],
                ..Parts::of(&node)
            }
            .block(),
        ),
        Some(true),
    );
    add(
        "short serial",
        paths.mint(
            2,
            Parts {
                serial: vec![1; 15],
                ..Parts::of(&node)
            }
            .block(),
        ),
        Some(false),
    );
    add(
        "negative floor",
        paths.mint(
            2,
            Parts {
                floor: -1,
                ..Parts::of(&node)
            }
            .block(),
        ),
        Some(false),
    );
    add(
        "not a peer id",
        paths.mint(
            2,
            Parts {
                node: vec![1, 2, 3],
                ..Parts::of(&node)
            }
            .block(),
        ),
        Some(false),
    );
    add(
        "lifetime above the delegated maximum",
        paths.mint(
            2,
            Parts {
                expires: t0() + 8 * DAY,
                ..Parts::of(&node)
            }
            .block(),
        ),
        Some(true),
    );
    add(
        "expires before issued",
        paths.mint(
            2,
            Parts {
                expires: t0() - DAY,
                ..Parts::of(&node)
            }
            .block(),
        ),
        Some(true),
    );
    add(
        "issued in the future",
        paths.mint(
            2,
            Parts {
                issued: t0() + DAY,
                expires: t0() + 2 * DAY,
                ..Parts::of(&node)
            }
            .block(),
        ),
        Some(true),
    );
    add(
        "a second subject",
        paths.mint(
            2,
            base.block()
                .fact(fact!("node({p})", p = key(41).peer_id().to_bytes()))
                .unwrap(),
        ),
        Some(false),
    );
    add(
        "the subject twice",
        paths.mint(
            2,
            base.block()
                .fact(fact!("node({p})", p = node.to_bytes()))
                .unwrap(),
        ),
        None,
    );
    add(
        "the role twice",
        paths.mint(2, base.block().fact(fact!("role(\"member\")")).unwrap()),
        Some(true),
    );
    add(
        "a role as bytes",
        paths.mint(
            2,
            base.block()
                .fact(fact!("role({r})", r = vec![1u8]))
                .unwrap(),
        ),
        Some(false),
    );
    add(
        "a right",
        paths.mint(2, base.block().fact(fact!("right(\"dht_put\")")).unwrap()),
        Some(true),
    );
    add(
        "a right not delegated",
        paths.mint(2, base.block().fact(fact!("right(\"admin\")")).unwrap()),
        Some(true),
    );
    add(
        "an unknown fact",
        paths.mint(2, base.block().fact(fact!("colour(\"blue\")")).unwrap()),
        Some(false),
    );
    add(
        "a rule",
        paths.mint(
            2,
            base.block()
                .rule(rule!("role(\"operator\") <- node($p)"))
                .unwrap(),
        ),
        Some(false),
    );
    add(
        "a passing check",
        paths.mint(2, base.block().check(check!("check if node($p)")).unwrap()),
        Some(false),
    );
    add(
        "a failing check",
        paths.mint(
            2,
            base.block()
                .check(check!("check if colour(\"red\")"))
                .unwrap(),
        ),
        Some(false),
    );
    let mut many = base.block();
    for i in 0..40i64 {
        many = many.fact(fact!("right({r})", r = format!("r{i}"))).unwrap();
    }
    add("facts near the limit", paths.mint(2, many), Some(false));
    let sealed = Biscuit::from(
        paths.mint(2, base.block()),
        paths.net.anchor.public().to_biscuit(),
    )
    .unwrap()
    .seal()
    .unwrap()
    .to_vec()
    .unwrap();
    add("sealed", sealed, Some(false));
    let appended = Biscuit::from(
        paths.mint(2, base.block()),
        paths.net.anchor.public().to_biscuit(),
    )
    .unwrap()
    .append(BlockBuilder::new())
    .unwrap()
    .to_vec()
    .unwrap();
    add("a third block", appended, Some(false));

    for (name, token, expect_fast) in &cases {
        let fast = paths.compare(token, &node);
        if let Some(expected) = expect_fast {
            assert_eq!(fast, *expected, "{name}: fast path taken = {fast}");
        }
    }
}

#[test]
fn a_new_delegation_is_verified_in_full_once() {
    let paths = Paths::new(net());
    // The same anchor delegates again to the same seednode: another block 0.
    let renewed = issue_delegation(
        &paths.net.anchor,
        &DelegationRequest {
            network: "mainnet".into(),
            seednode: key(2).public(),
            expires_at: t0() + 20 * DAY,
            allowed_roles: roles(&["member"]),
            allowed_rights: Vec::new(),
            max_lifetime: 7 * DAY,
        },
        t0(),
    )
    .unwrap();
    let net = Net {
        delegation: renewed,
        ..net()
    };
    let issuer = net.issuer();
    let a = key(50).peer_id();
    let b = key(51).peer_id();
    let ta = issuer
        .issue(&a, &roles(&["member"]), DAY, t0())
        .unwrap()
        .bytes;
    let tb = issuer
        .issue(&b, &roles(&["member"]), DAY, t0())
        .unwrap()
        .bytes;
    assert!(
        !paths.compare(&ta, &a),
        "the first membership under it is verified in full"
    );
    assert!(paths.compare(&tb, &b), "the next takes the fast path");
}

/// Block 1 of `token` re-signed by whoever holds the delegation token (its proof is the secret
/// of the key that signs block 1), with `external` as its third-party signature.
fn re_sign(paths: &Paths, token: &[u8], external: impl FnOnce(&[u8]) -> Vec<u8>) -> Vec<u8> {
    use biscuit_auth::format::schema;
    use ed25519_dalek::{Signer, SigningKey};
    use prost::Message;

    let delegation = schema::Biscuit::decode(paths.net.delegation.as_slice()).unwrap();
    let Some(schema::proof::Content::NextSecret(secret)) = delegation.proof.content else {
        panic!("a delegation carries its next secret");
    };
    let holder = SigningKey::from_bytes(&secret.try_into().unwrap());
    let mut t = schema::Biscuit::decode(token).unwrap();
    let previous = t.authority.signature.clone();
    let block = &mut t.blocks[0];
    let mut signed = b"\0EXTERNAL\0\0VERSION\0".to_vec();
    signed.extend(1u32.to_le_bytes());
    signed.extend(b"\0PAYLOAD\0");
    signed.extend(&block.block);
    signed.extend(b"\0PREVSIG\0");
    signed.extend(&previous);
    let ext = external(&signed);
    block.external_signature.as_mut().unwrap().signature = ext.clone();
    let mut signed = b"\0BLOCK\0\0VERSION\0".to_vec();
    signed.extend(1u32.to_le_bytes());
    signed.extend(b"\0PAYLOAD\0");
    signed.extend(&block.block);
    signed.extend(b"\0ALGORITHM\0");
    signed.extend(0i32.to_le_bytes());
    signed.extend(b"\0NEXTKEY\0");
    signed.extend(&block.next_key.key);
    signed.extend(b"\0PREVSIG\0");
    signed.extend(&previous);
    signed.extend(b"\0EXTERNALSIG\0");
    signed.extend(&ext);
    block.signature = holder.sign(&signed).to_bytes().to_vec();
    t.encode_to_vec()
}

#[test]
fn a_forged_third_party_signature_is_refused_on_both_paths() {
    use ed25519_dalek::{Signer, SigningKey};

    let paths = Paths::new(net());
    let node = key(70).peer_id();
    let genuine = paths.net.member(&node);
    // Control: re-signed with the seednode's own third-party signature, both paths accept it,
    // so the signing above is right and what follows tests the third-party signature alone.
    let seednode = SigningKey::from_bytes(&[2; 32]);
    let control = re_sign(&paths, &genuine, |m| seednode.sign(m).to_bytes().to_vec());
    assert!(paths.compare(&control, &node));
    assert!(
        paths
            .fast
            .verify_membership_uncached(&control, &node, t0())
            .is_ok()
    );
    // The delegation's holder writes a membership the seednode never signed.
    let stranger = SigningKey::from_bytes(&[9; 32]);
    for forged in [
        re_sign(&paths, &genuine, |m| stranger.sign(m).to_bytes().to_vec()),
        re_sign(&paths, &genuine, |_| vec![0; 64]),
        re_sign(&paths, &genuine, |m| {
            seednode.sign(m).to_bytes()[..63].to_vec()
        }),
    ] {
        assert!(!paths.compare(&forged, &node), "not taken by the fast path");
        let refusal = paths.full.verify_membership_uncached(&forged, &node, t0());
        assert_eq!(refusal.unwrap_err().code(), RefusalCode::BadSignature);
    }
}

/// A small deterministic generator (xorshift64*), so a failure names a reproducible case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn corrupted_tokens_get_the_full_paths_verdict() {
    let paths = Paths::new(net());
    let node = key(60).peer_id();
    let token = paths.net.member(&node);
    assert!(paths.compare(&token, &node));
    let mut rng = Rng(0x00c0_ffee_d00d_f00d);
    let mut accepted = 0;
    for _ in 0..4000 {
        let mut t = token.clone();
        for _ in 0..=rng.below(3) {
            let i = rng.below(t.len());
            match rng.below(4) {
                0 => t[i] ^= 1 << rng.below(8),
                1 => t[i] = rng.next() as u8,
                2 => t.insert(i, rng.next() as u8),
                _ => {
                    t.remove(i);
                }
            }
        }
        if paths.compare(&t, &node) {
            accepted += 1;
        }
    }
    // Only unsigned framing can change and still verify: most corruptions are refused.
    assert!(
        accepted < 400,
        "{accepted} corrupted tokens accepted by the fast path"
    );
}
