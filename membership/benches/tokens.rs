//! Token benchmark: issue, cold verify, cached verify, heavy-block refusal, token size.
//!
//! Run with `scripts/bench` (or `cargo bench -p cordon-membership --bench tokens`). Prints
//! operations per second and, measured in this same run: the cold/cached ratio, and a cold
//! verification through a known delegation against the full path and against biscuit-auth's
//! own `Biscuit::from` plus an allow-all authorizer (the baseline).

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use biscuit_auth::macros::{check, fact};
use biscuit_auth::{Biscuit, BlockBuilder};
use cordon_membership::{
    AccessList, DelegationRequest, Issuer, NetworkTrust, SecretKey, Verifier, VerifierConfig,
    issue_delegation,
};

fn measure(name: &str, min_time: Duration, mut f: impl FnMut()) -> f64 {
    // Warm up, then run batches until min_time has passed.
    for _ in 0..50 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < min_time {
        for _ in 0..100 {
            f();
        }
        n += 100;
    }
    let per_op = start.elapsed().as_secs_f64() / n as f64;
    println!(
        "{name:<40} {:>10.2} us/op {:>12.0} ops/s",
        per_op * 1e6,
        1.0 / per_op
    );
    per_op
}

/// biscuit-auth's own authorizer over `token` with an allow-all policy.
fn authorize(token: &Biscuit) -> usize {
    let mut a = biscuit_auth::AuthorizerBuilder::new()
        .policy(biscuit_auth::macros::policy!("allow if true"))
        .expect("policy")
        .build(token)
        .expect("build");
    a.authorize().expect("authorize")
}

fn main() {
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let anchor = SecretKey::from_seed([1; 32]);
    let seednode = SecretKey::from_seed([2; 32]);
    let node = SecretKey::from_seed([3; 32]).peer_id();
    let delegation = issue_delegation(
        &anchor,
        &DelegationRequest {
            network: "mainnet".into(),
            seednode: seednode.public(),
            expires_at: now + 30 * day,
            allowed_roles: vec!["member".into(), "operator".into()],
            allowed_rights: Vec::new(),
            max_lifetime: 7 * day,
        },
        now,
    )
    .expect("delegation");
    let access = AccessList::new([NetworkTrust {
        name: "mainnet".into(),
        anchors: vec![anchor.public()],
        strict: false,
    }])
    .expect("access list");
    let verifier = Verifier::new(VerifierConfig::default(), access.clone());
    // The same checks with no delegation cache: every token verified in full.
    let full = Verifier::new(
        VerifierConfig {
            delegation_cache: 0,
            ..VerifierConfig::default()
        },
        access,
    );
    let issuer = Issuer::new(&delegation, &verifier, seednode, now).expect("issuer");
    let roles = vec!["member".to_string()];
    let token = issuer.issue(&node, &roles, day, now).expect("issue").bytes;

    let min = Duration::from_millis(
        std::env::var("BENCH_MILLIS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000),
    );
    println!(
        "token size: {} bytes (delegation {} bytes)",
        token.len(),
        delegation.len()
    );
    measure("issue membership", min, || {
        black_box(issuer.issue(&node, &roles, day, now).expect("issue"));
    });
    let root = anchor.public().to_biscuit();
    measure("  of which: biscuit parse + signatures", min, || {
        black_box(Biscuit::from(&token, root).expect("parse"));
    });
    let parsed = Biscuit::from(&token, root).expect("parse");
    if std::env::var("BENCH_BREAKDOWN").is_ok() {
        measure("  of which: authorizer build", min, || {
            black_box(
                biscuit_auth::AuthorizerBuilder::new()
                    .policy(biscuit_auth::macros::policy!("allow if true"))
                    .expect("policy")
                    .build(&parsed)
                    .expect("build"),
            );
        });
        measure("  of which: authorizer build+authorize", min, || {
            black_box(authorize(&parsed));
        });
    }
    let baseline = measure("baseline: Biscuit::from + authorizer", min, || {
        black_box(authorize(&Biscuit::from(&token, root).expect("parse")));
    });
    let cold_full = measure("verify membership, cold, full path", min, || {
        black_box(
            full.verify_membership_uncached(&token, &node, now)
                .expect("verify"),
        );
    });
    // A first membership makes its delegation known; every later one is cold but known.
    let other = SecretKey::from_seed([4; 32]).peer_id();
    let first = issuer.issue(&other, &roles, day, now).expect("issue").bytes;
    verifier
        .verify_membership_uncached(&first, &other, now)
        .expect("verify");
    let hits = verifier.known_delegation_hits();
    let cold = measure("verify membership, cold, known delegation", min, || {
        black_box(
            verifier
                .verify_membership_uncached(&token, &node, now)
                .expect("verify"),
        );
    });
    assert!(
        verifier.known_delegation_hits() > hits,
        "the cold case went through the known delegation"
    );
    verifier
        .verify_membership(&token, &node, now)
        .expect("warm");
    let cached = measure("verify membership, cached", min, || {
        black_box(
            verifier
                .verify_membership(&token, &node, now)
                .expect("verify"),
        );
    });

    let mut heavy = BlockBuilder::new();
    for i in 0..48i64 {
        heavy = heavy.fact(fact!("h({i})", i = i)).expect("fact");
    }
    let heavy = heavy
        .check(check!(
            "check if h($a), h($b), h($c), h($d), $a + $b + $c + $d == 191"
        ))
        .expect("check");
    let attacked = Biscuit::from(&token, anchor.public().to_biscuit())
        .expect("parse")
        .append(heavy)
        .expect("append")
        .to_vec()
        .expect("bytes");
    let refuse = measure("refuse token with appended heavy block", min, || {
        black_box(
            verifier
                .verify_membership_uncached(&attacked, &node, now)
                .expect_err("refused"),
        );
    });
    println!("cold/cached ratio: {:.1}x", cold / cached);
    println!(
        "cold verification: {:.0}/s known delegation, {:.0}/s full path, {:.0}/s baseline \
         (known delegation {:.2}x faster than the full path, {:.2}x than the baseline; \
         target 5,000/s per core)",
        1.0 / cold,
        1.0 / cold_full,
        1.0 / baseline,
        cold_full / cold,
        baseline / cold
    );
    println!(
        "heavy-block refusal: {:.3} ms (budget: well under 10 ms)",
        refuse * 1e3
    );
}
