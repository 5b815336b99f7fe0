//! The in-process tier: many real nodes in one process, over libp2p's memory transport.
//!
//! Each node is the product's own [`Node`] (the same swarm, session behaviour, gates, Kademlia,
//! event loop and data directory as `node run`), with the in-memory transport in place of TCP
//! (Noise and Yamux included) and no control socket: tests talk to it through its
//! [`NodeHandle`], which takes the same requests. Tokens are issued by the harness with each
//! network's real seednode key and delegation and stored in the node's data directory, so nodes
//! start as members without a join round trip; the first nodes of each network are every
//! node's bootstrap peers.
//!
//! Helpers: [`Cluster::start`] builds and starts a cluster from a [`ClusterSpec`];
//! [`Cluster::request`], [`Cluster::call`], [`Cluster::status`], [`Cluster::peers`] and
//! [`Cluster::find`] ask a node (typed, like the control socket);
//! [`wait_for`] polls an async predicate with a timeout.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use cordon_host::clock::{Clock, ClockControl};
use cordon_host::datadir::{AddressEntry, DataDir};
use cordon_host::descriptor::{Descriptor, NetworkEntry};
use cordon_membership::{
    AccessList, DelegationRequest, Issuer, NetworkTrust, PeerId, SecretKey, Verifier,
    VerifierConfig, issue_delegation,
};
use cordon_node::api::{CallCommand, CallResult, Request, Response, Status};
use cordon_node::config::Transport;
use cordon_node::{Node, NodeConfig, NodeHandle, NodeLimits};
use cordon_protocol::NetworkName;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Token lifetime issued by the harness.
const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Networks: name and `strict`.
    pub networks: Vec<(String, bool)>,
    /// The networks of each node, in start order.
    pub nodes: Vec<Vec<String>>,
    /// How many of each network's first nodes are everyone's bootstrap peers.
    pub bootstrap_per_network: usize,
    /// Limits of every node.
    pub limits: NodeLimits,
}

impl ClusterSpec {
    /// `counts` nodes per network (each in that network only), plus `both` nodes in the first
    /// two networks.
    pub fn segregated(networks: &[(&str, usize)], both: usize) -> Self {
        let mut nodes = Vec::new();
        for (name, count) in networks {
            nodes.extend((0..*count).map(|_| vec![(*name).to_owned()]));
        }
        if let [(a, _), (b, _), ..] = networks {
            nodes.extend((0..both).map(|_| vec![(*a).to_owned(), (*b).to_owned()]));
        }
        Self {
            networks: networks
                .iter()
                .map(|(n, _)| ((*n).to_owned(), false))
                .collect(),
            nodes,
            bootstrap_per_network: 3,
            limits: NodeLimits::default(),
        }
    }
}

/// One network's root of trust, as the harness holds it.
struct NetKeys {
    anchor: SecretKey,
    issuer: Issuer,
}

/// A running in-process node.
#[derive(Debug)]
pub struct InNode {
    /// Its PeerId.
    pub peer: PeerId,
    /// Its networks.
    pub networks: Vec<NetworkName>,
    /// Its listen address (memory transport, with `/p2p/<peer>`).
    pub addr: Multiaddr,
    /// Its data directory.
    pub data: PathBuf,
    handle: NodeHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// A cluster of in-process nodes.
pub struct Cluster {
    _dir: tempfile::TempDir,
    /// The nodes, in start order.
    pub nodes: Vec<InNode>,
    /// Moves every node's clock forward.
    pub clock: ClockControl,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

/// A deterministic sequence (xorshift64*) for sampling, so a run can be replayed from its seed.
#[derive(Debug, Clone)]
pub struct Sample(pub u64);

impl Sample {
    /// The next number below `n` (which must not be 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn net(name: &str) -> anyhow::Result<NetworkName> {
    name.parse()
        .map_err(|e| anyhow!("bad network name {name}: {e}"))
}

impl Cluster {
    /// Creates keys, tokens, data directories and the shared descriptor, then starts every node
    /// of `spec`. Must run inside a multi-threaded tokio runtime.
    pub async fn start(spec: ClusterSpec) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let now = SystemTime::now();
        let (clock, control) = Clock::with_offset();
        // Memory-transport ports are process-wide: start from a random base.
        let base: u64 = 1_000_000 + u64::from(rand_u32());

        // Roots of trust.
        let mut keys = BTreeMap::new();
        let mut trust = Vec::new();
        for (name, strict) in &spec.networks {
            let anchor = SecretKey::generate();
            trust.push(NetworkTrust {
                name: name.clone(),
                anchors: vec![anchor.public()],
                strict: *strict,
            });
            keys.insert(name.clone(), anchor);
        }
        let verifier = Verifier::new(VerifierConfig::default(), AccessList::new(trust)?);
        let mut nets: BTreeMap<String, NetKeys> = BTreeMap::new();
        for (name, anchor) in keys {
            let seednode = SecretKey::generate();
            let delegation = issue_delegation(
                &anchor,
                &DelegationRequest {
                    network: name.clone(),
                    seednode: seednode.public(),
                    expires_at: now + 30 * TOKEN_LIFETIME,
                    allowed_roles: vec!["member".into(), "operator".into()],
                    allowed_rights: Vec::new(),
                    max_lifetime: 7 * TOKEN_LIFETIME,
                },
                now,
            )?;
            let issuer = Issuer::new(&delegation, &verifier, seednode, now)?;
            nets.insert(name, NetKeys { anchor, issuer });
        }

        // Identities and addresses, so the descriptor can name the bootstrap peers.
        let mut planned = Vec::new();
        for (i, networks) in spec.nodes.iter().enumerate() {
            let data = dir.path().join(format!("node{i}"));
            let (_, key) = DataDir::init(&data)?;
            let port = base + i as u64;
            let addr = Multiaddr::empty()
                .with(Protocol::Memory(port))
                .with(Protocol::P2p(key.peer_id()));
            planned.push((data, key, addr, networks.clone()));
        }
        let mut entries = Vec::new();
        for (name, strict) in &spec.networks {
            let mut entry = NetworkEntry::new(net(name)?, nets[name].anchor.public());
            entry.strict = *strict;
            entry.bootstrap = planned
                .iter()
                .filter(|(_, _, _, n)| n.contains(name))
                .take(spec.bootstrap_per_network)
                .map(|(_, _, addr, _)| addr.clone())
                .collect();
            entries.push(entry);
        }
        let descriptor = Descriptor { networks: entries };
        descriptor.validate()?;

        let mut nodes = Vec::new();
        for (i, (data, key, addr, networks)) in planned.into_iter().enumerate() {
            let names = networks
                .iter()
                .map(|n| net(n))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let dir = DataDir::open(&data)?.0;
            for n in &names {
                let token = nets[n.as_str()].issuer.issue(
                    &key.peer_id(),
                    &["member".to_owned()],
                    TOKEN_LIFETIME,
                    now,
                )?;
                dir.save_token(n, &token.bytes)?;
            }
            let mut config = NodeConfig::new(data.clone(), descriptor.clone(), names.clone());
            config.transport = Transport::Memory;
            config.listen = vec![
                addr.iter()
                    .filter(|p| !matches!(p, Protocol::P2p(_)))
                    .collect(),
            ];
            config.control_socket = false;
            config.clock = clock.clone();
            config.limits = spec.limits.clone();
            config.label = format!("n{i}");
            let peer = key.peer_id();
            let (node, handle) = Node::start(config, key, None)
                .await
                .with_context(|| format!("starting node {i}"))?;
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(node.run(async move {
                let _ = stopped.await;
            }));
            nodes.push(InNode {
                peer,
                networks: names,
                addr,
                data,
                handle,
                stop: Some(stop),
                task: Some(task),
            });
        }
        Ok(Self {
            _dir: dir,
            nodes,
            clock: control,
        })
    }

    /// Sends a control request to node `i`.
    pub async fn request(&self, i: usize, request: Request) -> anyhow::Result<Response> {
        self.nodes[i]
            .handle
            .request(request)
            .await
            .map_err(|e| anyhow!("node {i}: {e}"))
    }

    /// `node call` from node `i` to `peer` (in `network`, or the one it shares with `peer`).
    pub async fn call(
        &self,
        i: usize,
        peer: &PeerId,
        network: Option<&str>,
        command: CallCommand,
    ) -> anyhow::Result<CallResult> {
        let network = network.map(net).transpose()?;
        match self
            .request(
                i,
                Request::Call {
                    peer: *peer,
                    network,
                    command,
                },
            )
            .await?
        {
            Response::Called(result) => Ok(result),
            other => bail!("node {i}: unexpected answer to call: {other:?}"),
        }
    }

    /// Node `i`'s status.
    pub async fn status(&self, i: usize) -> anyhow::Result<Status> {
        match self.request(i, Request::Status {}).await? {
            Response::Status(status) => Ok(*status),
            other => bail!("node {i}: unexpected answer to status: {other:?}"),
        }
    }

    /// The peers in node `i`'s routing table of `network`.
    pub async fn peers(&self, i: usize, network: &str) -> anyhow::Result<Vec<PeerId>> {
        let request = Request::Peers {
            network: Some(net(network)?),
        };
        match self.request(i, request).await? {
            Response::Peers(entries) => entries
                .iter()
                .map(|p| {
                    p.peer
                        .parse::<PeerId>()
                        .map_err(|e| anyhow!("bad peer id: {e}"))
                })
                .collect(),
            other => bail!("node {i}: unexpected answer to peers: {other:?}"),
        }
    }

    /// The members a Kademlia lookup of `network` from node `i` for `key` reached, closest
    /// first.
    pub async fn find(&self, i: usize, network: &str, key: &PeerId) -> anyhow::Result<Vec<PeerId>> {
        let request = Request::Find {
            network: Some(net(network)?),
            peer: *key,
        };
        match self.request(i, request).await? {
            Response::Found(found) => found
                .closest
                .iter()
                .map(|p| p.parse::<PeerId>().map_err(|e| anyhow!("bad peer id: {e}")))
                .collect(),
            other => bail!("node {i}: unexpected answer to find: {other:?}"),
        }
    }

    /// Stops every node (each persists its address book on the way out).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        for node in &mut self.nodes {
            if let Some(stop) = node.stop.take() {
                let _ = stop.send(());
            }
        }
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if let Some(task) = node.task.take() {
                tokio::time::timeout(Duration::from_secs(30), task)
                    .await
                    .with_context(|| format!("node {i} did not stop"))???;
            }
        }
        Ok(())
    }

    /// Node `i`'s persisted address book (after [`Cluster::stop`]).
    pub fn address_book(&self, i: usize) -> anyhow::Result<Vec<AddressEntry>> {
        Ok(DataDir::open(&self.nodes[i].data)?.0.load_address_book()?)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(stop) = node.stop.take() {
                let _ = stop.send(());
            }
            if let Some(task) = node.task.take() {
                task.abort();
            }
        }
    }
}

/// A random 32-bit number without another dependency: the hash of a fresh random key's id.
fn rand_u32() -> u32 {
    let id = SecretKey::generate().peer_id().to_bytes();
    let n = id.len();
    u32::from_le_bytes([id[n - 4], id[n - 3], id[n - 2], id[n - 1]])
}
