//! Benchmark (issue 14): the seednode's two stores, SQLite and PostgreSQL, as an operator and
//! the network meet them, through real `seednode` and `node` processes on loopback.
//!
//! 1. **Join requests and approvals per second, SQLite against PostgreSQL.** One seednode per
//!    store, one after the other, on the same identity and network (`approval` policy):
//!    - join requests: `STORE_BENCH_REQUESTS` fresh libp2p identities (default 1000), each
//!      dialling the seednode and filing one `JoinMessage::Request` on `/cordon/join/1`,
//!      `STORE_BENCH_CONCURRENCY` at a time (default 32). The clients are the
//!      `flood_membership` binary's (`FLOOD_KIND=join`, one message per client); the rate is
//!      the requests the seednode queued (answered `Pending`) per second of the flood's wall
//!      time, which includes each client's key generation, TCP and Noise handshakes;
//!    - approvals: every request so queued, approved with `Approve` requests on the seednode's
//!      operator control socket (what `seednode approve` sends), `STORE_BENCH_APPROVERS` in
//!      flight at once (default 8), one connection each; the rate is approvals answered with
//!      an issued token per second of wall time. The requesters have disconnected, so no token
//!      is pushed.
//!
//!    SQLite runs as the seednode always runs it (WAL, `synchronous=FULL`). PostgreSQL is the
//!    private server of `cordon_seednode::pg_testing`, started with durable commits
//!    (`pg_testing::make_durable`: `fsync`, `synchronous_commit` and `full_page_writes` at
//!    PostgreSQL's defaults, on; the tests run it with them off): both stores then wait for
//!    the disk on every commit. The per-address and per-prefix join and connection rate
//!    limits, and the pending-queue caps, are raised in a config file so they do not bound the
//!    numbers (127.0.0.1 is also exempt from the per-address ones by default).
//! 2. **Approval on seednode B to delivery through seednode A.** Two seednodes on one
//!    PostgreSQL database; `STORE_BENCH_DELIVERIES` nodes (default 20) whose only bootstrap is
//!    A, each approved on B's control socket; and as many again approved on A, the baseline
//!    (A is connected to them and pushes the token at once). The delay runs from the approve
//!    call's return to the time the node logged that it verified and stored its token (its
//!    tracing timestamp, in microseconds, on the same clock): `join approved` for a token
//!    that answered its poll, `membership token delivered` for a pushed one. Prints p50, p99
//!    and max, how each token came, and the nodes' join poll interval: until B's approval
//!    wakes A, the token waits for the node's next poll of A.
//!
//! Asserts nothing about the numbers. Exits non-zero with a message when a step fails or a wait
//! times out; every process it started and the PostgreSQL server stop when it ends, also on
//! failure. Binaries: `$CORDON_BIN_DIR` (`node`, `seednode`, `flood_membership`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail, ensure};
use cordon_node::api::{IssuedTokenView, JoinRequestView, Request};
use cordon_seednode::{operator, pg_testing};
use cordon_tests::{Net, Node, path_str, percentile};

/// Longest wait for a flood to end or a queue to fill.
const STEP_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest wait for the last token of part 2 (many times the poll interval).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Settings {
    requests: u64,
    concurrency: u64,
    approvers: usize,
    deliveries: usize,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        Ok(Settings {
            requests: env_number("STORE_BENCH_REQUESTS", 1000, 1, 10_000)?,
            concurrency: env_number("STORE_BENCH_CONCURRENCY", 32, 1, 256)?,
            approvers: env_number("STORE_BENCH_APPROVERS", 8, 1, 16)? as usize,
            deliveries: env_number("STORE_BENCH_DELIVERIES", 20, 1, 200)? as usize,
        })
    }
}

/// `name` from the environment, `default` when unset; refused outside `min..=max`.
fn env_number(name: &str, default: u64, min: u64, max: u64) -> anyhow::Result<u64> {
    let Ok(text) = std::env::var(name) else {
        return Ok(default);
    };
    let value: u64 = text
        .parse()
        .with_context(|| format!("{name}={text:?} is not a number"))?;
    ensure!(
        (min..=max).contains(&value),
        "{name}={value} is outside {min}..={max}"
    );
    Ok(value)
}

/// What one store did in part 1.
#[derive(Debug)]
struct Throughput {
    queued: u64,
    sent: u64,
    join_secs: f64,
    approved: usize,
    approve_secs: f64,
}

impl Throughput {
    fn joins_per_sec(&self) -> f64 {
        self.queued as f64 / self.join_secs
    }

    fn approvals_per_sec(&self) -> f64 {
        self.approved as f64 / self.approve_secs
    }
}

/// The seednode configuration of part 1: the limits that would otherwise cap the numbers.
fn bench_config(requests: u64) -> String {
    let queue = requests.max(10_000);
    format!(
        "# store_bench: limits raised so they do not cap the measurement.\n\
         [rate_limits]\n\
         connections_per_ip = 4096\n\
         [rate_limits.join_requests_per_ip]\nburst = 1000000\nper_sec = 1000000.0\n\
         [rate_limits.join_requests_per_prefix]\nburst = 1000000\nper_sec = 1000000.0\n\
         [rate_limits.connection_rate_per_ip]\nburst = 1000000\nper_sec = 1000000.0\n\
         [seednode.store]\nmax_pending_total = {queue}\nmax_pending_per_network = {queue}\n"
    )
}

/// Part 1 for one store: starts the seednode (`store`: a PostgreSQL url, else SQLite), floods
/// it with join requests, approves every queued one, stops it.
fn measure_store(
    net: &mut Net,
    config: &Path,
    store: Option<&str>,
    settings: Settings,
) -> anyhow::Result<Throughput> {
    let mut extra = vec!["--config", path_str(config)];
    if let Some(url) = store {
        extra.extend(["--store", url]);
    }
    let mut seed = net.start_seednode_with("mainnet", &extra);
    let network = net.network("mainnet").clone();

    let flood = cordon_tests::run_env_with_timeout(
        "flood_membership",
        &[],
        &[
            ("FLOOD_TARGET", &network.bootstrap()),
            ("FLOOD_KIND", "join"),
            ("FLOOD_COUNT", &settings.requests.to_string()),
            ("FLOOD_MESSAGES", "1"),
            ("FLOOD_CONCURRENCY", &settings.concurrency.to_string()),
            ("FLOOD_SECS", &STEP_TIMEOUT.as_secs().to_string()),
        ],
        STEP_TIMEOUT + Duration::from_secs(30),
    );
    ensure!(
        flood.ok,
        "the join-request clients failed:\n{}{}",
        flood.stdout,
        flood.stderr
    );
    let summary = flood.json();
    let field = |name: &str| {
        summary[name]
            .as_u64()
            .ok_or_else(|| anyhow!("the flood summary has no {name}: {summary}"))
    };
    let queued = field("join_pending")?;
    let sent = field("join_sent")?;
    let join_secs = summary["secs"]
        .as_f64()
        .ok_or_else(|| anyhow!("the flood summary has no secs: {summary}"))?;
    ensure!(
        queued == settings.requests,
        "only {queued} of {} join requests were queued (a limit was hit?): {summary}",
        settings.requests
    );

    let pending: Vec<JoinRequestView> =
        operator::call(&network.seed_data, &Request::Pending { network: None })?;
    let ids: Vec<u64> = pending.iter().map(|r| r.id).collect();
    ensure!(
        ids.len() as u64 == queued,
        "the seednode lists {} pending requests, the clients saw {queued} queued",
        ids.len()
    );
    let (approved, approve_secs) = approve_all(&network.seed_data, &ids, settings.approvers)?;
    seed.stop();
    Ok(Throughput {
        queued,
        sent,
        join_secs,
        approved,
        approve_secs,
    })
}

/// Approves `ids` on the seednode of `seed_data` through its control socket, `in_flight` at
/// a time; returns how many were approved and the wall time in seconds.
fn approve_all(seed_data: &Path, ids: &[u64], in_flight: usize) -> anyhow::Result<(usize, f64)> {
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let started = Instant::now();
    let approved = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..in_flight)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = 0usize;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&id) = ids.get(i) else {
                            return done;
                        };
                        match approve(seed_data, id) {
                            Ok(_) => done += 1,
                            Err(e) => {
                                failure.lock().unwrap().get_or_insert(e);
                                // Stop the others too.
                                next.store(ids.len(), Ordering::Relaxed);
                                return done;
                            }
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("an approving thread panicked"))
            .sum::<usize>()
    });
    let secs = started.elapsed().as_secs_f64();
    if let Some(e) = failure.into_inner().unwrap() {
        return Err(e);
    }
    Ok((approved, secs))
}

/// `seednode approve ID` as the CLI sends it, without starting a process.
fn approve(seed_data: &Path, id: u64) -> anyhow::Result<IssuedTokenView> {
    operator::call(
        seed_data,
        &Request::Approve {
            id,
            roles: Vec::new(),
            rights: Vec::new(),
            ttl_secs: None,
        },
    )
    .with_context(|| format!("approving request {id}"))
}

/// Checks that the test server commits durably (see [`pg_testing::make_durable`]), like a
/// production server and like the SQLite store's `synchronous=FULL`.
async fn check_durable() -> anyhow::Result<()> {
    let admin = pg_testing::admin(pg_testing::server(), "postgres").await;
    for setting in ["fsync", "synchronous_commit", "full_page_writes"] {
        let row = admin.query_one(&format!("SHOW {setting}"), &[]).await?;
        let value: String = row.get(0);
        ensure!(
            value == "on",
            "the PostgreSQL test server runs with {setting}={value}, not on"
        );
    }
    Ok(())
}

/// One node's delay in part 2.
#[derive(Debug, Clone, Copy)]
struct Delivery {
    /// From the approve call's return to the node's `join approved`, seconds.
    delay: f64,
    /// The approve call's own duration, seconds.
    call: f64,
    /// How the token came.
    came: Came,
    /// Whether the node had met seednode B before it held its token.
    met_b: bool,
}

/// Part 2: two seednodes on the database `url`; nodes connected to A; half approved on B, half
/// (the baseline) on A. Returns (approved on B, approved on A).
fn measure_delivery(
    net: &mut Net,
    url: &str,
    settings: Settings,
) -> anyhow::Result<(Vec<Delivery>, Vec<Delivery>)> {
    let b = net.add_seednode("mainnet", "seed-b");
    let _a = net.start_seednode_with("mainnet", &["--store", url]);
    let _b = net.start_extra_seednode(&b, &["--store", url]);
    let a_data = net.network("mainnet").seed_data.clone();

    let n = settings.deliveries;
    let nodes: Vec<Node> = (0..2 * n)
        .map(|i| net.start_node(&format!("n{i}"), &["mainnet"], &[]))
        .collect();
    let ids = wait_all_pending(&b.data, &nodes)?;

    // Interleaved, so both halves meet the same conditions: even nodes approved on B, odd on A.
    let mut approved_at: Vec<(SystemTime, f64)> = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        let on = if i % 2 == 0 { &b.data } else { &a_data };
        let started = Instant::now();
        approve(on, ids[&node.peer_id])?;
        approved_at.push((SystemTime::now(), started.elapsed().as_secs_f64()));
    }

    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let mut held: Vec<Option<(f64, Came, usize)>> = vec![None; nodes.len()];
    while held.iter().any(Option::is_none) {
        for (i, node) in nodes.iter().enumerate() {
            if held[i].is_none() {
                held[i] = token_held(&node.daemon.stderr_log());
            }
        }
        if Instant::now() > deadline {
            let missing: Vec<&str> = nodes
                .iter()
                .zip(&held)
                .filter(|(_, h)| h.is_none())
                .map(|(n, _)| n.label.as_str())
                .collect();
            bail!(
                "{} nodes did not log their token (`join approved` or `membership token \
                 delivered`) within {DELIVERY_TIMEOUT:?} of their approval: {missing:?}",
                missing.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let (mut on_b, mut on_a) = (Vec::new(), Vec::new());
    for (i, node) in nodes.iter().enumerate() {
        let (returned, call) = approved_at[i];
        let (at, came, line) = held[i].expect("every node logged");
        // The token came through A unless the node had met B before it (members find each
        // other, but only once they are members).
        let log = node.daemon.stderr_log();
        let met_b = log
            .find(b.peer_id.as_str())
            .is_some_and(|met_b| met_b < line);
        let delivery = Delivery {
            delay: at - unix_secs(returned),
            call,
            came,
            met_b,
        };
        if i % 2 == 0 {
            on_b.push(delivery);
        } else {
            on_a.push(delivery);
        }
    }
    Ok((on_b, on_a))
}

/// Waits until every node's request is in the queue of the seednode of `seed_data`; returns
/// the request ids by peer.
fn wait_all_pending(seed_data: &Path, nodes: &[Node]) -> anyhow::Result<HashMap<String, u64>> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let pending: Vec<JoinRequestView> =
            operator::call(seed_data, &Request::Pending { network: None })?;
        let ids: HashMap<String, u64> = pending.into_iter().map(|r| (r.peer, r.id)).collect();
        let missing = nodes
            .iter()
            .filter(|n| !ids.contains_key(&n.peer_id))
            .count();
        if missing == 0 {
            return Ok(ids);
        }
        ensure!(
            Instant::now() < deadline,
            "{missing} of {} nodes' join requests were not queued within {STEP_TIMEOUT:?}",
            nodes.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How a node came to hold its token: the log line it writes then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Came {
    /// `join approved`: the answer to its poll of the seednode.
    Poll,
    /// `membership token delivered`: pushed by a connected seednode.
    Push,
}

/// When (unix seconds), how and at which byte of the log a node first held its token.
fn token_held(log: &str) -> Option<(f64, Came, usize)> {
    let mut at = 0;
    for line in log.split_inclusive('\n') {
        let came = if line.contains("join approved") {
            Some(Came::Poll)
        } else if line.contains("membership token delivered") {
            Some(Came::Push)
        } else {
            None
        };
        if let Some(came) = came {
            return Some((log_time(line)?, came, at));
        }
        at += line.len();
    }
    None
}

/// Unix seconds of a log line's leading RFC 3339 UTC timestamp
/// (`2026-12-03T06:08:43.123456Z  INFO ...`).
fn log_time(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut ymd = date.split('-').map(str::parse::<i64>);
    let (y, m, d) = (ymd.next()?.ok()?, ymd.next()?.ok()?, ymd.next()?.ok()?);
    let mut hms = time.split(':');
    let h: f64 = hms.next()?.parse().ok()?;
    let min: f64 = hms.next()?.parse().ok()?;
    let s: f64 = hms.next()?.parse().ok()?;
    Some(days_from_civil(y, m, d) as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + s)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn sorted(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The file system type of `path` (for the table: both stores should be on the same disk).
fn filesystem(path: &Path) -> String {
    std::process::Command::new("df")
        .arg("--output=fstype")
        .arg(path)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines().last().map(|l| l.trim().to_owned())
        })
        .unwrap_or_else(|| "?".to_owned())
}

fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    ensure!(
        pg_testing::make_durable(),
        "the PostgreSQL test server started before it was made durable"
    );
    let runtime = tokio::runtime::Runtime::new()?;
    // Fails early, with the fix, if a binary is missing.
    for binary in ["node", "seednode", "flood_membership"] {
        cordon_tests::bin(binary);
    }
    let dir = tempfile::tempdir()?;
    let mut net = Net::builder(dir.path())
        .network("mainnet", "approval")
        .build();
    let config = dir.path().join("store-bench-seednode.toml");
    let config_text = bench_config(settings.requests);
    std::fs::write(&config, &config_text)?;

    println!(
        "store benchmark: {} join requests and approvals per store, then {} + {} deliveries",
        settings.requests, settings.deliveries, settings.deliveries
    );
    let sqlite = measure_store(&mut net, &config, None, settings).context("SQLite store")?;
    let pg_url = runtime.block_on(async {
        let options = pg_testing::fresh_database().await;
        check_durable().await.map(|()| options.url)
    })?;
    let postgres =
        measure_store(&mut net, &config, Some(&pg_url), settings).context("PostgreSQL store")?;

    let data_fs = filesystem(&net.network("mainnet").seed_data);
    let pg_fs = filesystem(&pg_testing::server().socket_dir);
    let ratio = |pg: f64, lite: f64| pg / lite;
    println!();
    println!(
        "1. seednode stores, one real seednode process each ({} CPUs, shared with the clients)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("                         SQLite   PostgreSQL   PostgreSQL/SQLite");
    println!(
        "  join requests / s   {:>10.1}   {:>10.1}   {:>10.2}x",
        sqlite.joins_per_sec(),
        postgres.joins_per_sec(),
        ratio(postgres.joins_per_sec(), sqlite.joins_per_sec())
    );
    println!(
        "  approvals / s       {:>10.1}   {:>10.1}   {:>10.2}x",
        sqlite.approvals_per_sec(),
        postgres.approvals_per_sec(),
        ratio(postgres.approvals_per_sec(), sqlite.approvals_per_sec())
    );
    for (name, t) in [("SQLite", &sqlite), ("PostgreSQL", &postgres)] {
        println!(
            "  {name}: {} of {} requests queued in {:.2} s; {} approved in {:.2} s",
            t.queued, t.sent, t.join_secs, t.approved, t.approve_secs
        );
    }
    println!(
        "  join requests: {} fresh libp2p identities, {} at a time, each dialling the seednode \
         (TCP, Noise, yamux) and sending one JoinMessage::Request on /cordon/join/1; counted: \
         requests answered Pending, per second of wall time (first dial to last answer)",
        settings.requests, settings.concurrency
    );
    println!(
        "  approvals: every queued request approved by an Approve request on the seednode's \
         operator control socket (what `seednode approve` sends; one connection per approval, \
         {} in flight), token signed and stored; per second of wall time; requesters gone, so \
         no token pushed",
        settings.approvers
    );
    println!(
        "  SQLite: <data>/seednode.db, WAL, synchronous=FULL ({data_fs}); PostgreSQL 15: a \
         private server on 127.0.0.1 over TCP with TLS (the default tls = \"prefer\"; the \
         server offers it), durable (fsync, synchronous_commit, full_page_writes on, \
         PostgreSQL's defaults) ({pg_fs}); seednode pool_size 8 (default)"
    );
    println!(
        "  seednode config for both (limits raised so they do not cap the numbers; 127.0.0.1 is \
         also exempt from per-address limits by default): {}",
        config_text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join(" ")
    );

    let delivery_url = runtime.block_on(pg_testing::fresh_database()).url;
    let (on_b, on_a) =
        measure_delivery(&mut net, &delivery_url, settings).context("delivery through A")?;
    let poll = cordon_node::config::NodeLimits::default().poll_interval;
    println!();
    println!(
        "2. approval on seednode B -> token held by a node connected only to seednode A (one \
         PostgreSQL database)"
    );
    println!(
        "  node join poll interval: {:.1} s (default [limits] poll_interval): a token approved \
         on B waits at most that long for the node's next poll of A unless B wakes A",
        poll.as_secs_f64()
    );
    println!(
        "                             nodes      p50      p99      max   came by poll/push  \
         met B first"
    );
    for (what, samples) in [
        ("approved on B, via A", &on_b),
        ("approved on A (baseline)", &on_a),
    ] {
        let delays = sorted(samples.iter().map(|d| d.delay));
        let count = |f: &dyn Fn(&Delivery) -> bool| samples.iter().filter(|d| f(d)).count();
        println!(
            "  {what:<24} {:>7} {:>7.3}s {:>7.3}s {:>7.3}s   {:>8}/{:<8}  {:>11}",
            samples.len(),
            percentile(&delays, 0.5),
            percentile(&delays, 0.99),
            delays.last().copied().unwrap_or(f64::NAN),
            count(&|d| d.came == Came::Poll),
            count(&|d| d.came == Came::Push),
            count(&|d| d.met_b),
        );
    }
    let p50 = |s: &[Delivery]| percentile(&sorted(s.iter().map(|d| d.delay)), 0.5);
    println!(
        "  p50 B/A: {:.1}x; approve call itself p50 {:.1} ms on B, {:.1} ms on A",
        p50(&on_b) / p50(&on_a),
        percentile(&sorted(on_b.iter().map(|d| d.call)), 0.5) * 1e3,
        percentile(&sorted(on_a.iter().map(|d| d.call)), 0.5) * 1e3,
    );
    println!(
        "  measured: from the return of the Approve call on the seednode's control socket to \
         the node's log line saying it verified and stored its token (tracing timestamp, \
         microseconds, same machine clock): `join approved` when the token came as the answer \
         to the node's poll, `membership token delivered` when a connected seednode pushed it; \
         \"met B first\": nodes whose log names B before that line (0: every token came \
         through A)"
    );
    Ok(())
}

fn main() -> ExitCode {
    // The harness's waits panic on timeout (with the daemons' log tails); whatever fails, the
    // processes are dropped (killed) while unwinding and the PostgreSQL server stops when this
    // process exits.
    match std::panic::catch_unwind(run) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("store_bench failed: {e:#}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("store_bench failed: see the panic above");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_timestamps_read_as_unix_seconds() {
        let t =
            log_time("2026-12-03T06:08:43.123456Z  INFO cordon_node::join: join approved").unwrap();
        assert!((t - 1_796_278_123.123_456).abs() < 1e-6, "{t}");
        assert_eq!(log_time("no timestamp here"), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 10.0);
        assert_eq!(percentile(&v, 0.99), 20.0);
        assert_eq!(percentile(&[3.0], 0.5), 3.0);
    }
}
