//! Property: corrupting any byte of a valid token never panics and never yields a verdict for a
//! different subject, network or role set.

#![allow(clippy::unwrap_used)]

mod fixture;

use std::sync::LazyLock;

use cordon_membership::{Verdict, Verifier};
use fixture::*;
use proptest::prelude::*;

struct Case {
    token: Vec<u8>,
    verifier: Verifier,
    original: Verdict,
}

static CASE: LazyLock<Case> = LazyLock::new(|| {
    let net = Net::new("mainnet", 1, 2);
    let node = key(10).peer_id();
    let token = net.member(&node);
    let verifier = net.verifier();
    let original = verifier
        .verify_membership_uncached(&token, &node, t0())
        .expect("the uncorrupted token verifies");
    Case {
        token,
        verifier,
        original,
    }
});

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn corrupted_byte_never_changes_the_verdict(index in any::<prop::sample::Index>(), value in any::<u8>()) {
        let case = &*CASE;
        let mut corrupted = case.token.clone();
        let i = index.index(corrupted.len());
        prop_assume!(corrupted[i] != value);
        corrupted[i] = value;
        if let Ok(verdict) = case.verifier.verify_membership_uncached(&corrupted, &case.original.subject, t0()) {
            prop_assert_eq!(&verdict.subject, &case.original.subject);
            prop_assert_eq!(&verdict.network, &case.original.network);
            prop_assert_eq!(&verdict.roles, &case.original.roles);
        }
    }
}
