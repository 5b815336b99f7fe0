//! Revocation distribution benchmark (DESIGN.md section 9), with 10,000 live revocations: the
//! size of a snapshot and the time to parse, verify and apply it from empty; the size of a
//! one-entry delta (what pushing one revocation costs each member) and the time to apply it; the
//! signer's publish time for one new entry.
//!
//! Run with `scripts/bench` (or `cargo bench -p cordon-membership --bench revocations`).
//! BENCH_ITERS sets the iterations of the delta, publish and lookup cases (default 2000; the
//! snapshot cases run a twentieth of them, at least 3) and BENCH_WARMUP the warm-up iterations
//! (default 20); `scripts/bench --smoke` sets both to a few.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cordon_membership::heads::{Entry, NetworkRevocations, SignerLog, Update};
use cordon_membership::{RevocationId, SecretKey};
use cordon_protocol::NetworkName;
use sha2::{Digest, Sha256};

/// Live revocations in the set.
const LIVE: u32 = 10_000;
/// The receiver's per-signer cap.
const MAX_ENTRIES: usize = 100_000;
const T0: u64 = 1_800_000_000;
const DAY: u64 = 86_400;
/// Promised refresh of every head.
const REFRESH: u64 = 3600;

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `f(i)` for `warmup` untimed then `iters` timed iterations (`i` counts on across both)
/// and prints the time per operation.
fn measure(name: &str, warmup: u32, iters: u32, mut f: impl FnMut(u32)) -> Duration {
    for i in 0..warmup {
        f(i);
    }
    let start = Instant::now();
    for i in warmup..warmup + iters {
        f(i);
    }
    let per = start.elapsed() / iters.max(1);
    let per_s = per.as_secs_f64();
    println!(
        "{name:<48} {:>10.2} us/op {:>12.0} ops/s",
        per_s * 1e6,
        1.0 / per_s
    );
    per
}

/// A 16-byte revocation id spread over the buckets like a real one.
fn entry(n: u32) -> Entry {
    Entry {
        id: RevocationId(Sha256::digest(n.to_be_bytes())[..16].to_vec()),
        expires_at: T0 + 30 * DAY,
    }
}

fn main() {
    let iters = env("BENCH_ITERS", 2000).max(1);
    let warmup = env("BENCH_WARMUP", 20);
    let snapshot_iters = (iters / 20).max(3);

    let network: NetworkName = "mainnet".parse().expect("network name");
    let seednode = SecretKey::from_seed([2; 32]);
    let key = seednode.libp2p_keypair();
    let mut log = SignerLog::new(network.clone(), seednode.public());
    log.add((0..LIVE).map(entry), T0);
    log.publish(&key, T0, REFRESH, 0).expect("publish");

    // Snapshot: what a new member (or one too far behind) pulls.
    let snapshot = log.update_since(0).expect("snapshot").to_bytes();
    println!(
        "snapshot of {LIVE} entries: {} bytes ({:.1} bytes per entry; design: about 200 KB)",
        snapshot.len(),
        snapshot.len() as f64 / f64::from(LIVE)
    );
    let parsed = Update::from_bytes(&snapshot, MAX_ENTRIES).expect("parse snapshot");
    let head_bytes = parsed.head.to_bytes();
    println!("signed head: {} bytes", head_bytes.len());
    measure(
        "snapshot: parse + verify + apply from empty",
        warmup.min(3),
        snapshot_iters,
        |_| {
            let update = Update::from_bytes(&snapshot, MAX_ENTRIES).expect("parse");
            let mut receiver = NetworkRevocations::new(network.clone());
            black_box(receiver.apply(&update, MAX_ENTRIES).expect("apply"));
        },
    );
    measure(
        "  of which: apply only (parsed, verified)",
        warmup.min(3),
        snapshot_iters,
        |_| {
            let mut receiver = NetworkRevocations::new(network.clone());
            black_box(receiver.apply(&parsed, MAX_ENTRIES).expect("apply"));
        },
    );

    // Signer: one new revocation, then a new signed head.
    let mut next = LIVE;
    measure(
        "publish one new entry (add + rehash + sign)",
        warmup,
        iters,
        |_| {
            log.add([entry(next)], T0);
            next += 1;
            black_box(log.publish(&key, T0, REFRESH, 0).expect("publish"));
        },
    );

    // Push: a receiver in sync gets each new head with its one-entry delta.
    let mut receiver = NetworkRevocations::new(network.clone());
    receiver
        .apply(&log.update_since(0).expect("snapshot"), MAX_ENTRIES)
        .expect("apply snapshot");
    let mut deltas = Vec::new();
    for _ in 0..warmup + iters {
        let have = log.version();
        log.add([entry(next)], T0);
        next += 1;
        log.publish(&key, T0, REFRESH, 0).expect("publish");
        deltas.push(log.update_since(have).expect("delta").to_bytes());
    }
    let push = deltas[0].len();
    println!(
        "one-entry delta: {push} bytes = bytes per revocation per member for a push (design: a few hundred)"
    );
    let delta = measure(
        "delta of 1 entry: parse + verify + apply",
        warmup,
        iters,
        |i| {
            let update = Update::from_bytes(&deltas[i as usize], MAX_ENTRIES).expect("parse");
            black_box(receiver.apply(&update, MAX_ENTRIES).expect("apply"));
        },
    );
    measure("  of which: parse + signature check", warmup, iters, |i| {
        black_box(Update::from_bytes(&deltas[i as usize], MAX_ENTRIES).expect("parse"));
    });
    println!(
        "receiver now holds {} entries at version {}",
        receiver.len(),
        log.version()
    );

    let probe = entry(7).id;
    let absent = entry(u32::MAX).id;
    measure(
        "contains (revoked id, then an absent one)",
        warmup,
        iters,
        |_| {
            black_box(receiver.contains(black_box(&probe)));
            black_box(receiver.contains(black_box(&absent)));
        },
    );
    println!(
        "one revocation pushed to 1,000,000 members: {push} MB sent in total, {:.3} ms of CPU each",
        delta.as_secs_f64() * 1e3
    );
}
