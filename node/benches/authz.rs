//! Cost of authorizing one remote command: the datalog policy decision per call, cached (the
//! steady state: the decision for a role set is memoized) and cold (a role set never seen, which
//! evaluates the policy for every command once), against a baseline of the same call with no
//! authorization (a hash-set lookup of the caller's network) in the same run.
//!
//! Run with `scripts/bench` or `cargo bench -p cordon-node --bench authz`.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use cordon_node::rpc::{Policy, PolicyConfig};
use cordon_protocol::NetworkName;

fn measure(name: &str, iters: u32, mut f: impl FnMut(u32)) -> Duration {
    for i in 0..iters.min(100) {
        f(i);
    }
    let start = Instant::now();
    for i in 0..iters {
        f(i);
    }
    let per = start.elapsed() / iters;
    println!("{name:<52} {:>10.3} us/call", per.as_secs_f64() * 1e6);
    per
}

fn main() {
    let iters: u32 = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let config = PolicyConfig::default();
    let policy = Policy::default_policy(&config).expect("default policy");
    let member = vec!["member".to_string()];
    let verified: BTreeSet<NetworkName> = ["mainnet".parse().expect("network")].into();
    let mainnet: NetworkName = "mainnet".parse().expect("network");

    let baseline = measure("baseline: membership lookup only", iters, |_| {
        black_box(verified.contains(black_box(&mainnet)));
    });
    let cached = measure("authorize, cached decision (member, ping)", iters, |_| {
        black_box(verified.contains(black_box(&mainnet)));
        black_box(policy.authorize(&member, &[], black_box("ping")).is_ok());
    });
    let cold_iters = (iters / 200).max(50);
    let cold = measure(
        "authorize, cold role set (fresh policy each call)",
        cold_iters,
        |i| {
            // A fresh role name per call defeats the memo: the datalog runs every time.
            let roles = vec![format!("r{i}")];
            black_box(policy.authorize(&roles, &[], "ping").is_err());
        },
    );
    println!(
        "authorization adds {:.3} us per call once cached (target: well under 50 us); a role set's first call costs {:.1} us",
        cached.saturating_sub(baseline).as_secs_f64() * 1e6,
        cold.as_secs_f64() * 1e6
    );
    println!("memoized role sets: {}", policy.cached_decisions());
}
