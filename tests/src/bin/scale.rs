//! `scripts/scale`: N real nodes in several networks in one process, over the memory transport,
//! joining through a real seednode per network; reports how the overlay behaves as N grows.
//!
//! Every node is the product's own [`Node`] (swarm, session machine, gates, one Kademlia per
//! network, event loop, data directory), each seednode the product's node with the product's
//! join service over SQLite. Nodes start with no token and ask their network's seednode to join;
//! the harness approves them through the seednode's operator requests, as `seednode approve`
//! does. Only the transport differs from `node run` (memory instead of TCP; Noise and Yamux
//! run as usual), and the control socket is replaced by the in-process handle.
//!
//! The seednodes run on a runtime of their own (one worker thread), the nodes on the
//! `--workers` pool: a seednode is its own process, which the operating system schedules
//! beside the others, not one task among a thousand. On one shared pool a seednode's swarm task
//! and its join service waited behind every node's task at each wake-up: at 1,000 nodes the
//! approvals went at about one a second, thousands of polls were refused with the service's
//! queue full, and the approval phase did not finish within its 300 s.
//!
//! Phases, each bounded by a timeout:
//! 1. join: every node asks to join; join -> pending per node.
//! 2. approve: every request approved, one after another as an operator would (how long each
//!    `approve` took is reported); approve -> member per node, watched while the approvals go
//!    on; then until every member routes at least one other member.
//! 3. late joiners, once the burst settled (the process used at most `--settle` percent of the
//!    workers' CPU in three 5 s windows in a row, 60 by default; at most 300 s): `--late` more
//!    nodes, one at a time: join -> pending, and approve -> callable (three random members of
//!    its network each get `pong` from it).
//! 4. pairs: `--pairs` random same-network pairs call `ping` (a caller that is not connected to
//!    its callee looks it up by PeerId); `--finds` lookups report hops and members asked.
//! 5. leaks: every routing table, and every lookup's answer, is checked for peers of networks
//!    the node is not in.
//! 6. revoke: `--revoke` members are revoked at their seednode; revoke -> gone from every
//!    member's table.
//!
//! Resident memory and CPU time of the process are read from /proc, before and after; each
//! node's live connections and table entries are read after the idle window. `--config FILE`
//! runs every node with the `[limits]` of a node config file.
//!
//! `--processes` runs the same phases against real processes instead: every node is
//! `node run` and every seednode `seednode run` (the binaries in `CORDON_BIN_DIR`), on
//! loopback TCP, their anchors, delegations and descriptor made with the `seednode` CLI, and
//! the harness asks them everything over their control sockets, as `node` and `seednode`
//! commands do. Memory and CPU are then the sum over those processes. Each process costs a
//! runtime, a control socket and its logs: this mode is for a few hundred nodes.
//!
//! Prints a table, and the same figures as JSON (`--json FILE`). Exits non-zero if a phase
//! times out, a pair fails, or anything leaks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use cordon_host::control;
use cordon_host::datadir::DataDir;
use cordon_host::descriptor::{Descriptor, NetworkEntry};
use cordon_membership::{
    DelegationRequest, Issuer, PeerId, SecretKey, Verifier, VerifierConfig, issue_delegation,
};
use cordon_node::api::{CallCommand, CallResult, Request, Response, Status};
use cordon_node::config::{NodeFile, Transport};
use cordon_node::{Node, NodeConfig, NodeHandle, NodeLimits};
use cordon_protocol::NetworkName;
use cordon_seednode::service::{SeedService, ServiceConfig};
use cordon_seednode::store::{SqliteStore, StoreLimits};
use cordon_tests::inprocess::{Sample, wait_for};
use cordon_tests::{Daemon, Net, path_str};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use serde::Serialize;
use tokio::sync::oneshot;

const USAGE: &str = "usage: scale [--nodes N] [--networks M] [--workers W] [--pairs P] [--finds F] \
[--late L] [--revoke R] [--bucket-size K] [--idle SECS] [--settle PERCENT] [--seed S] \
[--config NODE.TOML] [--json FILE] [--processes] [--verbose]";

#[derive(Debug, Clone)]
struct Args {
    nodes: usize,
    networks: usize,
    workers: usize,
    pairs: usize,
    finds: usize,
    late: usize,
    revoke: usize,
    bucket_size: Option<usize>,
    /// A node config file whose `[limits]` every node runs with.
    config: Option<PathBuf>,
    /// Length of the idle window after the late joiners, in seconds.
    idle: usize,
    /// The late joiners start once the process used at most this share of the workers' CPU
    /// in three 5 s windows in a row (percent; 0: at once), or after 300 s.
    settle: usize,
    seed: u64,
    json: Option<PathBuf>,
    /// Print each late joiner's calls: how long each took, and for a failed one who routes the
    /// joiner at that moment.
    verbose: bool,
    /// Run the nodes and seednodes as processes of the binaries in `CORDON_BIN_DIR`, on
    /// loopback TCP.
    processes: bool,
}

impl Args {
    fn parse() -> anyhow::Result<Self> {
        let mut a = Self {
            nodes: 200,
            networks: 2,
            workers: std::thread::available_parallelism().map_or(2, usize::from),
            pairs: 1000,
            finds: 100,
            late: 20,
            revoke: 5,
            bucket_size: None,
            config: None,
            idle: 10,
            settle: 60,
            seed: 0x5eed_0001,
            json: None,
            verbose: false,
            processes: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "--help" || flag == "-h" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            if flag == "--verbose" {
                a.verbose = true;
                continue;
            }
            if flag == "--processes" {
                a.processes = true;
                continue;
            }
            let value = it
                .next()
                .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))?;
            let number = || -> anyhow::Result<usize> {
                value
                    .parse()
                    .map_err(|_| anyhow!("{flag}: {value:?} is not a number\n{USAGE}"))
            };
            match flag.as_str() {
                "--nodes" => a.nodes = number()?,
                "--networks" => a.networks = number()?,
                "--workers" => a.workers = number()?,
                "--pairs" => a.pairs = number()?,
                "--finds" => a.finds = number()?,
                "--late" => a.late = number()?,
                "--revoke" => a.revoke = number()?,
                "--bucket-size" => a.bucket_size = Some(number()?),
                "--config" => a.config = Some(PathBuf::from(value)),
                "--idle" => a.idle = number()?,
                "--settle" => a.settle = number()?,
                "--seed" => a.seed = number()? as u64,
                "--json" => a.json = Some(PathBuf::from(value)),
                _ => bail!("unknown flag {flag}\n{USAGE}"),
            }
        }
        anyhow::ensure!((1..=8).contains(&a.networks), "--networks must be 1 to 8");
        anyhow::ensure!(
            a.nodes >= 4 * a.networks,
            "--nodes must be at least 4 per network"
        );
        anyhow::ensure!(a.workers >= 1, "--workers must be at least 1");
        anyhow::ensure!(
            !a.processes || std::env::var_os("CORDON_BIN_DIR").is_some(),
            "--processes runs the binaries in CORDON_BIN_DIR: set it (scripts/scale sets it to \
             target/release)"
        );
        anyhow::ensure!(a.settle <= 100, "--settle must be 0 to 100 percent");
        anyhow::ensure!(
            (1..=3600).contains(&a.idle),
            "--idle must be 1 to 3600 seconds"
        );
        anyhow::ensure!(
            a.revoke < a.nodes / a.networks / 2,
            "--revoke must be under half of a network"
        );
        Ok(a)
    }
}

/// How the harness asks a node: in this process, or over its control socket.
#[derive(Clone)]
enum Handle {
    InProcess(NodeHandle),
    Socket(PathBuf),
}

/// What keeps a node running, and stops it when dropped.
enum Life {
    Task { _stop: oneshot::Sender<()> },
    Process(Daemon),
}

/// A running node or seednode.
struct Running {
    peer: PeerId,
    network: NetworkName,
    handle: Handle,
    life: Life,
}

impl Running {
    /// Its process, when it runs as one.
    fn pid(&self) -> Option<u32> {
        match &self.life {
            Life::Task { .. } => None,
            Life::Process(daemon) => daemon.pid(),
        }
    }
}

async fn start(
    config: NodeConfig,
    key: SecretKey,
    service: Option<cordon_node::service::ServiceHandle>,
    network: NetworkName,
) -> anyhow::Result<Running> {
    let peer = key.peer_id();
    let (node, handle) = Node::start(config, key, service).await?;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(node.run(async move {
        let _ = stopped.await;
    }));
    Ok(Running {
        peer,
        network,
        handle: Handle::InProcess(handle),
        life: Life::Task { _stop: stop },
    })
}

/// Asks the daemon listening on `socket`. An answer travels as its payload alone: the request
/// says which to expect.
async fn over_socket(socket: &Path, request: Request) -> Result<Response, String> {
    async fn answer<T: serde::de::DeserializeOwned>(
        socket: &Path,
        request: &Request,
        wrap: fn(T) -> Response,
    ) -> Result<Response, String> {
        control::call::<Request, T>(socket, request, ASK_TIMEOUT)
            .await
            .map(wrap)
            .map_err(|e| e.to_string())
    }
    match &request {
        Request::Status {} => answer(socket, &request, |s| Response::Status(Box::new(s))).await,
        Request::Peers { .. } => answer(socket, &request, Response::Peers).await,
        Request::Call { .. } => answer(socket, &request, Response::Called).await,
        Request::Find { .. } => answer(socket, &request, Response::Found).await,
        Request::Pending { .. } => answer(socket, &request, Response::Pending).await,
        Request::Approve { .. } => answer(socket, &request, Response::Approved).await,
        Request::Revoke { .. } => answer(socket, &request, Response::Revoked).await,
        other => Err(format!("the harness does not ask processes {other:?}")),
    }
}

/// Asks a node what its control socket would be asked (in process mode, over that socket);
/// gives up after `ASK_TIMEOUT`.
async fn ask(handle: &Handle, request: Request) -> anyhow::Result<Response> {
    let answer = match handle {
        Handle::InProcess(handle) => {
            tokio::time::timeout(ASK_TIMEOUT, handle.request(request)).await
        }
        Handle::Socket(socket) => {
            tokio::time::timeout(ASK_TIMEOUT, over_socket(socket, request)).await
        }
    };
    match answer {
        Ok(answer) => answer.map_err(anyhow::Error::msg),
        Err(_) => bail!("no answer within {ASK_TIMEOUT:?}"),
    }
}

/// How long one request to a node may take: an approval waits behind every join message the
/// seednode's service has queued.
const ASK_TIMEOUT: Duration = Duration::from_secs(180);

/// Unix milliseconds.
fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `signer`'s head of `network` in `status`: its version and when the node applied it.
fn head_of(status: &Status, network: &NetworkName, signer: &str) -> Option<(u64, Option<u64>)> {
    status
        .networks
        .iter()
        .find(|n| &n.name == network)?
        .revocation_heads
        .iter()
        .find(|h| h.signer == signer)
        .map(|h| (h.version, h.applied_at_ms))
}

/// Head announces and revocation updates the nodes received in all, from their statuses.
fn revocation_traffic(statuses: &[Status]) -> (u64, u64) {
    statuses
        .iter()
        .flat_map(|s| &s.networks)
        .fold((0, 0), |(a, u), n| {
            (
                a + n.revocation_announces_received,
                u + n.revocation_updates_received,
            )
        })
}

fn memory_addr(port: u64) -> Multiaddr {
    Multiaddr::empty().with(Protocol::Memory(port))
}

/// Every node's status (not the seednodes'), in node order.
async fn statuses(h: &Harness) -> anyhow::Result<Vec<Status>> {
    futures::stream::iter(0..h.nodes.len())
        .map(|i| h.status(i))
        .buffered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Memberships verified by all the nodes (not the seednodes) since they started.
async fn verified_total(h: &Harness) -> anyhow::Result<u64> {
    let all = statuses(h).await?;
    Ok(all.iter().map(|s| s.membership_checks.verified).sum())
}

/// How long the nodes took to settle, and the CPU they used over the last window.
struct Settled {
    took: Duration,
    cpu_share: f64,
}

/// Waits until the nodes used at most `percent` of `workers` cores in each of three 5 s
/// windows in a row (one quiet window can be a lull inside the burst), for at most 300 s
/// (`percent` 0: not at all).
async fn settle(h: &Harness, percent: usize, workers: usize) -> Settled {
    const WINDOW: Duration = Duration::from_secs(5);
    const QUIET_WINDOWS: usize = 3;
    let started = Instant::now();
    let mut cpu_share = 0.0;
    let mut quiet = 0;
    if percent == 0 {
        return Settled {
            took: Duration::ZERO,
            cpu_share,
        };
    }
    while started.elapsed() < Duration::from_secs(300) {
        let (cpu, at) = (h.cpu_time(), Instant::now());
        tokio::time::sleep(WINDOW).await;
        cpu_share = h.cpu_time().saturating_sub(cpu).as_secs_f64()
            / at.elapsed().as_secs_f64()
            / workers as f64;
        quiet = if cpu_share * 100.0 <= percent as f64 {
            quiet + 1
        } else {
            0
        };
        if quiet == QUIET_WINDOWS {
            break;
        }
    }
    Settled {
        took: started.elapsed(),
        cpu_share,
    }
}

/// Resident memory of process `pid` (a number, or `self`), in bytes.
fn proc_rss(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU time (user + system) of process `pid` (a number, or `self`) so far.
fn proc_cpu(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat (11 and 12 after the state field).
    let total = ticks(11) + ticks(12);
    // Linux reports them in clock ticks of 100 Hz on every platform we run on.
    Duration::from_millis(total * 10)
}

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Serialize)]
struct Spread {
    count: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Spread {
    fn of(samples: &[Duration]) -> Self {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| -> f64 {
            if ms.is_empty() {
                return 0.0;
            }
            let i = ((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1;
            ms[i]
        };
        Self {
            count: ms.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    /// `in-process` or `processes`.
    mode: &'static str,
    nodes: usize,
    networks: usize,
    workers: usize,
    kad_bucket_size: usize,
    join_to_pending: Spread,
    /// How long each `approve` took to answer, the approvals made one after another.
    approve_command: Spread,
    approve_to_member: Spread,
    all_routed_after_approval_ms: u64,
    /// From then until the process used at most `--settle` percent of the workers' CPU in three
    /// 5 s windows in a row.
    settle_ms: u64,
    /// The share it used over that last window.
    settle_cpu_percent: f64,
    late_join_to_pending: Spread,
    late_approve_to_callable: Spread,
    /// Late joiners not callable by all three members within 120 s of their approval.
    late_misses: usize,
    pairs: usize,
    pairs_ok: usize,
    pair_failures: Vec<String>,
    finds: usize,
    finds_found: usize,
    finds_in_table: usize,
    find_asked_mean: f64,
    table_size_mean: f64,
    leaks: usize,
    revoked: usize,
    /// Each member's delay from a revocation to applying the head carrying it, by its own
    /// clock: one sample per (revocation, member).
    revoke_to_applied: Spread,
    /// Per revocation, until no member's table held the peer (polled: coarser).
    revoke_to_dropped: Spread,
    /// Per node and revocation: CPU of the whole run during the spread, head announces and
    /// updates received.
    revoke_cpu_ms_per_node: f64,
    revoke_announces_per_node: f64,
    revoke_updates_per_node: f64,
    /// Revocations not applied, or peers still routed, 120 s after the revocation.
    revoke_misses: Vec<String>,
    rss_per_node_kib: u64,
    cpu_ms_per_node: u64,
    idle_cpu_ms_per_node_per_min: f64,
    /// Memberships each node verified during the idle window, per minute: one for every
    /// connection a member opened to it or it opened, so it counts the connections made while
    /// nothing was asked of the nodes.
    idle_checks_per_node_per_min: f64,
    /// Live connections per node at the end of the idle window: p50 / max / mean.
    idle_connections: Counts,
    /// Routing-table entries per node at the same moment.
    idle_table: Counts,
    total_secs: u64,
}

/// p50, max and mean of a per-node count.
#[derive(Debug, Serialize)]
struct Counts {
    p50: usize,
    max: usize,
    mean: f64,
}

impl Counts {
    fn of(values: &[usize]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        Self {
            p50: sorted.get(sorted.len() / 2).copied().unwrap_or(0),
            max: sorted.last().copied().unwrap_or(0),
            mean: sorted.iter().sum::<usize>() as f64 / sorted.len().max(1) as f64,
        }
    }
}

/// One network's seednode and keys.
struct Seed {
    running: Running,
}

/// Where the nodes run.
enum Mode {
    /// As tasks of this process, over the memory transport.
    InProcess {
        descriptor: Descriptor,
        next_port: u64,
    },
    /// As `node` and `seednode` processes on loopback TCP, each node with the config file
    /// `config`.
    Processes { net: Net, config: PathBuf },
}

struct Harness {
    dir: PathBuf,
    mode: Mode,
    seeds: BTreeMap<NetworkName, Seed>,
    nodes: Vec<Running>,
    limits: NodeLimits,
}

/// A node config file holding only `[limits]`.
#[derive(Serialize)]
struct LimitsFile<'a> {
    limits: &'a NodeLimits,
}

impl Harness {
    /// Starts one `seednode` process per network in `names` (their keys, delegations and
    /// descriptor made with the `seednode` CLI); they and the nodes run with `limits`, as in
    /// process.
    fn processes(dir: &Path, names: &[NetworkName], limits: NodeLimits) -> anyhow::Result<Self> {
        let config = dir.join("node.toml");
        std::fs::write(&config, toml::to_string(&LimitsFile { limits: &limits })?)?;
        let mut builder = Net::builder(dir);
        for name in names {
            builder = builder.network(name.as_str(), "approval");
        }
        let mut net = builder.build();
        let mut seeds = BTreeMap::new();
        for name in names {
            let daemon = net.start_seednode_with(name.as_str(), &["--config", path_str(&config)]);
            let network = net.network(name.as_str());
            let running = Running {
                peer: network.seed_peer_id.parse()?,
                network: name.clone(),
                handle: Handle::Socket(control::socket_path(&network.seed_data)),
                life: Life::Process(daemon),
            };
            seeds.insert(name.clone(), Seed { running });
        }
        Ok(Self {
            dir: dir.to_owned(),
            mode: Mode::Processes { net, config },
            seeds,
            nodes: Vec::new(),
            limits,
        })
    }

    /// Starts one seednode per network in `names`, on `seed_runtime`.
    async fn new(
        dir: &Path,
        names: &[NetworkName],
        limits: NodeLimits,
        seed_runtime: &tokio::runtime::Handle,
    ) -> anyhow::Result<Self> {
        let now = SystemTime::now();
        let base: u64 = 2_000_000
            + u64::from(
                SecretKey::generate().peer_id().to_bytes()[30..]
                    .iter()
                    .fold(0u32, |a, b| a << 8 | u32::from(*b)),
            ) * 100;
        let mut entries = Vec::new();
        let mut planned = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let anchor = SecretKey::generate();
            let data = dir.join(format!("seed-{name}"));
            let (_, key) = DataDir::init(&data)?;
            let port = base + i as u64;
            let mut entry = NetworkEntry::new(name.clone(), anchor.public());
            entry.bootstrap = vec![memory_addr(port).with(Protocol::P2p(key.peer_id()))];
            entries.push(entry);
            planned.push((name.clone(), anchor, data, key, port));
        }
        let descriptor = Descriptor { networks: entries };
        descriptor.validate()?;
        let verifier = Verifier::new(VerifierConfig::default(), descriptor.access_list()?);
        let mut seeds = BTreeMap::new();
        for (name, anchor, data, key, port) in planned {
            let delegation = issue_delegation(
                &anchor,
                &DelegationRequest {
                    network: name.to_string(),
                    seednode: key.public(),
                    expires_at: now + Duration::from_secs(30 * 86_400),
                    allowed_roles: vec!["member".into()],
                    allowed_rights: Vec::new(),
                    max_lifetime: Duration::from_secs(7 * 86_400),
                },
                now,
            )?;
            let issuer = Issuer::new(&delegation, &verifier, key.clone(), now)?;
            let store = SqliteStore::open(&dir.join(format!("{name}.db")), StoreLimits::default())?;
            let mut config = NodeConfig::new(data, descriptor.clone(), vec![name.clone()]);
            config.transport = Transport::Memory;
            config.listen = vec![memory_addr(port)];
            config.control_socket = false;
            config.label = format!("seed-{name}");
            config.limits = limits.clone();
            let descriptor = descriptor.clone();
            let network = name.clone();
            // Spawned there, so the service task, the swarm and everything they spawn run
            // there.
            let running = seed_runtime
                .spawn(async move {
                    // Its revocation heads are signed with its identity, as `seednode run` does.
                    let service = SeedService::new(
                        store,
                        vec![issuer],
                        &descriptor,
                        ServiceConfig::default(),
                    )?
                    .with_head_signer(key.libp2p_keypair(), BTreeMap::new())?
                    .spawn();
                    start(config, key, Some(service), network).await
                })
                .await??;
            seeds.insert(name, Seed { running });
        }
        Ok(Self {
            dir: dir.to_owned(),
            mode: Mode::InProcess {
                descriptor,
                next_port: base + 100,
            },
            seeds,
            nodes: Vec::new(),
            limits,
        })
    }

    /// Starts node number `self.nodes.len()` in `network`, with no token: it asks to join.
    async fn start_node(&mut self, network: &NetworkName) -> anyhow::Result<usize> {
        let i = self.nodes.len();
        let label = format!("n{i}");
        let running = match &mut self.mode {
            Mode::InProcess {
                descriptor,
                next_port,
            } => {
                let data = self.dir.join(format!("node{i}"));
                let (_, key) = DataDir::init(&data)?;
                let mut config = NodeConfig::new(data, descriptor.clone(), vec![network.clone()]);
                config.transport = Transport::Memory;
                config.listen = vec![memory_addr(*next_port)];
                *next_port += 1;
                config.control_socket = false;
                config.label = label;
                config.limits = self.limits.clone();
                start(config, key, None, network.clone()).await?
            }
            Mode::Processes { net, config } => {
                // `node init`, `node run`, and a wait for its first `node status`.
                let node = tokio::task::block_in_place(|| {
                    net.start_node(&label, &[network.as_str()], &["--config", path_str(config)])
                });
                Running {
                    peer: node.peer_id.parse()?,
                    network: network.clone(),
                    handle: Handle::Socket(control::socket_path(&node.data)),
                    life: Life::Process(node.daemon),
                }
            }
        };
        self.nodes.push(running);
        Ok(i)
    }

    /// Resident memory of the nodes and seednodes, in bytes: of this process, or the sum
    /// over their processes.
    fn rss_bytes(&self) -> u64 {
        match self.mode {
            Mode::InProcess { .. } => proc_rss("self"),
            Mode::Processes { .. } => self.pids().map(|p| proc_rss(&p.to_string())).sum(),
        }
    }

    /// CPU time of the nodes and seednodes so far, the same way.
    fn cpu_time(&self) -> Duration {
        match self.mode {
            Mode::InProcess { .. } => proc_cpu("self"),
            Mode::Processes { .. } => self.pids().map(|p| proc_cpu(&p.to_string())).sum(),
        }
    }

    fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        let seeds = self.seeds.values().map(|s| &s.running);
        seeds.chain(&self.nodes).filter_map(Running::pid)
    }

    fn seed(&self, network: &NetworkName) -> &Handle {
        &self.seeds[network].running.handle
    }

    /// Pending request ids by peer, of every seednode.
    async fn pending(&self) -> anyhow::Result<HashMap<PeerId, u64>> {
        let mut out = HashMap::new();
        for seed in self.seeds.values() {
            match ask(&seed.running.handle, Request::Pending { network: None }).await? {
                Response::Pending(list) => {
                    for r in list {
                        if let Ok(peer) = r.peer.parse::<PeerId>() {
                            out.insert(peer, r.id);
                        }
                    }
                }
                other => bail!("unexpected answer to pending: {other:?}"),
            }
        }
        Ok(out)
    }

    /// Approves request `id`, as `seednode approve` does; a service too busy to take it now
    /// (it says so) is asked again, for up to a minute.
    async fn approve(&self, network: &NetworkName, id: u64) -> anyhow::Result<()> {
        let request = Request::Approve {
            id,
            roles: Vec::new(),
            rights: Vec::new(),
            ttl_secs: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match ask(self.seed(network), request.clone()).await {
                Ok(Response::Approved(_)) => return Ok(()),
                Ok(other) => bail!("unexpected answer to approve: {other:?}"),
                Err(e) if e.to_string().contains("busy") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.context(format!("approving request {id}"))),
            }
        }
    }

    async fn state(&self, i: usize) -> Option<String> {
        match ask(&self.nodes[i].handle, Request::Status {}).await.ok()? {
            Response::Status(s) => s.networks.first().map(|n| n.state.clone()),
            _ => None,
        }
    }

    async fn table(&self, i: usize) -> anyhow::Result<Vec<PeerId>> {
        let node = &self.nodes[i];
        let request = Request::Peers {
            network: Some(node.network.clone()),
        };
        match ask(&node.handle, request).await? {
            Response::Peers(entries) => Ok(entries
                .iter()
                .filter(|e| !e.seednode)
                .filter_map(|e| e.peer.parse().ok())
                .collect()),
            other => bail!("unexpected answer to peers: {other:?}"),
        }
    }

    /// Node `i`'s status, as `node status` shows it (live connections, memberships verified).
    async fn status(&self, i: usize) -> anyhow::Result<Status> {
        match ask(&self.nodes[i].handle, Request::Status {}).await? {
            Response::Status(status) => Ok(*status),
            other => bail!("unexpected answer to status: {other:?}"),
        }
    }

    async fn ping(&self, from: usize, to: PeerId) -> Result<(), String> {
        let node = &self.nodes[from];
        let request = Request::Call {
            peer: to,
            network: Some(node.network.clone()),
            command: CallCommand::Ping,
        };
        match ask(&node.handle, request).await {
            Ok(Response::Called(CallResult::Pong)) => Ok(()),
            Ok(other) => Err(format!("answered {other:?}")),
            Err(e) => Err(format!("{e:#}")),
        }
    }

    fn members_of(&self, network: &NetworkName, except: &BTreeSet<usize>) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| &self.nodes[*i].network == network && !except.contains(i))
            .collect()
    }
}

/// Every node's routing table (members only), asked of 64 nodes at once.
async fn all_tables(h: &Harness) -> anyhow::Result<Vec<Vec<PeerId>>> {
    let mut tables: Vec<(usize, Vec<PeerId>)> = futures::stream::iter(0..h.nodes.len())
        .map(|i| async move { h.table(i).await.map(|t| (i, t)) })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    tables.sort_by_key(|(i, _)| *i);
    Ok(tables.into_iter().map(|(_, t)| t).collect())
}

/// Watches the seednodes' pending requests until aborted: each peer's request id, and when
/// the harness first saw it.
async fn watch_pending(seeds: Vec<Handle>, seen: Arc<Mutex<HashMap<PeerId, (u64, Instant)>>>) {
    loop {
        for seed in &seeds {
            if let Ok(Response::Pending(list)) = ask(seed, Request::Pending { network: None }).await
            {
                let now = Instant::now();
                let mut seen = seen.lock().unwrap();
                for r in list {
                    if let Ok(peer) = r.peer.parse::<PeerId>() {
                        seen.entry(peer).or_insert((r.id, now));
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until each of `who` has a pending request; returns their ids and when each appeared.
async fn wait_pending(
    h: &Harness,
    who: &[(usize, Instant)],
    timeout: Duration,
) -> anyhow::Result<Vec<(usize, u64, Duration)>> {
    let mut out: BTreeMap<usize, (u64, Duration)> = BTreeMap::new();
    let deadline = Instant::now() + timeout;
    while out.len() < who.len() {
        let pending = h.pending().await?;
        for (i, started) in who {
            if out.contains_key(i) {
                continue;
            }
            if let Some(id) = pending.get(&h.nodes[*i].peer) {
                out.insert(*i, (*id, started.elapsed()));
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "only {} of {} join requests pending after {timeout:?}",
                out.len(),
                who.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(out.into_iter().map(|(i, (id, d))| (i, id, d)).collect())
}

async fn run(
    args: Args,
    dir: &Path,
    seed_runtime: tokio::runtime::Handle,
) -> anyhow::Result<Report> {
    let run_started = Instant::now();
    let names: Vec<NetworkName> = ["mainnet", "testnet", "labnet", "devnet", "net5", "net6"]
        .iter()
        .chain(&["net7", "net8"])
        .take(args.networks)
        .map(|n| n.parse().unwrap())
        .collect();
    let mut limits = match &args.config {
        Some(path) => NodeFile::load(path).map_err(|e| anyhow!("{e}"))?.limits,
        None => NodeLimits::default(),
    };
    if let Some(k) = args.bucket_size {
        limits.kad_bucket_size = k;
    }
    limits.validate().map_err(|e| anyhow!("{e}"))?;
    // In process mode the figures are the processes' own: nothing to subtract.
    let (rss_before, cpu_before, mut h) = if args.processes {
        let h = tokio::task::block_in_place(|| Harness::processes(dir, &names, limits))?;
        (0, Duration::ZERO, h)
    } else {
        let before = (proc_rss("self"), proc_cpu("self"));
        let h = Harness::new(dir, &names, limits, &seed_runtime).await?;
        (before.0, before.1, h)
    };
    let mut sample = Sample(args.seed);

    // 1. Join: every node asks its network's seednode. The seednodes' pending requests are
    // watched while the nodes start (a process takes a while to start), so a node's join ->
    // pending does not include the starts after it.
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let seeds = h.seeds.values().map(|s| s.running.handle.clone()).collect();
    let watcher = tokio::spawn(watch_pending(seeds, seen.clone()));
    let mut started = Vec::new();
    for i in 0..args.nodes {
        let network = names[i % names.len()].clone();
        let t = Instant::now();
        let i = h.start_node(&network).await?;
        started.push((i, t));
    }
    eprintln!(
        "{} nodes started after {:?}",
        args.nodes,
        run_started.elapsed()
    );
    let pending = wait_for(
        "every join request to be pending",
        Duration::from_secs(300),
        || {
            let seen = seen.clone();
            let (nodes, started) = (&h.nodes, &started);
            async move {
                let seen = seen.lock().unwrap();
                started
                    .iter()
                    .map(|&(i, t)| {
                        let (id, at) = seen.get(&nodes[i].peer)?;
                        Some((i, *id, at.saturating_duration_since(t)))
                    })
                    .collect::<Option<Vec<_>>>()
            }
        },
    )
    .await?;
    watcher.abort();
    let join_to_pending = Spread::of(&pending.iter().map(|p| p.2).collect::<Vec<_>>());
    eprintln!(
        "every join request pending after {:?}",
        run_started.elapsed()
    );

    // 2. Approve them all, one after another as an operator would; approve -> member is
    // watched while the approvals go on, so a node approved early is not timed by the
    // approvals after it.
    let approved_at: std::cell::RefCell<Vec<(usize, Instant)>> = Default::default();
    let approving = std::cell::Cell::new(true);
    let approvals = async {
        let mut took = Vec::new();
        for (i, id, _) in &pending {
            let network = h.nodes[*i].network.clone();
            let asked = Instant::now();
            let done = h.approve(&network, *id).await;
            approved_at.borrow_mut().push((*i, Instant::now()));
            took.push(asked.elapsed());
            if let Err(e) = done {
                approving.set(false);
                return Err(e);
            }
        }
        approving.set(false);
        Ok((took, Instant::now()))
    };
    let watch = async {
        let mut to_member = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let waiting: Vec<(usize, Instant)> = std::mem::take(&mut *approved_at.borrow_mut());
            let still_approving = approving.get();
            if waiting.is_empty() && !still_approving {
                return Ok(to_member);
            }
            let hr = &h;
            let states: Vec<((usize, Instant), bool)> =
                futures::stream::iter(waiting)
                    .map(|(i, at)| async move {
                        ((i, at), hr.state(i).await.as_deref() == Some("member"))
                    })
                    .buffer_unordered(64)
                    .collect()
                    .await;
            let checked = Instant::now();
            for ((i, at), member) in states {
                if member {
                    to_member.push(checked.saturating_duration_since(at));
                } else {
                    approved_at.borrow_mut().push((i, at));
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} nodes still not members after 300 s",
                    approved_at.borrow().len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (approved, to_member) = futures::future::join(approvals, watch).await;
    let ((approve_took, approval_done), to_member): ((Vec<Duration>, Instant), Vec<Duration>) =
        (approved?, to_member?);
    let approve_to_member = Spread::of(&to_member);
    eprintln!("every node a member after {:?}", run_started.elapsed());
    let hr = &h;
    wait_for(
        "every member to route another member",
        Duration::from_secs(300),
        || async move {
            let tables = all_tables(hr).await.ok()?;
            tables.iter().all(|t| !t.is_empty()).then_some(())
        },
    )
    .await?;
    let all_routed_after_approval_ms = approval_done.elapsed().as_millis() as u64;
    eprintln!(
        "every member routes another after {:?}",
        run_started.elapsed()
    );

    // The burst of a thousand new members settles (announcements, discovery at its base
    // interval, connections made and closed) before the late joiners: they measure joining an
    // established network, the burst was measured above.
    // Processes share every core; in-process nodes only the worker pool.
    let cores = match args.processes {
        true => std::thread::available_parallelism().map_or(2, usize::from),
        false => args.workers,
    };
    let settle = settle(&h, args.settle, cores).await;
    eprintln!(
        "settled after {:?} ({:.0}% of the workers' CPU in the last 5 s)",
        settle.took,
        settle.cpu_share * 100.0
    );

    // 3. Late joiners, one at a time.
    let mut late_pending = Vec::new();
    let mut late_callable = Vec::new();
    let mut late_misses = 0;
    for k in 0..args.late {
        let network = names[k % names.len()].clone();
        let t = Instant::now();
        let i = h.start_node(&network).await?;
        let p = wait_pending(&h, &[(i, t)], Duration::from_secs(60)).await?;
        late_pending.push(p[0].2);
        let approved = Instant::now();
        if args.verbose {
            eprintln!(
                "late joiner {k} ({}) approved at {:?}",
                h.nodes[i].peer,
                std::time::SystemTime::now()
            );
        }
        h.approve(&network, p[0].1).await?;
        let others = h.members_of(&network, &BTreeSet::from([i]));
        // Each of three random members calls it, at the same time, until it answers (a call
        // that cannot reach it fails, at the latest after the 20 s call timeout, and is made
        // again); callable once all three got `pong`.
        let mut callers: Vec<usize> = (0..3).map(|_| others[sample.below(others.len())]).collect();
        let target = h.nodes[i].peer;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !callers.is_empty() && Instant::now() < deadline {
            let mut still = Vec::new();
            let asked = Instant::now();
            let hr = &h;
            let answers = futures::future::join_all(callers.iter().map(|&c| async move {
                let answer = hr.ping(c, target).await;
                (answer, asked.elapsed())
            }))
            .await;
            for (c, (answer, took)) in callers.into_iter().zip(answers) {
                if let Err(e) = answer {
                    if args.verbose {
                        let tables = all_tables(&h).await?;
                        let routing = tables.iter().filter(|t| t.contains(&target)).count();
                        let own = tables[i].len();
                        eprintln!(
                            "late joiner {k}: call from {c} failed after {took:?} ({:?} since approval): {e}; {routing} tables route it, its own holds {own}",
                            approved.elapsed()
                        );
                    }
                    still.push(c);
                } else if args.verbose {
                    eprintln!("late joiner {k}: call from {c} answered after {took:?}",);
                }
            }
            callers = still;
            if !callers.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if !callers.is_empty() {
            late_misses += 1;
            continue;
        }
        late_callable.push(approved.elapsed());
    }
    eprintln!(
        "{} late joiners callable after {:?}",
        args.late,
        run_started.elapsed()
    );

    // Idle CPU: `--idle` seconds with nothing asked of the nodes.
    eprintln!("idle for {} s", args.idle);
    let idle_checks_before = verified_total(&h).await?;
    let idle_cpu_before = h.cpu_time();
    let idle_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.idle as u64)).await;
    let idle_cpu = h.cpu_time().saturating_sub(idle_cpu_before);
    let idle_checks = verified_total(&h).await?.saturating_sub(idle_checks_before);
    let idle_secs = idle_started.elapsed().as_secs_f64();
    // What the idle window cost per node comes with the connections each node keeps.
    let connections: Vec<usize> = statuses(&h).await?.iter().map(|s| s.connections).collect();
    let idle_tables: Vec<usize> = all_tables(&h).await?.iter().map(Vec::len).collect();

    // 4. Random pairs call ping; lookups.
    let mut pairs = Vec::new();
    while pairs.len() < args.pairs {
        let network = &names[sample.below(names.len())];
        let m = h.members_of(network, &BTreeSet::new());
        let (a, b) = (m[sample.below(m.len())], m[sample.below(m.len())]);
        if a != b {
            pairs.push((a, b));
        }
    }
    let mut pair_failures = Vec::new();
    let mut calls = FuturesUnordered::new();
    let mut queue = pairs.iter();
    let hr = &h;
    loop {
        while calls.len() < 32 {
            let Some(&(a, b)) = queue.next() else { break };
            calls.push(async move { (a, b, hr.ping(a, hr.nodes[b].peer).await) });
        }
        match calls.next().await {
            Some((a, b, Err(e))) => pair_failures.push(format!("n{a} -> n{b}: {e}")),
            Some(_) => {}
            None => break,
        }
    }
    let pairs_ok = pairs.len() - pair_failures.len();
    eprintln!(
        "{pairs_ok} of {} pairs answered after {:?}",
        pairs.len(),
        run_started.elapsed()
    );
    let mut finds_found = 0;
    let mut finds_in_table = 0;
    let mut asked = 0u64;
    let mut leaks = 0;
    // Every peer of the run and its network: members and seednodes (a table may hold its own
    // network's seednode; the leak checks look for anyone else's).
    // Every peer of the run and its network, seednodes included (a table may hold its own
    // network's seednode; the leak checks look for anyone else's).
    let all_members: HashMap<PeerId, NetworkName> = h
        .nodes
        .iter()
        .chain(h.seeds.values().map(|s| &s.running))
        .map(|n| (n.peer, n.network.clone()))
        .collect();
    let mut finds_made = 0;
    while finds_made < args.finds {
        let network = &names[sample.below(names.len())];
        let m = h.members_of(network, &BTreeSet::new());
        let (a, b) = (m[sample.below(m.len())], m[sample.below(m.len())]);
        if a == b {
            // A node's own id is never in its lookup's answer.
            continue;
        }
        finds_made += 1;
        let request = Request::Find {
            network: Some(network.clone()),
            peer: h.nodes[b].peer,
        };
        match ask(&h.nodes[a].handle, request).await? {
            Response::Found(f) => {
                finds_found += usize::from(f.found);
                finds_in_table += usize::from(f.in_table);
                asked += u64::from(f.asked);
                for p in &f.closest {
                    let peer: PeerId = p.parse().context("closest peer id")?;
                    if all_members.get(&peer).is_some_and(|n| n != network) {
                        leaks += 1;
                    }
                }
            }
            other => bail!("unexpected answer to find: {other:?}"),
        }
    }

    // 5. Leaks: every table holds members of its own network only.
    let tables = all_tables(&h).await?;
    let table_sizes: Vec<usize> = tables.iter().map(Vec::len).collect();
    for (i, table) in tables.iter().enumerate() {
        leaks += table
            .iter()
            .filter(|p| all_members.get(p) != Some(&h.nodes[i].network))
            .count();
    }

    // Memory and CPU, with everything settled.
    let rss_per_node_kib = h.rss_bytes().saturating_sub(rss_before) / 1024 / h.nodes.len() as u64;

    // 6. Revoke members one at a time, as an operator does. For each: when every other member
    // of its network applied the seednode's new head (by the members' own clocks, from
    // `status`: applying it is what takes the peer out of their tables), and when no member
    // routes it any more (polled, so coarser); and the work the spread cost.
    let mut revoked = BTreeSet::new();
    while revoked.len() < args.revoke {
        revoked.insert(sample.below(args.nodes));
    }
    let mut applied_delays = Vec::new();
    let mut revoke_times = Vec::new();
    let mut revoke_misses = Vec::new();
    let (mut revoke_cpu, mut revoke_announces, mut revoke_updates) = (Duration::ZERO, 0, 0);
    for &r in &revoked {
        let node = &h.nodes[r];
        let members: Vec<usize> = (0..h.nodes.len())
            .filter(|i| !revoked.contains(i) && h.nodes[*i].network == node.network)
            .collect();
        let before = revocation_traffic(&statuses(&h).await?);
        let cpu = h.cpu_time();
        let (at, started) = (unix_ms(SystemTime::now()), Instant::now());
        let request = Request::Revoke {
            peer: Some(node.peer),
            network: Some(node.network.clone()),
            token_id: None,
            reason: Some("scale harness".into()),
        };
        match ask(h.seed(&node.network), request).await? {
            Response::Revoked(_) => {}
            other => bail!("unexpected answer to revoke: {other:?}"),
        }
        let seed = &h.seeds[&node.network].running;
        let signer = seed.peer.to_string();
        let version = match ask(&seed.handle, Request::Status {}).await? {
            Response::Status(s) => head_of(&s, &node.network, &signer).map(|(v, _)| v),
            _ => None,
        }
        .ok_or_else(|| anyhow!("the seednode of {} holds no head of its own", node.network))?;
        let deadline = started + Duration::from_secs(120);
        let (mut applied, mut dropped) = (None, None);
        while applied.is_none() || dropped.is_none() {
            if applied.is_none() {
                let all = statuses(&h).await?;
                let times: Option<Vec<u64>> = members
                    .iter()
                    .map(|&i| {
                        head_of(&all[i], &node.network, &signer)
                            .filter(|(v, _)| *v >= version)
                            .and_then(|(_, at)| at)
                    })
                    .collect();
                applied = times;
            }
            if dropped.is_none() {
                let tables = all_tables(&h).await?;
                if members.iter().all(|&i| !tables[i].contains(&node.peer)) {
                    dropped = Some(started.elapsed());
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            // The members' own clocks time the spread; polling less often costs less of the
            // CPU the spread is measured on.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        revoke_cpu += h.cpu_time().saturating_sub(cpu);
        let after = revocation_traffic(&statuses(&h).await?);
        revoke_announces += after.0 - before.0;
        revoke_updates += after.1 - before.1;
        match applied {
            Some(times) => applied_delays.extend(
                times
                    .iter()
                    .map(|t| Duration::from_millis(t.saturating_sub(at))),
            ),
            None => revoke_misses.push(format!(
                "n{r}'s revocation (head version {version}) not applied by every member in 120 s"
            )),
        }
        match dropped {
            Some(d) => revoke_times.push(d),
            None => revoke_misses.push(format!("n{r} still routed 120 s after its revocation")),
        }
    }
    eprintln!("revoked members dropped after {:?}", run_started.elapsed());
    let per_node_revocation = (h.nodes.len() * revoked.len()).max(1) as f64;

    let n = h.nodes.len() + h.seeds.len();
    Ok(Report {
        mode: match h.mode {
            Mode::InProcess { .. } => "in-process",
            Mode::Processes { .. } => "processes",
        },
        nodes: h.nodes.len(),
        networks: names.len(),
        workers: args.workers,
        kad_bucket_size: h.limits.kad_bucket_size,
        join_to_pending,
        approve_command: Spread::of(&approve_took),
        approve_to_member,
        all_routed_after_approval_ms,
        settle_ms: settle.took.as_millis() as u64,
        settle_cpu_percent: settle.cpu_share * 100.0,
        late_join_to_pending: Spread::of(&late_pending),
        late_approve_to_callable: Spread::of(&late_callable),
        late_misses,
        pairs: pairs.len(),
        pairs_ok,
        pair_failures: pair_failures.into_iter().take(20).collect(),
        finds: args.finds,
        finds_found,
        finds_in_table,
        find_asked_mean: asked as f64 / args.finds.max(1) as f64,
        table_size_mean: table_sizes.iter().sum::<usize>() as f64 / table_sizes.len() as f64,
        leaks,
        revoked: revoked.len(),
        revoke_to_applied: Spread::of(&applied_delays),
        revoke_to_dropped: Spread::of(&revoke_times),
        revoke_cpu_ms_per_node: revoke_cpu.as_secs_f64() * 1e3 / per_node_revocation,
        revoke_announces_per_node: revoke_announces as f64 / per_node_revocation,
        revoke_updates_per_node: revoke_updates as f64 / per_node_revocation,
        revoke_misses,
        rss_per_node_kib,
        cpu_ms_per_node: (h.cpu_time().saturating_sub(cpu_before).as_millis() / n as u128) as u64,
        idle_cpu_ms_per_node_per_min: idle_cpu.as_secs_f64() * 1e3 / n as f64 * 60.0 / idle_secs,
        idle_checks_per_node_per_min: idle_checks as f64 / h.nodes.len() as f64 * 60.0 / idle_secs,
        idle_connections: Counts::of(&connections),
        idle_table: Counts::of(&idle_tables),
        total_secs: run_started.elapsed().as_secs(),
    })
}

fn print_table(r: &Report) {
    let spread = |s: &Spread| format!("{:.0} / {:.0} / {:.0}", s.p50_ms, s.p99_ms, s.max_ms);
    println!(
        "nodes {} in {} networks ({}), {} workers, kad bucket size {}",
        r.nodes, r.networks, r.mode, r.workers, r.kad_bucket_size
    );
    println!("{:<44} value", "measure");
    println!(
        "{:<44} {}",
        "join -> pending, ms p50 / p99 / max",
        spread(&r.join_to_pending)
    );
    println!(
        "{:<44} {}",
        "approve -> member, ms p50 / p99 / max",
        spread(&r.approve_to_member)
    );
    println!(
        "{:<44} {}",
        "approve command, ms p50 / p99 / max",
        spread(&r.approve_command)
    );
    println!(
        "{:<44} {}",
        "all approved -> every member routes, ms", r.all_routed_after_approval_ms
    );
    println!(
        "{:<44} {} ({:.0}% CPU)",
        "then settled (late joiners start), ms", r.settle_ms, r.settle_cpu_percent
    );
    println!(
        "{:<44} {}",
        "late joiner: join -> pending, ms",
        spread(&r.late_join_to_pending)
    );
    println!(
        "{:<44} {}",
        "late joiner: approve -> callable by 3, ms",
        spread(&r.late_approve_to_callable)
    );
    println!(
        "{:<44} {} of {}",
        "random pairs answering ping", r.pairs_ok, r.pairs
    );
    println!(
        "{:<44} {} of {} ({} in the caller's table)",
        "lookups finding their peer", r.finds_found, r.finds, r.finds_in_table
    );
    println!(
        "{:<44} {:.1}",
        "members asked per lookup, mean", r.find_asked_mean
    );
    println!(
        "{:<44} {:.1}",
        "routing table size, mean", r.table_size_mean
    );
    println!("{:<44} {}", "cross-network leaks", r.leaks);
    println!(
        "{:<44} {}",
        "revoke -> applied by a member, ms",
        spread(&r.revoke_to_applied)
    );
    println!(
        "{:<44} {} (within 120 s: {} of {})",
        "revoke -> routed by none (polled), ms",
        spread(&r.revoke_to_dropped),
        r.revoke_to_dropped.count,
        r.revoked
    );
    println!(
        "{:<44} {:.1} / {:.1} / {:.2}",
        "per revocation and node: CPU ms / announces / updates",
        r.revoke_cpu_ms_per_node,
        r.revoke_announces_per_node,
        r.revoke_updates_per_node
    );
    for miss in &r.revoke_misses {
        println!("  {miss}");
    }
    println!(
        "{:<44} {}",
        "resident memory per node, KiB", r.rss_per_node_kib
    );
    println!(
        "{:<44} {}",
        "CPU per node over the run, ms", r.cpu_ms_per_node
    );
    println!(
        "{:<44} {:.1}",
        "idle CPU per node, ms per minute", r.idle_cpu_ms_per_node_per_min
    );
    println!(
        "{:<44} {:.1}",
        "idle memberships verified per node per min", r.idle_checks_per_node_per_min
    );
    let counts = |c: &Counts| format!("{} / {} / {:.1}", c.p50, c.max, c.mean);
    println!(
        "{:<44} {}",
        "after idle: connections per node p50/max/mean",
        counts(&r.idle_connections)
    );
    println!(
        "{:<44} {}",
        "after idle: table entries p50/max/mean",
        counts(&r.idle_table)
    );
    println!("{:<44} {}", "run time, s", r.total_secs);
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    // Warnings only unless RUST_LOG says otherwise: a thousand nodes log a lot.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,yamux=error,libp2p_kad=error")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build()?;
    // The seednodes' own: see the module documentation.
    let seed_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("seednodes")
        .enable_all()
        .build()?;
    // The nodes write into it until the runtime stops: it goes last.
    let dir = tempfile::tempdir()?;
    let report = runtime.block_on(run(args.clone(), dir.path(), seed_runtime.handle().clone()));
    // The nodes run as tasks of the runtimes: stop them without waiting for each.
    runtime.shutdown_timeout(Duration::from_secs(5));
    seed_runtime.shutdown_timeout(Duration::from_secs(5));
    drop(dir);
    let report = report?;
    print_table(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    let ok = report.pairs_ok == report.pairs && report.leaks == 0;
    if !ok {
        bail!(
            "{} pairs failed, {} leaks",
            report.pairs - report.pairs_ok,
            report.leaks
        );
    }
    Ok(())
}
