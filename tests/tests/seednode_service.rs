//! A slow store does not stall the seednode: its join service runs as a task of its own, so
//! while the service waits on its database the node's event loop keeps answering.
//!
//! A real seednode (the product's node with the product's join service over SQLite) and a real
//! node that asks to join run in-process over the memory transport. The seednode's store is
//! wrapped so that every operation waits at a gate the test holds shut. Once the service is
//! stuck inside the store on the joiner's connection and join request, the seednode must still
//! answer `status` (with its service part, the last status the service published). Then the
//! gate opens and the join request shows up in `pending`.
//!
//! Why this fails if the store work ran on the node's event loop: the event loop is what
//! answers `NodeHandle::request(Status)`. Were the service's store calls awaited (or, with a
//! blocking store, executed) inside the event loop while it handles the connection or the join
//! message, the loop would sit at the closed gate, no control request would be read, and the
//! status request would time out after 10 s instead of being answered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use cordon_host::datadir::DataDir;
use cordon_host::descriptor::{Descriptor, NetworkEntry};
use cordon_membership::{
    DelegationRequest, Issuer, PeerId, SecretKey, Verifier, VerifierConfig, issue_delegation,
};
use cordon_node::api::{Request, Response};
use cordon_node::config::Transport;
use cordon_node::{Node, NodeConfig, NodeHandle};
use cordon_protocol::NetworkName;
use cordon_seednode::service::{SeedService, ServiceConfig};
use cordon_seednode::store::{
    Counts, InviteRow, IssuedTokenId, IssuedTokenRow, JoinRequestRow, NewToken, RequestId,
    RevocationSnapshot, SqliteStore, Store, StoreError, StoreLimits, Submitted,
};
use cordon_tests::inprocess::wait_for;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Every wait in this test is bounded by this (a liveness bound, not a timing assertion).
const PATIENCE: Duration = Duration::from_secs(10);

/// A gate the test opens and shuts; store operations wait at it while it is shut, unless the
/// test lets one through.
#[derive(Debug)]
struct Gate {
    state: watch::Sender<GateState>,
    /// Operations waiting at the gate right now.
    waiting: Mutex<Vec<&'static str>>,
    /// Every operation that had to wait, in order.
    waited: Mutex<Vec<&'static str>>,
}

#[derive(Debug, Clone, Copy)]
struct GateState {
    open: bool,
    /// Operations that may still pass while the gate is shut.
    passes: usize,
}

impl Gate {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            state: watch::channel(GateState {
                open: true,
                passes: 0,
            })
            .0,
            waiting: Mutex::new(Vec::new()),
            waited: Mutex::new(Vec::new()),
        })
    }

    fn set_open(&self, open: bool) {
        self.state.send_modify(|s| s.open = open);
    }

    fn let_one_through(&self) {
        self.state.send_modify(|s| s.passes += 1);
    }

    /// The operations waiting at the gate now.
    fn waiting(&self) -> Vec<&'static str> {
        self.waiting.lock().unwrap().clone()
    }

    fn waited(&self) -> Vec<&'static str> {
        self.waited.lock().unwrap().clone()
    }

    /// Returns once the gate is open or lets this operation through; an asynchronous wait,
    /// as a slow network database's would be.
    async fn pass(&self, operation: &'static str) {
        let mut state = self.state.subscribe();
        let open = state.borrow_and_update().open;
        if open {
            return;
        }
        self.waited.lock().unwrap().push(operation);
        self.waiting.lock().unwrap().push(operation);
        loop {
            let _ = state.wait_for(|s| s.open || s.passes > 0).await;
            let mut through = false;
            self.state.send_if_modified(|s| {
                if s.open {
                    through = true;
                    false
                } else if s.passes > 0 {
                    s.passes -= 1;
                    through = true;
                    true
                } else {
                    false
                }
            });
            if through {
                break;
            }
        }
        let mut waiting = self.waiting.lock().unwrap();
        if let Some(i) = waiting.iter().position(|op| *op == operation) {
            waiting.remove(i);
        }
    }
}

/// A store whose every operation first waits at the test's [`Gate`].
#[derive(Debug)]
struct Gated<S> {
    inner: S,
    gate: Arc<Gate>,
}

impl<S: Store> Store for Gated<S> {
    async fn submit_request(
        &self,
        network: &NetworkName,
        peer: &PeerId,
        label: Option<&str>,
        invite_used: bool,
        now: u64,
    ) -> Result<Submitted, StoreError> {
        self.gate.pass("submit_request").await;
        self.inner
            .submit_request(network, peer, label, invite_used, now)
            .await
    }

    async fn submit_with_invite(
        &self,
        network: &NetworkName,
        peer: &PeerId,
        label: Option<&str>,
        code_hash: [u8; 32],
        now: u64,
    ) -> Result<Submitted, StoreError> {
        self.gate.pass("submit_with_invite").await;
        self.inner
            .submit_with_invite(network, peer, label, code_hash, now)
            .await
    }

    async fn request(&self, id: RequestId) -> Result<Option<JoinRequestRow>, StoreError> {
        self.gate.pass("request").await;
        self.inner.request(id).await
    }

    async fn latest_request(
        &self,
        network: &NetworkName,
        peer: &PeerId,
    ) -> Result<Option<JoinRequestRow>, StoreError> {
        self.gate.pass("latest_request").await;
        self.inner.latest_request(network, peer).await
    }

    async fn pending(
        &self,
        network: Option<&NetworkName>,
    ) -> Result<Vec<JoinRequestRow>, StoreError> {
        self.gate.pass("pending").await;
        self.inner.pending(network).await
    }

    async fn approve(
        &self,
        id: RequestId,
        issued: NewToken,
        decided_by_policy: Option<&str>,
        now: u64,
    ) -> Result<IssuedTokenRow, StoreError> {
        self.gate.pass("approve").await;
        self.inner.approve(id, issued, decided_by_policy, now).await
    }

    async fn deny(
        &self,
        id: RequestId,
        reason: Option<&str>,
        now: u64,
    ) -> Result<JoinRequestRow, StoreError> {
        self.gate.pass("deny").await;
        self.inner.deny(id, reason, now).await
    }

    async fn deny_pending(
        &self,
        filter: cordon_seednode::store::PendingFilter,
        reason: Option<&str>,
        now: u64,
    ) -> Result<Vec<JoinRequestRow>, StoreError> {
        self.gate.pass("deny_pending").await;
        self.inner.deny_pending(filter, reason, now).await
    }

    async fn issue_direct(&self, issued: NewToken) -> Result<IssuedTokenRow, StoreError> {
        self.gate.pass("issue_direct").await;
        self.inner.issue_direct(issued).await
    }

    async fn token(&self, token_id: IssuedTokenId) -> Result<Option<IssuedTokenRow>, StoreError> {
        self.gate.pass("token").await;
        self.inner.token(token_id).await
    }

    async fn token_for_request(
        &self,
        request_id: RequestId,
    ) -> Result<Option<IssuedTokenRow>, StoreError> {
        self.gate.pass("token_for_request").await;
        self.inner.token_for_request(request_id).await
    }

    async fn undelivered_for(&self, peer: &PeerId) -> Result<Vec<IssuedTokenRow>, StoreError> {
        self.gate.pass("undelivered_for").await;
        self.inner.undelivered_for(peer).await
    }

    async fn mark_delivered(
        &self,
        token_id: IssuedTokenId,
        now: u64,
    ) -> Result<IssuedTokenRow, StoreError> {
        self.gate.pass("mark_delivered").await;
        self.inner.mark_delivered(token_id, now).await
    }

    async fn members(
        &self,
        network: Option<&NetworkName>,
        now: u64,
    ) -> Result<Vec<IssuedTokenRow>, StoreError> {
        self.gate.pass("members").await;
        self.inner.members(network, now).await
    }

    async fn revoke_token(
        &self,
        token_id: IssuedTokenId,
        reason: Option<&str>,
        now: u64,
    ) -> Result<IssuedTokenRow, StoreError> {
        self.gate.pass("revoke_token").await;
        self.inner.revoke_token(token_id, reason, now).await
    }

    async fn revoke_peer(
        &self,
        peer: &PeerId,
        network: Option<&NetworkName>,
        reason: Option<&str>,
        now: u64,
    ) -> Result<Vec<IssuedTokenRow>, StoreError> {
        self.gate.pass("revoke_peer").await;
        self.inner.revoke_peer(peer, network, reason, now).await
    }

    async fn revoke_id(
        &self,
        revocation_id: &[u8],
        reason: Option<&str>,
        now: u64,
    ) -> Result<bool, StoreError> {
        self.gate.pass("revoke_id").await;
        self.inner.revoke_id(revocation_id, reason, now).await
    }

    async fn revocations(&self) -> Result<RevocationSnapshot, StoreError> {
        self.gate.pass("revocations").await;
        self.inner.revocations().await
    }

    async fn revoked_entries(
        &self,
        network: &NetworkName,
        now: u64,
    ) -> Result<Vec<(Vec<u8>, u64)>, StoreError> {
        self.gate.pass("revoked_entries").await;
        self.inner.revoked_entries(network, now).await
    }

    async fn revocation_version(&self) -> Result<u64, StoreError> {
        self.gate.pass("revocation_version").await;
        self.inner.revocation_version().await
    }

    async fn create_invite(
        &self,
        code_hash: [u8; 32],
        network: &NetworkName,
        uses: u32,
        expires_at: u64,
        now: u64,
    ) -> Result<InviteRow, StoreError> {
        self.gate.pass("create_invite").await;
        self.inner
            .create_invite(code_hash, network, uses, expires_at, now)
            .await
    }

    async fn redeem_invite(
        &self,
        code_hash: [u8; 32],
        network: &NetworkName,
        now: u64,
    ) -> Result<bool, StoreError> {
        self.gate.pass("redeem_invite").await;
        self.inner.redeem_invite(code_hash, network, now).await
    }

    async fn invites(&self, network: Option<&NetworkName>) -> Result<Vec<InviteRow>, StoreError> {
        self.gate.pass("invites").await;
        self.inner.invites(network).await
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        self.gate.pass("counts").await;
        self.inner.counts().await
    }
}

/// A node running in this process, stopped when dropped.
struct Running {
    handle: NodeHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    async fn start(
        config: NodeConfig,
        key: SecretKey,
        service: Option<cordon_node::service::ServiceHandle>,
    ) -> anyhow::Result<Self> {
        let (node, handle) = Node::start(config, key, service).await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(node.run(async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            handle,
            stop: Some(stop),
            task: Some(task),
        })
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .context("the node did not stop")???;
        }
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A memory-transport listen address.
fn memory_addr(port: u64) -> Multiaddr {
    Multiaddr::empty().with(Protocol::Memory(port))
}

/// A random memory-transport port: ports are process-wide, shared with other tests.
fn random_port() -> u64 {
    let id = SecretKey::generate().peer_id().to_bytes();
    let n = id.len();
    2_000_000
        + u64::from(u32::from_le_bytes([
            id[n - 4],
            id[n - 3],
            id[n - 2],
            id[n - 1],
        ]))
}

fn node_config(
    data: &Path,
    descriptor: &Descriptor,
    network: &NetworkName,
    port: u64,
    label: &str,
) -> NodeConfig {
    let mut config = NodeConfig::new(
        data.to_path_buf(),
        descriptor.clone(),
        vec![network.clone()],
    );
    config.transport = Transport::Memory;
    config.listen = vec![memory_addr(port)];
    config.control_socket = false;
    config.label = label.to_owned();
    config.limits.poll_interval = Duration::from_millis(500);
    config
}

/// Runs `future`, failing after [`PATIENCE`] with `what`.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> anyhow::Result<T> {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => Ok(value),
        Err(_) => bail!("timed out after {PATIENCE:?} waiting for {what}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_store_does_not_stall_the_seednodes_status() -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let now = SystemTime::now();
    let network: NetworkName = "mainnet".parse()?;
    let anchor = SecretKey::generate();
    let (_, seed_key) = DataDir::init(&dir.path().join("seednode"))?;
    let (_, joiner_key) = DataDir::init(&dir.path().join("joiner"))?;
    let seed_port = random_port();
    let seed_addr = memory_addr(seed_port).with(Protocol::P2p(seed_key.peer_id()));

    // The network: approval policy (the default), the seednode as its bootstrap peer.
    let mut entry = NetworkEntry::new(network.clone(), anchor.public());
    entry.bootstrap = vec![seed_addr];
    let descriptor = Descriptor {
        networks: vec![entry],
    };
    descriptor.validate()?;
    let verifier = Verifier::new(VerifierConfig::default(), descriptor.access_list()?);
    let delegation = issue_delegation(
        &anchor,
        &DelegationRequest {
            network: network.to_string(),
            seednode: seed_key.public(),
            expires_at: now + Duration::from_secs(30 * 86_400),
            allowed_roles: vec!["member".into()],
            allowed_rights: Vec::new(),
            max_lifetime: Duration::from_secs(7 * 86_400),
        },
        now,
    )?;
    let issuer = Issuer::new(&delegation, &verifier, seed_key.clone(), now)?;

    // The seednode's service over a gated SQLite store; it reads its first status while the
    // gate is open.
    let gate = Gate::new();
    let store = Gated {
        inner: SqliteStore::open(&dir.path().join("seednode.db"), StoreLimits::default())?,
        gate: Arc::clone(&gate),
    };
    let service = SeedService::new(store, vec![issuer], &descriptor, ServiceConfig::default())?;
    let service = service.spawn();
    let mut published = service.status.clone();
    within(
        "the service's first status",
        published.wait_for(|s| s.revocation_version == Some(0)),
    )
    .await?
    .context("the service stopped")?;

    // From now on the store hangs until the test says otherwise.
    gate.set_open(false);
    let seednode = Running::start(
        node_config(
            &dir.path().join("seednode"),
            &descriptor,
            &network,
            seed_port,
            "seed",
        ),
        seed_key,
        Some(service),
    )
    .await
    .context("starting the seednode")?;
    let joiner_peer = joiner_key.peer_id();
    let joiner = Running::start(
        node_config(
            &dir.path().join("joiner"),
            &descriptor,
            &network,
            seed_port + 1,
            "joiner",
        ),
        joiner_key,
        None,
    )
    .await
    .context("starting the joining node")?;

    // The joiner connects (the service looks for tokens owed to it) and asks to join. Let
    // the store work of everything else through, one operation at a time, until the service
    // is stuck inside the store on the join request itself (its first read).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting = gate.waiting();
        if waiting.contains(&"latest_request") {
            break;
        }
        if !waiting.is_empty() {
            gate.let_one_through();
        }
        if Instant::now() >= deadline {
            bail!(
                "the join request never reached the store; waited: {:?}",
                gate.waited()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The seednode answers its status anyway, with the service's part.
    let answer = within(
        "the seednode's status while its store hangs",
        seednode.handle.request(Request::Status {}),
    )
    .await?
    .map_err(anyhow::Error::msg)?;
    let Response::Status(status) = answer else {
        bail!("unexpected answer to status: {answer:?}");
    };
    let service_status = status
        .service
        .context("a seednode's status has its service part")?;
    assert_eq!(service_status.networks.len(), 1);
    assert_eq!(service_status.networks[0].name, network);
    assert_eq!(
        gate.waiting(),
        ["latest_request"],
        "the service was still inside its store when the status was answered"
    );

    // Release the store: the queued join request reaches the operator's list.
    gate.set_open(true);
    let listed = wait_for(
        "the join request in `pending`",
        Duration::from_secs(30),
        || {
            let handle = seednode.handle.clone();
            async move {
                let answer = tokio::time::timeout(
                    PATIENCE,
                    handle.request(Request::Pending { network: None }),
                )
                .await
                .ok()?
                .ok()?;
                match answer {
                    Response::Pending(list) if !list.is_empty() => Some(list),
                    _ => None,
                }
            }
        },
    )
    .await?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].peer, joiner_peer.to_base58());
    assert_eq!(listed[0].network, network);
    assert_eq!(listed[0].status, "pending");
    let waited = gate.waited();

    joiner.stop().await?;
    seednode.stop().await?;
    eprintln!(
        "a slow store did not stall the seednode ({:?}; waited at the gate: {waited:?})",
        started.elapsed()
    );
    Ok(())
}
