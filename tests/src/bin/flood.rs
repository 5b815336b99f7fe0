//! `flood`: raw TCP garbage against a node, for `scripts/flood`.
//!
//! ```text
//! flood tcp HOST:PORT COUNT [CONCURRENCY] [MAX_SECS]
//! ```
//!
//! Opens `COUNT` TCP connections to `HOST:PORT` (loopback only), at most `CONCURRENCY` at a time
//! (default 32), for at most `MAX_SECS` seconds (default 60). The connections cycle through
//! three kinds of abuse:
//! 0. pure garbage: 4 KiB of pseudo-random bytes, then close;
//! 1. a valid multistream-select header, then garbage where the Noise proposal should be;
//! 2. a silent connection held open for up to 2 s (a slow client tying up a slot).
//!
//! Each connection reads what the node answers (at most 4 KiB, 2 s read timeout). Prints one
//! JSON summary line on stdout. Exits non-zero only on bad arguments or a non-loopback address.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

const MULTISTREAM: &[u8] = b"\x13/multistream/1.0.0\n";

#[derive(Debug, Default)]
struct Counters {
    attempted: AtomicU64,
    connected: AtomicU64,
    connect_failed: AtomicU64,
    answered: AtomicU64,
    closed_by_node: AtomicU64,
    bytes_sent: AtomicU64,
}

/// xorshift64*: garbage only, not cryptography.
#[derive(Debug)]
struct Garbage(u64);

impl Garbage {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            *b = (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8;
        }
    }
}

fn one(addr: SocketAddr, kind: u64, rng: &mut Garbage, c: &Counters) {
    c.attempted.fetch_add(1, Ordering::Relaxed);
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        c.connect_failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    c.connected.fetch_add(1, Ordering::Relaxed);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let mut garbage = vec![0u8; 4096];
    rng.fill(&mut garbage);
    let sent = match kind {
        0 => s.write_all(&garbage).map(|()| garbage.len()),
        1 => s
            .write_all(MULTISTREAM)
            .and_then(|()| s.write_all(&garbage[..1024]))
            .map(|()| MULTISTREAM.len() + 1024),
        _ => Ok(0),
    };
    match sent {
        Ok(n) => {
            c.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        Err(_) => {
            c.closed_by_node.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    let mut buf = [0u8; 4096];
    let mut total = 0usize;
    let deadline = Instant::now() + Duration::from_secs(2);
    while total < buf.len() && Instant::now() < deadline {
        match s.read(&mut buf[total..]) {
            Ok(0) => {
                c.closed_by_node.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Ok(n) => total += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(_) => {
                c.closed_by_node.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    if total > 0 {
        c.answered.fetch_add(1, Ordering::Relaxed);
    }
}

fn tcp(args: &[String]) -> anyhow::Result<()> {
    let [addr, count, rest @ ..] = args else {
        bail!("usage: flood tcp HOST:PORT COUNT [CONCURRENCY] [MAX_SECS]");
    };
    let addr: SocketAddr = addr.parse().context("HOST:PORT")?;
    if !addr.ip().is_loopback() {
        bail!("flood only targets loopback addresses, not {addr}");
    }
    let count: u64 = count.parse().context("COUNT")?;
    let concurrency: u64 = rest
        .first()
        .map_or(Ok(32), |s| s.parse())
        .context("CONCURRENCY")?;
    let max_secs: u64 = rest
        .get(1)
        .map_or(Ok(60), |s| s.parse())
        .context("MAX_SECS")?;
    if count > 100_000 || !(1..=1024).contains(&concurrency) || max_secs > 3600 {
        bail!("COUNT <= 100000, 1 <= CONCURRENCY <= 1024, MAX_SECS <= 3600");
    }
    let counters = Arc::new(Counters::default());
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(max_secs);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let counters = counters.clone();
            let next = next.clone();
            std::thread::spawn(move || {
                let mut rng = Garbage(seed.wrapping_add(w.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count || Instant::now() >= deadline {
                        return;
                    }
                    one(addr, i % 3, &mut rng, &counters);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let c = &counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "kind": "tcp",
            "attempted": get(&c.attempted),
            "connected": get(&c.connected),
            "connect_failed": get(&c.connect_failed),
            "answered": get(&c.answered),
            "closed_by_node": get(&c.closed_by_node),
            "bytes_sent": get(&c.bytes_sent),
            "secs": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("tcp") => tcp(&args[1..]),
        _ => Err(anyhow::anyhow!(
            "usage: flood tcp HOST:PORT COUNT [CONCURRENCY] [MAX_SECS]"
        )),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
