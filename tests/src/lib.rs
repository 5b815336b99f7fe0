//! Harness for black-box tests that drive the real `node` and `seednode` binaries, and (in
//! [`inprocess`]) for many real nodes in one process over the memory transport.
//!
//! Binaries are found by path: `$CORDON_BIN_DIR` (set by `scripts/test`) or the workspace's
//! `target/debug`. Never through `PATH`, where `node` is Node.js.
//!
//! Multi-process tests build on:
//! - [`Daemon`]: a running binary whose stdout/stderr go to log files, killed on drop;
//! - [`wait_for`] / [`wait_until`]: polling with a timeout that panics with the daemons' log
//!   tails;
//! - [`Net`]: anchors, seednode identities, delegations and one descriptor file for several
//!   networks, plus [`Net::start_seednode`] and [`Net::start_node`];
//! - one-line wrappers around the operator and node CLIs ([`node_status`], [`node_peers`],
//!   [`pending`], [`approve`], ...).

#![deny(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod bound_tcp;
pub mod forge;
pub mod inprocess;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Path of a Cordon binary (`node` or `seednode`). Panics with the fix if it is not built.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("CORDON_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
                .join("debug")
        });
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built; run `scripts/test` (or `cargo build --workspace --bins`) first",
        path.display()
    );
    path
}

/// Result of running a command to completion.
#[derive(Debug)]
pub struct Run {
    /// Exit status success.
    pub ok: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Parses stdout as JSON, panicking with both streams if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Panics with both streams unless the command succeeded.
    pub fn success(self) -> Self {
        assert!(
            self.ok,
            "command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the command failed; returns it for inspecting stderr.
    pub fn failure(self) -> Self {
        assert!(
            !self.ok,
            "command unexpectedly succeeded\nstdout:\n{}",
            self.stdout
        );
        self
    }
}

/// Runs a binary with arguments, killing it after `timeout`.
pub fn run_with_timeout(name: &str, args: &[&str], timeout: Duration) -> Run {
    run_env_with_timeout(name, args, &[], timeout)
}

/// The environment variable an encrypted anchor key's passphrase may come from. Commands run
/// here never inherit it from the test's own environment: only [`run_env`] passes it.
pub const ANCHOR_PASSPHRASE_ENV: &str = "CORDON_ANCHOR_PASSPHRASE";

/// The seednode's test-only knob for cheap Argon2id parameters when sealing anchor keys (the
/// default costs about a quarter of a second per key, and a debug build more).
pub const WEAK_ANCHOR_KDF_ENV: &str = "CORDON_ANCHOR_INSECURE_KDF_FOR_TESTS";

/// Runs a binary with extra environment variables and a 60 s timeout. Standard input is never a
/// terminal, so a command that would prompt for a passphrase fails instead.
pub fn run_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    run_env_with_timeout(name, args, env, Duration::from_secs(60))
}

/// Runs a binary with extra environment variables, killing it after `timeout`.
pub fn run_env_with_timeout(
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Run {
    let mut child = Command::new(bin(name))
        .args(args)
        .env_remove(ANCHOR_PASSPHRASE_ENV)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Drain both pipes while waiting: a child whose output outgrows the pipe buffer would
    // otherwise block on its write and never exit.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut out);
            }
            out
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} {args:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    Run {
        ok: status.success(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs a binary with a 60 s timeout.
pub fn run(name: &str, args: &[&str]) -> Run {
    run_with_timeout(name, args, Duration::from_secs(60))
}

/// Timeout of one control-socket CLI call (`node status`, `seednode pending`, ...).
pub const CLI_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a short CLI call (status, peers, pending, ...) with [`CLI_TIMEOUT`].
pub fn cli(name: &str, args: &[&str]) -> Run {
    run_with_timeout(name, args, CLI_TIMEOUT)
}

// ---------------------------------------------------------------------------------------------
// Log registry: every live daemon of the current test thread, for failure reports.

#[derive(Debug, Clone)]
struct LogFiles {
    label: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

thread_local! {
    static LOGS: RefCell<Vec<LogFiles>> = const { RefCell::new(Vec::new()) };
    static DUMPED: Cell<bool> = const { Cell::new(false) };
}

/// Lines of each daemon's stderr shown on failure.
const TAIL_LINES: usize = 40;

fn tail_of(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()));
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// The tails of the logs of every daemon started (and not yet dropped) by the current thread.
pub fn log_tails() -> String {
    LOGS.with(|logs| {
        let mut out = String::new();
        for l in logs.borrow().iter() {
            out.push_str(&format!(
                "\n----- {} stderr ({}), last {TAIL_LINES} lines -----\n{}\n",
                l.label,
                l.stderr.display(),
                tail_of(&l.stderr, TAIL_LINES)
            ));
            let stdout = tail_of(&l.stdout, 5);
            if !stdout.trim().is_empty() {
                out.push_str(&format!(
                    "----- {} stdout, last 5 lines -----\n{stdout}\n",
                    l.label
                ));
            }
        }
        out
    })
}

/// Prints [`log_tails`] to stderr once per thread (the first failure report wins).
fn dump_logs_once() {
    if !DUMPED.with(|d| d.replace(true)) {
        eprintln!("{}", log_tails());
    }
}

// ---------------------------------------------------------------------------------------------
// Daemon

/// A long-running Cordon process (`node run`, `seednode run`).
///
/// Its stdout and stderr are appended to `<log_dir>/<label>.stdout.log` and `.stderr.log`
/// (restarts append to the same files, after a marker line). Dropping it sends SIGKILL; if the
/// test is panicking, the tails of every daemon's logs are printed first.
#[derive(Debug)]
pub struct Daemon {
    label: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    logs: LogFiles,
    child: Option<Child>,
    starts: u32,
}

impl Daemon {
    /// Starts `bin(binary) args...`, logging into `log_dir`. `label` names the log files and
    /// the daemon in failure reports; keep it unique within a test.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(
        label: &str,
        binary: &str,
        args: &[S],
        log_dir: &Path,
    ) -> Daemon {
        Daemon::spawn_with_env(label, binary, args, &[], log_dir)
    }

    /// [`Daemon::spawn`] with extra environment variables (kept for restarts until
    /// [`Daemon::clear_env`]).
    pub fn spawn_with_env<S: AsRef<std::ffi::OsStr>>(
        label: &str,
        binary: &str,
        args: &[S],
        env: &[(&str, &str)],
        log_dir: &Path,
    ) -> Daemon {
        std::fs::create_dir_all(log_dir).unwrap();
        let logs = LogFiles {
            label: label.to_owned(),
            stdout: log_dir.join(format!("{label}.stdout.log")),
            stderr: log_dir.join(format!("{label}.stderr.log")),
        };
        LOGS.with(|l| l.borrow_mut().push(logs.clone()));
        let mut daemon = Daemon {
            label: label.to_owned(),
            program: bin(binary),
            args: args.iter().map(|a| a.as_ref().to_owned()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                .collect(),
            logs,
            child: None,
            starts: 0,
        };
        daemon.start();
        daemon
    }

    fn open_log(path: &Path, marker: &str) -> File {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("opening log {}: {e}", path.display()));
        writeln!(f, "{marker}").unwrap();
        f
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.label);
        self.starts += 1;
        let marker = format!(
            "===== harness: start #{} of {} =====",
            self.starts, self.label
        );
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Self::open_log(&self.logs.stdout, &marker))
            .stderr(Self::open_log(&self.logs.stderr, &marker))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", self.program.display()));
        self.child = Some(child);
    }

    /// Starts the process again with the same arguments (it must have been stopped or killed).
    pub fn restart(&mut self) {
        self.start();
    }

    /// Drops the extra environment given at spawn: the next [`Daemon::restart`] runs without
    /// it.
    pub fn clear_env(&mut self) {
        self.env.clear();
    }

    /// The label given at spawn.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Process id of the running process, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status if the process has exited (it is then no longer running).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().expect("try_wait")?;
        self.child = None;
        Some(status)
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }

    /// `kill -9` and reap: no chance to clean up or flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to 15 s for a clean exit (SIGKILL after that). Returns the exit
    /// status, or `None` if it had to be killed or was not running.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `lines` lines of its stderr log (where the daemons log).
    pub fn stderr_tail(&self, lines: usize) -> String {
        tail_of(&self.logs.stderr, lines)
    }

    /// Its whole stderr log so far.
    pub fn stderr_log(&self) -> String {
        std::fs::read_to_string(&self.logs.stderr).unwrap_or_default()
    }

    /// Polls `probe` until it returns `Some`, like [`wait_for`], but fails at once (with the
    /// logs) if the process exits meanwhile.
    pub fn wait_ready<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut probe: impl FnMut() -> Option<T>,
    ) -> Result<T, ExitStatus> {
        let mut exit = None;
        let value = wait_for(timeout, what, || {
            if let Some(v) = probe() {
                return Some(Some(v));
            }
            if let Some(status) = self.exited() {
                exit = Some(status);
                return Some(None);
            }
            None
        });
        value.ok_or_else(|| exit.unwrap())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            dump_logs_once();
        }
        self.kill9();
        let stderr = self.logs.stderr.clone();
        LOGS.with(|l| l.borrow_mut().retain(|f| f.stderr != stderr));
    }
}

// ---------------------------------------------------------------------------------------------
// Waiting

/// Poll interval of [`wait_for`] and [`wait_until`].
pub const POLL: Duration = Duration::from_millis(150);

/// Polls `f` every 150 ms until it returns `Some`; on timeout panics naming `what`, with the log
/// tails of the current test's daemons.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    wait_until(timeout, what, || f().ok_or_else(String::new))
}

/// Like [`wait_for`], but `f` explains why it is not done yet (`Err(observed state)`); the
/// last explanation is part of the timeout panic.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        let last = match f() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if start.elapsed() >= timeout {
            let tails = log_tails();
            DUMPED.with(|d| d.set(true));
            panic!(
                "timed out after {timeout:?} waiting for {what}\nlast observed: {last}\n{tails}"
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Runs `check` every 150 ms for `duration`; `check` asserts (panics) itself. For properties
/// that must hold over a period ("still pending after 8 s").
pub fn hold_for(duration: Duration, mut check: impl FnMut()) {
    let start = Instant::now();
    loop {
        check();
        if start.elapsed() >= duration {
            return;
        }
        std::thread::sleep(POLL);
    }
}

/// Every file and directory under `roots` (recursively; a root may be a single file) that its
/// group or others may access in any way, with its mode: what `seednode anchor` and the
/// daemons write must be owner-only.
pub fn group_or_world_accessible(roots: &[&Path]) -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mut stack: Vec<PathBuf> = roots.iter().map(|p| p.to_path_buf()).collect();
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)
            .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            found.push((path.clone(), mode));
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    found.sort();
    found
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, release it).
/// Another process may take it before it is used: retry on "address in use".
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// Nearest-rank percentile `p` (0 to 1) of sorted values; NaN for none. For the benchmarks.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------------------------
// CLI wrappers

/// A test path as `fn path_strstr` (test paths are UTF-8).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// `node status --data D --json`, or `None` while the daemon is not answering.
pub fn try_node_status(data: &Path) -> Option<Value> {
    let r = cli("node", &["status", "--data", path_str(data), "--json"]);
    if r.ok { Some(r.json()) } else { None }
}

/// `node status --data D --json`; panics if the daemon does not answer.
pub fn node_status(data: &Path) -> Value {
    cli("node", &["status", "--data", path_str(data), "--json"])
        .success()
        .json()
}

/// The `networks[]` entry for `network` in a status document.
pub fn network_status<'a>(status: &'a Value, network: &str) -> Option<&'a Value> {
    status["networks"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == network)
}

/// The node's state in `network` (`member`, `pending`, `joining`, `denied`, `seednode`), or
/// `None` if the daemon does not answer or is not in that network.
pub fn node_state(data: &Path, network: &str) -> Option<String> {
    let status = try_node_status(data)?;
    network_status(&status, network)?["state"]
        .as_str()
        .map(str::to_owned)
}

/// `node peers --data D --network N --json` as printed (one object per routing-table entry:
/// `network`, `peer`, `addrs`, `connected`, `seednode`, `expires_at`); panics on error.
pub fn node_peer_entries(data: &Path, network: &str) -> Vec<Value> {
    let r = cli(
        "node",
        &[
            "peers",
            "--data",
            path_str(data),
            "--network",
            network,
            "--json",
        ],
    )
    .success();
    r.json()
        .as_array()
        .expect("node peers prints an array")
        .clone()
}

/// `node peers --data D --network N --json` as a set of peer ids, or the command's error.
pub fn try_node_peers(data: &Path, network: &str) -> Result<BTreeSet<String>, String> {
    let r = cli(
        "node",
        &[
            "peers",
            "--data",
            path_str(data),
            "--network",
            network,
            "--json",
        ],
    );
    if !r.ok {
        return Err(r.stderr);
    }
    let peers = r.json();
    let list = peers
        .as_array()
        .unwrap_or_else(|| panic!("node peers printed a non-array: {peers}"));
    Ok(list
        .iter()
        .map(|p| {
            assert_eq!(p["network"], network, "node peers --network {network}: {p}");
            p["peer"].as_str().expect("peer is a string").to_owned()
        })
        .collect())
}

/// `node peers --data D --network N --json` as a set of peer ids; panics on error.
pub fn node_peers(data: &Path, network: &str) -> BTreeSet<String> {
    try_node_peers(data, network).unwrap_or_else(|e| {
        panic!(
            "node peers --data {} --network {network}: {e}",
            data.display()
        )
    })
}

/// `seednode pending --data D --json`.
pub fn pending(seed_data: &Path) -> Vec<Value> {
    let v = cli(
        "seednode",
        &["pending", "--data", path_str(seed_data), "--json"],
    )
    .success()
    .json();
    v.as_array().expect("pending prints an array").clone()
}

/// The id of `peer`'s pending request for `network`, if it is in `seednode pending`.
pub fn pending_id(seed_data: &Path, network: &str, peer: &str) -> Option<i64> {
    pending(seed_data)
        .iter()
        .find(|r| r["peer"] == peer && r["network"] == network)
        .map(|r| r["id"].as_i64().expect("id is a number"))
}

/// Waits (up to `timeout`) until `peer` has a pending request for `network`; returns its id.
pub fn wait_pending(seed_data: &Path, network: &str, peer: &str, timeout: Duration) -> i64 {
    wait_until(
        timeout,
        &format!("a pending {network} request of {peer} in `seednode pending`"),
        || pending_id(seed_data, network, peer).ok_or_else(|| format!("{:?}", pending(seed_data))),
    )
}

/// `node call --data FROM --network NETWORK TO COMMAND...` (a short CLI call).
pub fn node_call(from: &Node, to: &Node, network: &str, command: &[&str]) -> Run {
    let mut args = vec![
        "call",
        "--data",
        path_str(&from.data),
        "--network",
        network,
        &to.peer_id,
    ];
    args.extend(command);
    cli("node", &args)
}

/// Runs the `flood_membership` helper's join-message flood against `target` (a multiaddr with
/// `/p2p/`): `clients` fresh identities, `messages` stray join requests each. Panics unless it
/// ran; returns its JSON summary.
pub fn join_flood(target: &str, clients: u32, messages: u32) -> Value {
    join_flood_from(target, clients, messages, None)
}

/// Like [`join_flood`], the clients' source addresses spread over `sources`
/// (`127.0.0.A-127.0.0.B`).
pub fn join_flood_from(target: &str, clients: u32, messages: u32, sources: Option<&str>) -> Value {
    join_message_flood("join", target, clients, messages, sources)
}

/// `clients` fresh identities, each polling the status of a request that is not theirs
/// `messages` times (16 unanswered at a time), their source addresses spread over `sources`
/// (`127.0.0.A-127.0.0.B`). The summary's `join_served` counts the polls the join service
/// answered.
pub fn poll_flood_from(target: &str, clients: u32, messages: u32, sources: Option<&str>) -> Value {
    join_message_flood("poll", target, clients, messages, sources)
}

fn join_message_flood(
    kind: &str,
    target: &str,
    clients: u32,
    messages: u32,
    sources: Option<&str>,
) -> Value {
    let mut flood = Command::new(bin("flood_membership"));
    if let Some(range) = sources {
        flood.env("FLOOD_SOURCE_IPS", range);
    }
    let flood = flood
        .env("FLOOD_TARGET", target)
        .env("FLOOD_KIND", kind)
        .env("FLOOD_COUNT", clients.to_string())
        .env("FLOOD_MESSAGES", messages.to_string())
        .env("FLOOD_CONCURRENCY", "16")
        .env("FLOOD_SECS", "120")
        .output()
        .expect("spawn flood_membership");
    let summary = String::from_utf8_lossy(&flood.stdout);
    eprintln!("flood: {summary}");
    assert!(flood.status.success(), "{flood:?}");
    serde_json::from_str(summary.trim()).expect("the flood prints a JSON summary")
}

/// `seednode approve ID --data D --json`; panics on failure. Returns the issued token record.
pub fn approve(seed_data: &Path, id: i64) -> Value {
    cli(
        "seednode",
        &[
            "approve",
            &id.to_string(),
            "--data",
            path_str(seed_data),
            "--json",
        ],
    )
    .success()
    .json()
}

/// `seednode approve ID --right RIGHT --data D --json` (roles: the seednode's defaults);
/// panics on failure. Returns the issued token record.
pub fn approve_with_right(seed_data: &Path, id: i64, right: &str) -> Value {
    cli(
        "seednode",
        &[
            "approve",
            &id.to_string(),
            "--right",
            right,
            "--data",
            path_str(seed_data),
            "--json",
        ],
    )
    .success()
    .json()
}

/// `seednode deny ID --data D --reason R --json`; panics on failure.
pub fn deny(seed_data: &Path, id: i64, reason: &str) -> Value {
    cli(
        "seednode",
        &[
            "deny",
            &id.to_string(),
            "--data",
            path_str(seed_data),
            "--reason",
            reason,
            "--json",
        ],
    )
    .success()
    .json()
}

/// `seednode revoke --peer PEER` through the seednode's CLI (every live token of the peer);
/// returns its JSON answer.
pub fn revoke_peer(seed_data: &Path, peer: &str) -> Value {
    cli(
        "seednode",
        &[
            "revoke",
            "--peer",
            peer,
            "--data",
            path_str(seed_data),
            "--json",
        ],
    )
    .success()
    .json()
}

/// `seednode members --data D --json`.
pub fn members(seed_data: &Path) -> Vec<Value> {
    let v = cli(
        "seednode",
        &["members", "--data", path_str(seed_data), "--json"],
    )
    .success()
    .json();
    v.as_array().expect("members prints an array").clone()
}

/// `seednode invite --network N --data D --json`: a new single-use code.
pub fn invite(seed_data: &Path, network: &str) -> String {
    let v = cli(
        "seednode",
        &[
            "invite",
            "--network",
            network,
            "--data",
            path_str(seed_data),
            "--json",
        ],
    )
    .success()
    .json();
    v["code"]
        .as_str()
        .unwrap_or_else(|| panic!("seednode invite printed no code: {v}"))
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Fixtures

/// Keys, delegation and seednode identity of one network in a [`Net`].
#[derive(Debug, Clone)]
pub struct Network {
    /// Network name.
    pub name: String,
    /// Join policy written to the descriptor (`approval`, `invite`, `open`).
    pub join: String,
    /// The anchor's public key (`ed25519/<hex>`).
    pub anchor_public_key: String,
    /// The anchors the descriptor lists (`ed25519/<hex>`); starts as `[anchor_public_key]`,
    /// and holds two while a test rotates the anchor.
    pub anchors: Vec<String>,
    /// The directory holding `anchor.key` (plaintext, written with `--insecure-plaintext`) and
    /// `anchor.pub`.
    pub anchor_dir: PathBuf,
    /// The seednode's data directory (identity, database, control socket).
    pub seed_data: PathBuf,
    /// The seednode's peer id.
    pub seed_peer_id: String,
    /// The seednode's public key.
    pub seed_public_key: String,
    /// The delegation file (anchor -> seednode).
    pub delegation: PathBuf,
    /// The seednode's TCP port on 127.0.0.1 (part of the descriptor's bootstrap address).
    pub port: u16,
    /// Extra descriptor lines for this network (e.g. `max_revocation_staleness = "3s"`).
    pub descriptor_extra: String,
    /// Further bootstrap addresses, listed after the first seednode's (see
    /// [`Net::list_seednode`]).
    pub extra_bootstrap: Vec<String>,
}

impl Network {
    /// The bootstrap multiaddr written to the descriptor.
    pub fn bootstrap(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", self.port, self.seed_peer_id)
    }
}

/// Builds a [`Net`]: one anchor, seednode identity and delegation per network.
#[derive(Debug)]
pub struct NetBuilder {
    root: PathBuf,
    networks: Vec<(String, String)>,
}

impl NetBuilder {
    /// Adds a network with a join policy (`approval`, `invite` or `open`).
    pub fn network(mut self, name: &str, join: &str) -> Self {
        self.networks.push((name.to_owned(), join.to_owned()));
        self
    }

    /// Creates the keys and delegations and writes `<root>/networks.toml`.
    pub fn build(self) -> Net {
        let root = self.root;
        let mut networks = Vec::new();
        for (name, join) in self.networks {
            let anchor_dir = root.join(format!("anchor-{name}"));
            // Plaintext anchor keys: tests re-use them with plain `run` (re-delegation and
            // revocation drills). Encryption at rest has its own tests (tests/anchor_cli.rs).
            let anchor = run(
                "seednode",
                &[
                    "anchor",
                    "new",
                    "--network",
                    &name,
                    "--out",
                    path_str(&anchor_dir),
                    "--insecure-plaintext",
                    "--json",
                ],
            )
            .success()
            .json();
            let seed_data = root.join(format!("seed-{name}"));
            let seed = run(
                "seednode",
                &["init", "--data", path_str(&seed_data), "--json"],
            )
            .success()
            .json();
            let seed_public_key = seed["public_key"].as_str().unwrap().to_owned();
            let delegation = root.join(format!("{name}.delegation"));
            run(
                "seednode",
                &[
                    "anchor",
                    "delegate",
                    "--anchor-key",
                    path_str(&anchor_dir.join("anchor.key")),
                    "--seednode",
                    &seed_public_key,
                    "--network",
                    &name,
                    "--roles",
                    "member,operator",
                    "--rights",
                    "dht_put",
                    "--out",
                    path_str(&delegation),
                ],
            )
            .success();
            networks.push(Network {
                name,
                join,
                anchor_public_key: anchor["public_key"].as_str().unwrap().to_owned(),
                anchors: vec![anchor["public_key"].as_str().unwrap().to_owned()],
                anchor_dir,
                seed_data,
                seed_peer_id: seed["peer_id"].as_str().unwrap().to_owned(),
                seed_public_key,
                delegation,
                port: free_port(),
                descriptor_extra: String::new(),
                extra_bootstrap: Vec::new(),
            });
        }
        let net = Net {
            descriptor: root.join("networks.toml"),
            logs: root.join("logs"),
            root,
            networks,
        };
        net.write_descriptor();
        net
    }
}

/// Test fixture: several networks sharing one descriptor file, each with its own anchor and
/// seednode (serving only that network).
#[derive(Debug)]
pub struct Net {
    /// Directory everything lives in.
    pub root: PathBuf,
    /// The descriptor file listing every network.
    pub descriptor: PathBuf,
    /// Where daemons' logs go.
    pub logs: PathBuf,
    /// The networks, in the order they were added.
    pub networks: Vec<Network>,
}

/// How long a daemon may take to answer its first `status`.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

impl Net {
    /// Starts building a fixture in `root` (usually a `tempfile::tempdir()`).
    pub fn builder(root: &Path) -> NetBuilder {
        NetBuilder {
            root: root.to_owned(),
            networks: Vec::new(),
        }
    }

    /// The network called `name`.
    pub fn network(&self, name: &str) -> &Network {
        self.networks
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no network {name} in this fixture"))
    }

    /// (Re)writes the descriptor file from the current networks and ports.
    pub fn write_descriptor(&self) {
        self.write_descriptor_to(&self.descriptor, |n| {
            std::iter::once(n.bootstrap())
                .chain(n.extra_bootstrap.iter().cloned())
                .collect()
        });
    }

    /// Writes a descriptor of the current networks to `path`, each listing the bootstrap
    /// addresses `bootstrap` gives for it (a test's nodes may each know other seednodes).
    pub fn write_descriptor_to(&self, path: &Path, bootstrap: impl Fn(&Network) -> Vec<String>) {
        let mut text = String::new();
        for n in &self.networks {
            let anchors = n
                .anchors
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ");
            let bootstrap = bootstrap(n)
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ");
            text.push_str(&format!(
                // Every process runs on loopback: the network accepts private addresses.
                "[[network]]\nname = \"{}\"\nanchors = [{}]\nbootstrap = [{}]\njoin = \"{}\"\n\
                 private_addresses = true\n{}\n",
                n.name, anchors, bootstrap, n.join, n.descriptor_extra
            ));
        }
        std::fs::write(path, text).unwrap();
    }

    /// Starts the seednode of `network` (serving only that network) and waits until its
    /// operator socket answers. If its port was taken meanwhile, picks another one and rewrites
    /// the descriptor (so start seednodes before nodes).
    pub fn start_seednode(&mut self, network: &str) -> Daemon {
        self.start_seednode_with(network, &[])
    }

    /// [`Net::start_seednode`] with `extra` arguments to `seednode run` (e.g. `--config FILE`).
    pub fn start_seednode_with(&mut self, network: &str, extra: &[&str]) -> Daemon {
        self.start_seednode_env(network, extra, &[])
    }

    /// [`Net::start_seednode_with`] with extra environment variables (e.g. `CORDON_FAULT`).
    pub fn start_seednode_env(
        &mut self,
        network: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        for _attempt in 0..5 {
            let n = self.network(network).clone();
            let seed = ExtraSeednode {
                label: network.to_owned(),
                data: n.seed_data.clone(),
                peer_id: n.seed_peer_id.clone(),
                delegation: n.delegation.clone(),
                port: n.port,
            };
            let mut daemon = self.spawn_seednode(&seed, &format!("seed-{network}"), extra, env);
            match daemon.wait_ready(
                START_TIMEOUT,
                &format!("seednode {network} to start"),
                || seednode_ready(&n.seed_data),
            ) {
                Ok(()) => return daemon,
                Err(status) => {
                    let log = daemon.stderr_log();
                    let in_use = log.contains("in use") || log.contains("AddrInUse");
                    assert!(
                        in_use,
                        "seednode {network} exited ({status}) while starting:\n{}",
                        daemon.stderr_tail(TAIL_LINES)
                    );
                    drop(daemon);
                    let port = free_port();
                    self.networks
                        .iter_mut()
                        .find(|x| x.name == network)
                        .unwrap()
                        .port = port;
                    self.write_descriptor();
                }
            }
        }
        panic!("seednode {network} could not find a free port in 5 attempts");
    }

    /// Initialises `<root>/<label>` with `node init`; returns (data dir, peer id).
    pub fn init_node(&self, label: &str) -> (PathBuf, String) {
        let data = self.root.join(label);
        let v = run("node", &["init", "--data", path_str(&data), "--json"])
            .success()
            .json();
        (data, v["peer_id"].as_str().unwrap().to_owned())
    }

    /// `node init` then `node run` for `networks` (extra arguments such as `--invite CODE`
    /// appended), listening on 127.0.0.1 port 0; waits until `node status` answers.
    pub fn start_node(&self, label: &str, networks: &[&str], extra: &[&str]) -> Node {
        let (data, peer_id) = self.init_node(label);
        self.run_node(label, data, peer_id, networks, extra)
    }

    /// `node run` on a data directory already initialised (see [`Net::init_node`]), so a
    /// test can know a node's peer id before it starts; waits until `node status` answers.
    pub fn run_node(
        &self,
        label: &str,
        data: PathBuf,
        peer_id: String,
        networks: &[&str],
        extra: &[&str],
    ) -> Node {
        self.run_node_from(&self.descriptor, label, data, peer_id, networks, extra)
    }

    /// [`Net::start_node`] reading another descriptor file (see [`Net::write_descriptor_to`]).
    pub fn start_node_from(
        &self,
        descriptor: &Path,
        label: &str,
        networks: &[&str],
        extra: &[&str],
    ) -> Node {
        let (data, peer_id) = self.init_node(label);
        self.run_node_from(descriptor, label, data, peer_id, networks, extra)
    }

    fn run_node_from(
        &self,
        descriptor: &Path,
        label: &str,
        data: PathBuf,
        peer_id: String,
        networks: &[&str],
        extra: &[&str],
    ) -> Node {
        let mut args: Vec<String> = vec![
            "run".into(),
            "--data".into(),
            path_str(&data).into(),
            "--networks".into(),
            path_str(descriptor).into(),
        ];
        for n in networks {
            args.push("--network".into());
            args.push((*n).into());
        }
        args.extend(["--listen", "/ip4/127.0.0.1/tcp/0", "--label", label].map(String::from));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let daemon = Daemon::spawn(label, "node", &args, &self.logs);
        let mut node = Node {
            label: label.to_owned(),
            data,
            peer_id,
            daemon,
        };
        node.wait_ready();
        node
    }
}

/// A further seednode of a network (see [`Net::add_seednode`]): its own identity and a
/// delegation from the network's anchor, not listed in the descriptor unless
/// [`Net::list_seednode`] lists it.
#[derive(Debug, Clone)]
pub struct ExtraSeednode {
    /// Its label (for logs).
    pub label: String,
    /// Its data directory (identity, control socket).
    pub data: PathBuf,
    /// Its peer id.
    pub peer_id: String,
    /// Its delegation file (anchor -> this seednode).
    pub delegation: PathBuf,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
}

impl ExtraSeednode {
    /// Its bootstrap multiaddr.
    pub fn bootstrap(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", self.port, self.peer_id)
    }
}

impl Net {
    /// Creates another seednode for `network` in `<root>/<label>`: `seednode init` and a
    /// delegation from the network's anchor (same roles and rights as the first). The
    /// descriptor is not changed, so nodes still bootstrap only from the network's first
    /// seednode.
    pub fn add_seednode(&self, network: &str, label: &str) -> ExtraSeednode {
        let n = self.network(network);
        let data = self.root.join(label);
        let seed = run("seednode", &["init", "--data", path_str(&data), "--json"])
            .success()
            .json();
        let public_key = seed["public_key"].as_str().unwrap().to_owned();
        let delegation = self.root.join(format!("{label}.delegation"));
        run(
            "seednode",
            &[
                "anchor",
                "delegate",
                "--anchor-key",
                path_str(&n.anchor_dir.join("anchor.key")),
                "--seednode",
                &public_key,
                "--network",
                network,
                "--roles",
                "member,operator",
                "--rights",
                "dht_put",
                "--out",
                path_str(&delegation),
            ],
        )
        .success();
        ExtraSeednode {
            label: label.to_owned(),
            data,
            peer_id: seed["peer_id"].as_str().unwrap().to_owned(),
            delegation,
            port: free_port(),
        }
    }

    /// Lists `seed` in the descriptor as a further bootstrap address of `network`, after the
    /// addresses already there, and rewrites the descriptor (nodes started from now on know it).
    pub fn list_seednode(&mut self, network: &str, seed: &ExtraSeednode) {
        let n = self
            .networks
            .iter_mut()
            .find(|n| n.name == network)
            .unwrap_or_else(|| panic!("no network {network} in this fixture"));
        n.extra_bootstrap.push(seed.bootstrap());
        self.write_descriptor();
    }

    /// `seednode run` of `seed` on its port, reading this fixture's descriptor, with `extra`
    /// arguments and environment variables; does not wait.
    fn spawn_seednode(
        &self,
        seed: &ExtraSeednode,
        log_label: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let listen = format!("/ip4/127.0.0.1/tcp/{}", seed.port);
        let args: Vec<&str> = [
            "run",
            "--data",
            path_str(&seed.data),
            "--networks",
            path_str(&self.descriptor),
            "--delegation",
            path_str(&seed.delegation),
            "--listen",
            &listen,
            "--label",
            &seed.label,
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
        Daemon::spawn_with_env(log_label, "seednode", &args, env, &self.logs)
    }

    /// Starts a seednode made by [`Net::add_seednode`] on its port, with `extra` arguments to
    /// `seednode run`, and waits until its operator socket answers.
    pub fn start_extra_seednode(&self, seed: &ExtraSeednode, extra: &[&str]) -> Daemon {
        let mut daemon = self.spawn_seednode(seed, &seed.label, extra, &[]);
        if let Err(status) = daemon.wait_ready(
            START_TIMEOUT,
            &format!("seednode {} to start", seed.label),
            || seednode_ready(&seed.data),
        ) {
            panic!(
                "seednode {} exited ({status}) while starting:\n{}",
                seed.label,
                daemon.stderr_tail(TAIL_LINES)
            );
        }
        daemon
    }
}

/// Whether a seednode's operator socket answers `seednode status`.
pub fn seednode_ready(seed_data: &Path) -> Option<()> {
    cli(
        "seednode",
        &["status", "--data", path_str(seed_data), "--json"],
    )
    .ok
    .then_some(())
}

/// A running `node` with its data directory and peer id.
#[derive(Debug)]
pub struct Node {
    /// Label (log file names, `--label`).
    pub label: String,
    /// Data directory.
    pub data: PathBuf,
    /// Peer id.
    pub peer_id: String,
    /// The process.
    pub daemon: Daemon,
}

impl Node {
    /// Waits until `node status` answers; panics with the logs if the process exits first.
    pub fn wait_ready(&mut self) -> Value {
        let data = self.data.clone();
        let what = format!("node {} to answer `node status`", self.label);
        match self
            .daemon
            .wait_ready(START_TIMEOUT, &what, || try_node_status(&data))
        {
            Ok(status) => status,
            Err(exit) => panic!(
                "node {} exited ({exit}) while starting:\n{}",
                self.label,
                self.daemon.stderr_tail(TAIL_LINES)
            ),
        }
    }

    /// `node status`; panics if it does not answer.
    pub fn status(&self) -> Value {
        node_status(&self.data)
    }

    /// Its state in `network`, or `None` if it does not answer or is not in that network.
    pub fn state(&self, network: &str) -> Option<String> {
        node_state(&self.data, network)
    }

    /// Its routing table for `network`; panics on error.
    pub fn peers(&self, network: &str) -> BTreeSet<String> {
        node_peers(&self.data, network)
    }

    /// Waits until its state in `network` is `state`.
    pub fn wait_state(&self, network: &str, state: &str, timeout: Duration) {
        wait_until(
            timeout,
            &format!("node {} to be {state} in {network}", self.label),
            || match self.state(network) {
                Some(s) if s == state => Ok(()),
                other => Err(format!("state {other:?}")),
            },
        );
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.daemon.kill9();
    }

    /// Starts it again with the same arguments and data directory; returns its first status.
    pub fn restart(&mut self) -> Value {
        self.daemon.restart();
        self.wait_ready()
    }
}
