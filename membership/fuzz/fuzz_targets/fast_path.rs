//! Differential: corrupted memberships under a known delegation get the same verdict from the
//! fast path (delegation cache on) as from the full biscuit path (cache off). The input edits a
//! genuine token (each 3-byte chunk: a position and an xor mask) or, with its first byte odd,
//! is a token of its own.
#![no_main]

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use cordon_membership::{
    AccessList, DelegationRequest, Issuer, NetworkTrust, PeerId, SecretKey, Verifier,
    VerifierConfig, issue_delegation,
};

struct Setup {
    fast: Verifier,
    full: Verifier,
    token: Vec<u8>,
    node: PeerId,
    now: SystemTime,
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    let anchor = SecretKey::from_seed([1; 32]);
    let seednode = SecretKey::from_seed([2; 32]);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let day = Duration::from_secs(86_400);
    let access = || {
        AccessList::new([NetworkTrust {
            name: "mainnet".into(),
            anchors: vec![anchor.public()],
            strict: false,
        }])
        .expect("access list")
    };
    let delegation = issue_delegation(
        &anchor,
        &DelegationRequest {
            network: "mainnet".into(),
            seednode: seednode.public(),
            expires_at: now + 30 * day,
            allowed_roles: vec!["member".into(), "operator".into()],
            allowed_rights: vec!["dht_put".into()],
            max_lifetime: 7 * day,
        },
        now,
    )
    .expect("delegation");
    let fast = Verifier::new(VerifierConfig::default(), access());
    let full = Verifier::new(
        VerifierConfig {
            delegation_cache: 0,
            ..VerifierConfig::default()
        },
        access(),
    );
    let issuer = Issuer::new(&delegation, &fast, seednode, now).expect("issuer");
    let node = SecretKey::from_seed([3; 32]).peer_id();
    let roles = vec!["member".to_string()];
    let token = issuer
        .issue_with_rights(&node, &roles, &["dht_put".to_string()], day, now)
        .expect("issue")
        .bytes;
    let warm = SecretKey::from_seed([4; 32]).peer_id();
    let other = issuer.issue(&warm, &roles, day, now).expect("issue").bytes;
    fast.verify_membership_uncached(&other, &warm, now)
        .expect("the delegation becomes known");
    Setup {
        fast,
        full,
        token,
        node,
        now,
    }
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let s = &*SETUP;
    let token = match data.split_first() {
        Some((first, rest)) if first & 1 == 1 => rest.to_vec(),
        _ => {
            let mut t = s.token.clone();
            for edit in data.get(1..).unwrap_or_default().chunks_exact(3) {
                let i = usize::from(u16::from_le_bytes([edit[0], edit[1]])) % t.len();
                t[i] ^= edit[2];
            }
            t
        }
    };
    let fast = s.fast.verify_membership_uncached(&token, &s.node, s.now);
    let full = s.full.verify_membership_uncached(&token, &s.node, s.now);
    assert_eq!(fast, full);
});
