//! The seednode's join service: it answers join requests and status polls, decides them by
//! policy or queues them for an operator, answers the operator's typed requests, and issues
//! and delivers tokens. It runs as a tokio task of its own, off the node's event loop
//! ([`SeedService::spawn`]).
//!
//! It ties a persistent [`Store`] (queue, issued tokens, revocations, invites; any back end) to
//! one [`Issuer`] per served network and to each network's join policy from the descriptor.
//! What to do with a join request is decided by the pure [`decide`](crate::decide) function;
//! this module reads its inputs from the store and carries the decision out.
//!
//! # Policies
//! - **`approval`**: every request is queued and waits for an operator (`seednode approve`).
//!   Nothing is ever issued automatically, with one exception, renewal (below).
//! - **`invite`**: a request carrying a valid invite code is approved at once (the code is
//!   redeemed and the request recorded in one transaction). A request carrying a wrong, used-up
//!   or expired code is denied with `invalid_invite` and queues nothing. A request without a
//!   code is queued for an operator, so an operator can still admit a peer that has no invite.
//! - **`open`**: every request is approved at once.
//!
//! # Rules that hold under every policy
//! - **Idempotent requests.** A peer asking again while its request is pending gets the same
//!   request id; a peer holding a live, unrevoked token for the network that is not yet within
//!   the descriptor's renewal margin gets that same token again (nothing new is issued).
//! - **Renewal.** A peer whose live, unrevoked token is within the renewal margin gets a fresh
//!   token with the same roles at once, whatever the policy: the operator already admitted it
//!   and has not revoked it. A renewal is issued only if it would expire later than the token it
//!   replaces, so a near-expiry delegation cannot make every request issue a token.
//! - **An operator's decision sticks.** If the peer's latest request for the network was denied
//!   by an operator, or its latest token was revoked, `open` and `invite` no longer approve it
//!   automatically: its new requests wait for an operator (and no invite is consumed).
//! - **Nothing committed is lost.** If issuing fails after a request was queued (say, the
//!   delegation expired), the request stays pending for an operator and the peer is told
//!   `Pending`; store errors are logged and answered with the `unavailable` code while the
//!   database is unreachable, else `internal`, never a panic.
//! - **Tokens go only to their subject.** `Status` for a request of another peer gets the same
//!   answer as an unknown id, so it reveals neither tokens nor which ids exist.
//! - **Token lifetimes are clamped** to the delegation's maximum lifetime and expiry when a
//!   token is issued automatically or with the default lifetime, so issuing never fails on the
//!   bounds; an operator's explicit `ttl_secs` is not clamped, and a bound it breaks is reported.
//!
//! # The task
//! [`SeedService::spawn`] runs the service as a tokio task that takes the node's
//! [`ServiceRequest`]s one at a time from bounded channels, the operator's
//! ([`OPERATOR_QUEUE`]) before the network's ([`SERVICE_QUEUE`]), awaiting the store for each, and pushes [`ServiceEvent`]s (tokens to deliver, audit records) back. After
//! each request it publishes its [`ServiceStatus`] (store counts included) on a watch channel:
//! the node reads the latest value and never waits for the service, however slow the store.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::time::{Duration, SystemTime};

use cordon_host::audit::{AuditEvent, AuditKind};
use cordon_host::descriptor::{Descriptor, JoinPolicy};
use cordon_membership::heads::{Entry, SignerLog};
use cordon_membership::{IssueError, Issuer, PeerId, RevocationId};
use cordon_node::api::{
    InviteCreated, IssuedTokenView, JoinRequestView, Request, Response, Revoked, ServedNetwork,
    ServiceStatus, StoreCounts,
};
use cordon_node::service::{Delivery, ServiceEvent, ServiceHandle, ServiceRequest};
use cordon_protocol::{
    DenyReason, JoinMessage, JoinReply, JoinRequest, Limits, NetworkName, PresentedToken,
    ReasonCode, SignedUpdate, TokenKind, Validate,
};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use crate::decide::{
    Decision, JoinFacts, Lifetimes, PolicyApproval, Previous, PreviousToken, decide,
};
use crate::store::{
    IssuedTokenId, IssuedTokenRow, JoinRequestRow, NewToken, RequestId, RequestStatus, Store,
    StoreError, StoreEvent, Submitted,
};

/// Invite uses when the operator gives none.
pub const DEFAULT_INVITE_USES: u32 = 1;
/// Most uses one invite may have.
pub const MAX_INVITE_USES: u32 = 10_000;
/// Invite lifetime when the operator gives none: one day.
pub const DEFAULT_INVITE_TTL_SECS: u64 = 86_400;
/// Longest invite lifetime: one year.
pub const MAX_INVITE_TTL_SECS: u64 = 366 * 86_400;

/// Tunables of the join service (config section `[seednode.service]`). Every field says its
/// default.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Roles granted by automatic approvals and by `approve` without `roles`.
    /// Default: `["member"]`.
    pub default_roles: Vec<String>,
    /// Longest join-request label accepted, in bytes; longer labels are denied as malformed.
    /// Default: 64 (the protocol's own cap).
    pub max_label_bytes: usize,
    /// Random bytes in a generated invite code, rendered as lowercase hex (twice as many
    /// characters). 8 to 32. Default: 16.
    pub invite_code_bytes: usize,
    /// How often a fresh revocation head is signed for each network even when nothing was
    /// revoked. 1 s to 1 day. Default: 1 h.
    #[serde(with = "cordon_host::config::duration")]
    pub revocation_refresh: Duration,
}

impl ServiceConfig {
    /// Checks the values: at least one valid role, a label cap of 1 to 1,024 bytes, invite
    /// codes of 8 to 32 random bytes.
    pub fn validate(&self) -> Result<(), cordon_host::config::Invalid> {
        use cordon_host::config::{Invalid, in_range};
        if self.default_roles.is_empty() {
            return Err(Invalid::new("default_roles", "must name at least one role"));
        }
        if let Some(role) = self
            .default_roles
            .iter()
            .find(|r| !cordon_membership::token::valid_role(r))
        {
            return Err(Invalid::new(
                "default_roles",
                format!("{role:?} is not a role name (1-32 of a-z, 0-9, _ and -)"),
            ));
        }
        in_range("max_label_bytes", self.max_label_bytes, 1, 1024)?;
        in_range("invite_code_bytes", self.invite_code_bytes, 8, 32)?;
        in_range(
            "revocation_refresh (seconds)",
            self.revocation_refresh.as_secs(),
            1,
            86_400,
        )
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            default_roles: vec!["member".to_owned()],
            max_label_bytes: 64,
            invite_code_bytes: 16,
            revocation_refresh: Duration::from_secs(3600),
        }
    }
}

/// Why a [`SeedService`] could not be built. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// No delegation was given.
    #[error(
        "the seednode has no delegation; pass --delegation FILE for each network it serves \
         (create one with `seednode anchor delegate`)"
    )]
    NoIssuers,
    /// A delegation names a network that is not a valid network name.
    #[error("delegation for {network:?} names an invalid network: {reason}")]
    InvalidNetwork {
        /// The name in the delegation.
        network: String,
        /// What is wrong with it.
        reason: cordon_protocol::NetworkNameError,
    },
    /// A delegation's network has no entry in the descriptor.
    #[error(
        "the delegation for network {network} does not match any network in the descriptor; \
         add a [[network]] entry named {network} to the descriptor file or drop the delegation"
    )]
    NotInDescriptor {
        /// The network.
        network: String,
    },
    /// Two delegations for one network.
    #[error("two delegations for network {network}; pass only one per network")]
    DuplicateNetwork {
        /// The network.
        network: String,
    },
    /// An automatically approving network cannot grant the default roles.
    #[error(
        "network {network} approves joins automatically ({policy}) with role {role:?}, but its \
         delegation allows only {allowed:?}; get a delegation that includes {role:?} \
         (`seednode anchor delegate --roles ...`) or change the default roles"
    )]
    DefaultRoleNotDelegated {
        /// The network.
        network: String,
        /// Its join policy.
        policy: &'static str,
        /// The role missing from the delegation.
        role: String,
        /// What the delegation allows.
        allowed: Vec<String>,
    },
    /// A configuration value is out of range.
    #[error("invalid service configuration {field}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// One network the seednode serves.
struct Served {
    issuer: Issuer,
    policy: JoinPolicy,
    token_lifetime: Duration,
    renewal_margin: Duration,
}

impl Served {
    /// The network's lifetime settings and the delegation's bounds, for [`decide`].
    fn lifetimes(&self) -> Lifetimes {
        let facts = self.issuer.facts();
        Lifetimes {
            token_lifetime: self.token_lifetime,
            renewal_margin: self.renewal_margin,
            max_lifetime: facts.max_lifetime,
            delegation_expires_at: unix_secs(facts.expires_at),
        }
    }

    /// The network's token lifetime, shortened so a token issued at `now` fits the
    /// delegation's bounds.
    fn default_lifetime(&self, now: SystemTime) -> Duration {
        self.lifetimes().clamp(self.token_lifetime, unix_secs(now))
    }
}

/// The seednode's join service over the store `S`. See the module docs for its rules.
pub struct SeedService<S> {
    store: S,
    networks: BTreeMap<NetworkName, Served>,
    config: ServiceConfig,
    limits: Limits,
    heads: Option<HeadSigner>,
}

/// Signs this seednode's revocation heads, one log per served network.
///
/// The log is rebuilt at start from the store (every revoked, unexpired token of the network)
/// and published at a version above the one this seednode's node last held for itself, so a
/// restart never goes backwards. Held in a mutex only because the service is shared by
/// reference; one task uses it.
struct HeadSigner {
    key: libp2p::identity::Keypair,
    logs: std::sync::Mutex<BTreeMap<NetworkName, SignerLog>>,
    /// Lowest version of the first head per network (one above what was held at start).
    start: BTreeMap<NetworkName, u64>,
}

impl<S: fmt::Debug> fmt::Debug for SeedService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeedService")
            .field("store", &self.store)
            .field("networks", &self.networks.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Answer to an operator request, with the tokens it asks to push.
type CommandResult = Result<(Response, Vec<Delivery>), String>;

/// What an operator request produced.
#[derive(Debug)]
pub struct OperatorOutcome {
    /// The answer for the operator.
    pub result: Result<Response, String>,
    /// Tokens to push now to requesters that are connected.
    pub deliveries: Vec<Delivery>,
    /// Audit records of what the operator decided.
    pub audit: Vec<AuditEvent>,
}

/// Capacity of the channels between the node and the service task.
pub const SERVICE_QUEUE: usize = 256;
/// Least time between two recounts of the status's store counts driven by join traffic.
const STATUS_REFRESH: Duration = Duration::from_millis(250);
/// How often the status's store counts are recounted when the store is shared with other
/// seednodes ([`Store::is_shared`]), whose approvals, deliveries and revocations this
/// seednode sees no traffic for: so `status` agrees on every seednode within this time.
const SHARED_STATUS_REFRESH: Duration = Duration::from_secs(1);
/// Capacity of the operator's own channel to the service task (operator requests come from
/// the control socket, itself limited to 16 clients).
pub const OPERATOR_QUEUE: usize = 64;

impl<S: Store> SeedService<S> {
    /// Builds the service from its store, one issuer per served network, and the descriptor
    /// holding each network's join policy and token lifetime.
    pub fn new(
        store: S,
        issuers: Vec<Issuer>,
        descriptor: &Descriptor,
        config: ServiceConfig,
    ) -> Result<Self, ServiceError> {
        if !(8..=32).contains(&config.invite_code_bytes) {
            return Err(ServiceError::InvalidConfig {
                field: "invite_code_bytes",
                reason: format!("{} is outside 8..=32", config.invite_code_bytes),
            });
        }
        if config.default_roles.is_empty() {
            return Err(ServiceError::InvalidConfig {
                field: "default_roles",
                reason: "names no role".to_owned(),
            });
        }
        if config.max_label_bytes == 0 {
            return Err(ServiceError::InvalidConfig {
                field: "max_label_bytes",
                reason: "must be at least 1".to_owned(),
            });
        }
        if issuers.is_empty() {
            return Err(ServiceError::NoIssuers);
        }
        let mut networks = BTreeMap::new();
        for issuer in issuers {
            let name = NetworkName::new(issuer.network()).map_err(|reason| {
                ServiceError::InvalidNetwork {
                    network: issuer.network().to_owned(),
                    reason,
                }
            })?;
            let entry = descriptor
                .network(&name)
                .ok_or_else(|| ServiceError::NotInDescriptor {
                    network: name.to_string(),
                })?;
            let served = Served {
                policy: entry.join,
                token_lifetime: entry.token_lifetime,
                renewal_margin: entry.renewal_margin,
                issuer,
            };
            if auto_approves(served.policy) {
                let allowed = &served.issuer.facts().allowed_roles;
                if let Some(role) = config.default_roles.iter().find(|r| !allowed.contains(r)) {
                    return Err(ServiceError::DefaultRoleNotDelegated {
                        network: name.to_string(),
                        policy: served.policy.as_str(),
                        role: role.clone(),
                        allowed: allowed.clone(),
                    });
                }
            }
            if networks.contains_key(&name) {
                return Err(ServiceError::DuplicateNetwork {
                    network: name.to_string(),
                });
            }
            networks.insert(name, served);
        }
        Ok(Self {
            store,
            networks,
            config,
            limits: Limits::default(),
            heads: None,
        })
    }

    /// Signs revocation heads with `key` (this seednode's identity, the key its delegations
    /// name). `held` is the version of this signer's head the node held per network at start
    /// (0 if none): the first head is signed above it.
    pub fn with_head_signer(
        mut self,
        key: libp2p::identity::Keypair,
        held: BTreeMap<NetworkName, u64>,
    ) -> Result<Self, ServiceError> {
        let signer = cordon_membership::PublicKey::from_peer_id(&key.public().to_peer_id()).ok_or(
            ServiceError::InvalidConfig {
                field: "identity",
                reason: "the seednode identity is not an Ed25519 key".to_owned(),
            },
        )?;
        let logs = self
            .networks
            .keys()
            .map(|n| (n.clone(), SignerLog::new(n.clone(), signer)))
            .collect();
        let start = self
            .networks
            .keys()
            .map(|n| {
                (
                    n.clone(),
                    held.get(n).copied().unwrap_or(0).saturating_add(1),
                )
            })
            .collect();
        self.heads = Some(HeadSigner {
            key,
            logs: std::sync::Mutex::new(logs),
            start,
        });
        Ok(self)
    }

    /// Adds the store's revoked entries of each network to its log and signs a new head: a
    /// snapshot when `snapshot` (at start), else the delta from the previous head. Raises
    /// each issuer's floor to the new version. Returns the updates for the node to apply and
    /// push; nothing without a head signer.
    async fn publish_heads(
        &self,
        networks: &[NetworkName],
        snapshot: bool,
        now: SystemTime,
    ) -> Vec<ServiceEvent> {
        let Some(heads) = &self.heads else {
            return Vec::new();
        };
        let now_secs = unix_secs(now);
        let mut out = Vec::new();
        for network in networks {
            let Some(served) = self.networks.get(network) else {
                continue;
            };
            let entries = match self.store.revoked_entries(network, now_secs).await {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::error!(network = %network, error = %e, "cannot read revocations; head not signed");
                    continue;
                }
            };
            let entries = entries.into_iter().map(|(id, expires_at)| Entry {
                id: revocation_entry_id(id),
                expires_at,
            });
            let signed = {
                let mut logs = match heads.logs.lock() {
                    Ok(g) => g,
                    Err(poisoned) => poisoned.into_inner(),
                };
                let Some(log) = logs.get_mut(network) else {
                    continue;
                };
                let previous = log.version();
                log.add(entries, now_secs);
                let min = heads.start.get(network).copied().unwrap_or(1);
                let refresh = self.config.revocation_refresh.as_secs().max(1);
                match log.publish(&heads.key, now_secs, refresh, min) {
                    Ok(head) => {
                        let since = if snapshot { 0 } else { previous };
                        log.update_since(since).map(|u| (u, head.head().version))
                    }
                    Err(e) => {
                        tracing::error!(network = %network, error = %e, "cannot sign a revocation head");
                        None
                    }
                }
            };
            let Some((update, version)) = signed else {
                continue;
            };
            served.issuer.set_revocation_floor(version);
            tracing::info!(network = %network, version, entries = update.head.head().count, "revocation head signed");
            out.push(ServiceEvent::Revocation {
                network: network.clone(),
                update: SignedUpdate {
                    update: update.to_bytes(),
                    credential: Some(served.issuer.delegation_bytes().to_vec()),
                },
            });
        }
        out
    }

    /// The networks served, by name.
    pub fn networks(&self) -> impl Iterator<Item = &NetworkName> {
        self.networks.keys()
    }

    /// The underlying store (for inspection and tests).
    pub fn store(&self) -> &S {
        &self.store
    }

    // ---- join protocol -------------------------------------------------------------------

    async fn handle_request(
        &self,
        peer: PeerId,
        request: JoinRequest,
        now: SystemTime,
    ) -> JoinReply {
        let JoinRequest {
            network,
            label,
            invite,
        } = request;
        let Some(served) = self.networks.get(&network) else {
            tracing::debug!(%peer, %network, "join request for a network not served");
            return denied(None, DenyReason::UnknownNetwork, None);
        };
        if label.len() > self.config.max_label_bytes {
            return denied(
                None,
                DenyReason::Malformed,
                Some(format!(
                    "label is {} bytes; the limit is {}",
                    label.len(),
                    self.config.max_label_bytes
                )),
            );
        }
        let now_secs = unix_secs(now);

        // What this peer got before decides what may happen automatically now.
        let latest = match self.store.latest_request(&network, &peer).await {
            Ok(latest) => latest,
            Err(e) => return internal(&e, "reading the peer's latest join request"),
        };
        let token = match &latest {
            Some(row) if row.status == RequestStatus::Approved => {
                match self.store.token_for_request(row.id).await {
                    Ok(token) => token,
                    Err(e) => return internal(&e, "reading the peer's token"),
                }
            }
            _ => None,
        };
        let previous = latest.as_ref().map(|row| match row.status {
            RequestStatus::Pending => Previous::Pending,
            RequestStatus::Denied => Previous::Denied {
                by_operator: row.decided_by_policy.is_none(),
            },
            RequestStatus::Approved => Previous::Approved {
                token: token.as_ref().map(|t| PreviousToken {
                    expires_at: t.expires_at,
                    revoked: t.revoked_at.is_some(),
                    roles: &t.roles,
                    rights: &t.rights,
                    current_delegation: cordon_membership::verify::delegation_id_unverified(
                        &t.token,
                    )
                    .is_none_or(|id| &id == served.issuer.delegation_id()),
                }),
            },
        });
        let decision = decide(&JoinFacts {
            previous,
            policy: served.policy,
            invite_offered: invite.is_some(),
            lifetimes: served.lifetimes(),
            now: now_secs,
        });
        let grant = match &decision {
            Decision::ReturnExisting => {
                return match (&latest, &token) {
                    (Some(row), Some(token)) => self.approved_reply(row.id, token, now).await,
                    // `decide` returns the existing token only when there is one.
                    _ => internal_code(),
                };
            }
            Decision::Renew { roles, rights } => Some((roles.clone(), rights.clone())),
            Decision::ApproveByPolicy(_) => Some((self.config.default_roles.clone(), Vec::new())),
            Decision::Queue(_) => None,
        };

        let label = Some(label.as_str()).filter(|l| !l.trim().is_empty());
        let submitted = match (&decision, invite) {
            (Decision::ApproveByPolicy(PolicyApproval::Invite), Some(code)) => {
                self.store
                    .submit_with_invite(&network, &peer, label, invite_hash(&code), now_secs)
                    .await
            }
            _ => {
                self.store
                    .submit_request(&network, &peer, label, false, now_secs)
                    .await
            }
        };
        let row = match submitted {
            Ok(Submitted::New(row)) => {
                tracing::info!(%peer, %network, request_id = row.id.0, "join request queued");
                row
            }
            Ok(Submitted::Existing(row)) => row,
            Err(StoreError::InviteRejected { .. }) => {
                tracing::info!(%peer, %network, reason = "invalid_invite", "join request denied");
                return denied(
                    None,
                    DenyReason::InvalidInvite,
                    Some(
                        "the invite code is unknown, expired or used up; ask the operator for \
                         a new one"
                            .to_owned(),
                    ),
                );
            }
            Err(e @ (StoreError::QueueFull { .. } | StoreError::QueueFullTotal { .. })) => {
                tracing::warn!(%peer, %network, reason = "queue_full", "{e}");
                return denied(None, DenyReason::QueueFull, None);
            }
            Err(StoreError::InvalidInput { field, reason }) => {
                return denied(
                    None,
                    DenyReason::Malformed,
                    Some(format!("invalid {field}: {reason}")),
                );
            }
            Err(e) => return internal(&e, "queueing a join request"),
        };
        let (Some(policy), Some((roles, rights))) = (decision.decided_by(), grant) else {
            return pending(row.id);
        };
        let lifetime = served.default_lifetime(now);
        let issued = match issue(served, &network, &peer, &roles, &rights, lifetime, now) {
            Ok(issued) => issued,
            Err(e) => {
                // The request is committed; it waits for an operator instead.
                tracing::warn!(
                    %peer, %network, request_id = row.id.0,
                    "automatic approval ({policy}) failed, request left pending: {e}"
                );
                return pending(row.id);
            }
        };
        match self
            .store
            .approve(row.id, issued, Some(policy), now_secs)
            .await
        {
            Ok(token) => {
                tracing::info!(
                    %peer, %network, request_id = row.id.0, token_id = token.token_id.0,
                    "join request approved by policy {policy}"
                );
                self.approved_reply(row.id, &token, now).await
            }
            Err(e) => {
                tracing::warn!(
                    %peer, %network, request_id = row.id.0,
                    "automatic approval ({policy}) could not be recorded: {e}"
                );
                // Someone may have decided it meanwhile; answer with what is stored.
                match self.store.request(row.id).await {
                    Ok(Some(current)) => self.reply_for(&current, now).await,
                    _ => pending(row.id),
                }
            }
        }
    }

    async fn handle_status(&self, peer: PeerId, request_id: u64, now: SystemTime) -> JoinReply {
        // An unknown id and another peer's id get the same answer: no oracle, no leak.
        let not_found = denied(
            Some(request_id),
            DenyReason::Malformed,
            Some("this peer has no join request with that id".to_owned()),
        );
        let Some(id) = RequestId::from_wire(request_id) else {
            return not_found;
        };
        match self.store.request(id).await {
            Ok(Some(row)) if row.peer == peer.to_base58() => self.reply_for(&row, now).await,
            Ok(Some(_)) => {
                tracing::info!(%peer, request_id, "status asked for another peer's request");
                not_found
            }
            Ok(None) => not_found,
            Err(e) => internal(&e, "reading a join request"),
        }
    }

    /// The answer for a stored request of the asking peer.
    async fn reply_for(&self, row: &JoinRequestRow, now: SystemTime) -> JoinReply {
        let request_id = row.id.wire();
        match row.status {
            RequestStatus::Pending => pending(row.id),
            RequestStatus::Denied => denied(
                Some(request_id),
                DenyReason::DeniedByOperator,
                row.deny_reason.clone(),
            ),
            RequestStatus::Approved => match self.store.token_for_request(row.id).await {
                Ok(Some(token)) if token.revoked_at.is_some() => denied(
                    Some(request_id),
                    DenyReason::DeniedByOperator,
                    Some("the membership issued for this request was revoked".to_owned()),
                ),
                Ok(Some(token)) => self.approved_reply(row.id, &token, now).await,
                Ok(None) => {
                    tracing::warn!(request_id = row.id.0, "approved request has no token");
                    internal_code()
                }
                Err(e) => internal(&e, "reading an issued token"),
            },
        }
    }

    /// `Approved` with the token, recording it as delivered: the reply carries it, and if the
    /// reply is lost the peer asks again and gets the same token.
    async fn approved_reply(
        &self,
        request_id: RequestId,
        token: &IssuedTokenRow,
        now: SystemTime,
    ) -> JoinReply {
        if token.delivered_at.is_none()
            && let Err(e) = self
                .store
                .mark_delivered(token.token_id, unix_secs(now))
                .await
        {
            tracing::warn!(
                token_id = token.token_id.0,
                "could not record delivery: {e}"
            );
        }
        JoinReply::Approved {
            request_id: request_id.wire(),
            token: token.token.clone(),
        }
    }

    /// Applies the wire limits to a reply; an over-long or odd operator note is dropped.
    fn checked(&self, reply: JoinReply) -> JoinReply {
        match reply {
            JoinReply::Denied {
                request_id,
                reason,
                message: Some(message),
            } => {
                let with_message = JoinReply::Denied {
                    request_id,
                    reason,
                    message: Some(message),
                };
                if with_message.validate(&self.limits).is_ok() {
                    with_message
                } else {
                    denied(request_id, reason, None)
                }
            }
            other => other,
        }
    }

    // ---- operator commands ---------------------------------------------------------------

    /// Answers an operator request; records what the operator decided in the audit.
    pub async fn operator(&self, request: Request, now: SystemTime) -> OperatorOutcome {
        let audit = operator_audit(&request);
        let id = |id: u64| RequestId::from_wire(id).ok_or_else(|| format!("no join request {id}"));
        let result = match request {
            Request::Pending { network } => self.cmd_pending(network).await,
            Request::Approve {
                id: request_id,
                roles,
                rights,
                ttl_secs,
            } => match id(request_id) {
                Ok(id) => {
                    self.cmd_approve(
                        ApproveArgs {
                            id,
                            roles: (!roles.is_empty()).then_some(roles),
                            rights: (!rights.is_empty()).then_some(rights),
                            ttl_secs,
                        },
                        now,
                    )
                    .await
                }
                Err(e) => Err(e),
            },
            Request::Deny {
                id: request_id,
                reason,
            } => match id(request_id) {
                Ok(id) => self.cmd_deny(id, reason, now).await,
                Err(e) => Err(e),
            },
            Request::DenyPending {
                network,
                older_than_secs,
                label,
                reason,
            } => {
                self.cmd_deny_pending(network, older_than_secs, label, reason, now)
                    .await
            }
            Request::Members { network } => self.cmd_members(network, now).await,
            Request::Invite {
                network,
                uses,
                ttl_secs,
            } => {
                self.cmd_invite(
                    InviteArgs {
                        network,
                        uses,
                        ttl_secs,
                    },
                    now,
                )
                .await
            }
            Request::Revoke {
                peer,
                network,
                token_id,
                reason,
            } => match token_id.map(IssuedTokenId::from_wire) {
                Some(None) => Err("no such token id".to_owned()),
                token_id => {
                    self.cmd_revoke(
                        RevokeArgs {
                            peer,
                            network,
                            token_id: token_id.flatten(),
                            reason,
                        },
                        now,
                    )
                    .await
                }
            },
            other => Err(format!(
                "{:?} is not an operator request; the seednode's service answers pending, \
                 approve, deny, deny_pending, members, invite and revoke",
                other
            )),
        };
        match result {
            Ok((response, deliveries)) => {
                // A bulk denial is one operator decision per request denied.
                let audit = match &response {
                    Response::DeniedPending(rows) => rows
                        .iter()
                        .map(|r| {
                            AuditEvent::new(AuditKind::JoinDenied)
                                .request_id(r.id)
                                .network(&r.network)
                                .detail("by operator (bulk)")
                        })
                        .collect(),
                    _ => audit.into_iter().collect(),
                };
                OperatorOutcome {
                    result: Ok(response),
                    deliveries,
                    audit,
                }
            }
            Err(message) => OperatorOutcome {
                result: Err(message),
                deliveries: Vec::new(),
                audit: Vec::new(),
            },
        }
    }

    /// Checks an optional network filter names a network this seednode serves.
    fn served_network(&self, network: Option<NetworkName>) -> Result<Option<NetworkName>, String> {
        let Some(name) = network else {
            return Ok(None);
        };
        if !self.networks.contains_key(&name) {
            return Err(format!(
                "this seednode does not serve network {name}; it serves: {}",
                self.served_list()
            ));
        }
        Ok(Some(name))
    }

    fn served_list(&self) -> String {
        self.networks
            .keys()
            .map(NetworkName::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    async fn cmd_pending(&self, network: Option<NetworkName>) -> CommandResult {
        let network = self.served_network(network)?;
        let rows = self
            .store
            .pending(network.as_ref())
            .await
            .map_err(store_err)?;
        Ok((
            Response::Pending(rows.iter().map(request_view).collect()),
            Vec::new(),
        ))
    }

    async fn cmd_approve(&self, args: ApproveArgs, now: SystemTime) -> CommandResult {
        let request = self
            .store
            .request(args.id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| store_err(StoreError::NotFound { id: args.id }))?;
        if request.status != RequestStatus::Pending {
            return Err(store_err(StoreError::NotPending {
                id: args.id,
                status: request.status,
            }));
        }
        let network = request.network.clone();
        let Some(served) = self.networks.get(&network) else {
            return Err(format!(
                "join request {} is for network {network}, which this seednode no longer \
                 serves (it serves: {}); deny it with `seednode deny {}`",
                args.id,
                self.served_list(),
                args.id
            ));
        };
        let peer: PeerId = request.peer.parse().map_err(|e| {
            format!(
                "join request {} names peer {:?}, which is not a valid peer id ({e}); deny it",
                args.id, request.peer
            )
        })?;
        let roles = match args.roles {
            Some(roles) if roles.is_empty() => {
                return Err("\"roles\" is empty; name at least one role or omit it".to_owned());
            }
            Some(roles) => roles,
            None => self.config.default_roles.clone(),
        };
        let lifetime = match args.ttl_secs {
            Some(0) => return Err("\"ttl_secs\" must be at least 1".to_owned()),
            Some(secs) => Duration::from_secs(secs),
            None => served.default_lifetime(now),
        };
        let rights = args.rights.unwrap_or_default();
        let issued = issue(served, &network, &peer, &roles, &rights, lifetime, now)
            .map_err(|e| format!("cannot issue a token for join request {}: {e}", args.id))?;
        let row = self
            .store
            .approve(args.id, issued, None, unix_secs(now))
            .await
            .map_err(store_err)?;
        tracing::info!(
            %peer, %network, request_id = args.id.0, token_id = row.token_id.0,
            "join request approved by operator"
        );
        let delivery = Delivery {
            peer,
            network,
            request_id: args.id.wire(),
            token_id: row.token_id.wire(),
            token: row.token.clone(),
        };
        Ok((Response::Approved(self.token_view(&row)), vec![delivery]))
    }

    /// An operator's denial note travels to the node in the denial: it must fit the wire
    /// rules.
    fn check_deny_note(&self, note: Option<&str>) -> Result<(), String> {
        let Some(note) = note else {
            return Ok(());
        };
        JoinReply::Denied {
            request_id: None,
            reason: DenyReason::DeniedByOperator,
            message: Some(note.to_owned()),
        }
        .validate(&self.limits)
        .map_err(|e| format!("invalid \"reason\": {e}"))
    }

    async fn cmd_deny(
        &self,
        id: RequestId,
        reason: Option<String>,
        now: SystemTime,
    ) -> CommandResult {
        self.check_deny_note(reason.as_deref())?;
        let row = self
            .store
            .deny(id, reason.as_deref(), unix_secs(now))
            .await
            .map_err(store_err)?;
        tracing::info!(peer = %row.peer, network = %row.network, request_id = row.id.0,
            "join request denied by operator");
        Ok((Response::Denied(request_view(&row)), Vec::new()))
    }

    async fn cmd_deny_pending(
        &self,
        network: Option<NetworkName>,
        older_than_secs: Option<u64>,
        label: Option<String>,
        reason: Option<String>,
        now: SystemTime,
    ) -> CommandResult {
        let network = self.served_network(network)?;
        self.check_deny_note(reason.as_deref())?;
        let now_secs = unix_secs(now);
        let filter = crate::store::PendingFilter {
            network,
            created_at_most: older_than_secs.map(|d| now_secs.saturating_sub(d)),
            label,
        };
        let rows = self
            .store
            .deny_pending(filter, reason.as_deref(), now_secs)
            .await
            .map_err(store_err)?;
        for row in &rows {
            tracing::info!(peer = %row.peer, network = %row.network, request_id = row.id.0,
                "join request denied by operator (bulk)");
        }
        Ok((
            Response::DeniedPending(rows.iter().map(request_view).collect()),
            Vec::new(),
        ))
    }

    fn token_view(&self, row: &IssuedTokenRow) -> IssuedTokenView {
        let issuer = self.networks.get(&row.network).map(|served| &served.issuer);
        token_view(
            row,
            issuer.map(|i| i.delegation_id()),
            issuer.map(|i| &i.facts().delegate[..]),
        )
    }

    async fn cmd_members(&self, network: Option<NetworkName>, now: SystemTime) -> CommandResult {
        let network = self.served_network(network)?;
        let rows = self
            .store
            .members(network.as_ref(), unix_secs(now))
            .await
            .map_err(store_err)?;
        Ok((
            Response::Members(rows.iter().map(|r| self.token_view(r)).collect()),
            Vec::new(),
        ))
    }

    async fn cmd_invite(&self, args: InviteArgs, now: SystemTime) -> CommandResult {
        let network = args.network;
        let Some(served) = self.networks.get(&network) else {
            return Err(format!(
                "this seednode does not serve network {network}; it serves: {}",
                self.served_list()
            ));
        };
        if served.policy != JoinPolicy::Invite {
            return Err(format!(
                "network {network} has join policy {}; invite codes only admit peers to \
                 networks with join = \"invite\" in the descriptor",
                served.policy.as_str()
            ));
        }
        let uses = args.uses.unwrap_or(DEFAULT_INVITE_USES);
        if !(1..=MAX_INVITE_USES).contains(&uses) {
            return Err(format!(
                "\"uses\" must be between 1 and {MAX_INVITE_USES}, got {uses}"
            ));
        }
        let ttl = args.ttl_secs.unwrap_or(DEFAULT_INVITE_TTL_SECS);
        if !(1..=MAX_INVITE_TTL_SECS).contains(&ttl) {
            return Err(format!(
                "\"ttl_secs\" must be between 1 and {MAX_INVITE_TTL_SECS} (a year), got {ttl}"
            ));
        }
        let code = random_code(self.config.invite_code_bytes)
            .map_err(|e| format!("cannot read random bytes for the invite code: {e}"))?;
        let now_secs = unix_secs(now);
        let row = self
            .store
            .create_invite(
                invite_hash(&code),
                &network,
                uses,
                now_secs.saturating_add(ttl),
                now_secs,
            )
            .await
            .map_err(store_err)?;
        tracing::info!(%network, code_prefix = %row.code_prefix, uses, "invite created");
        Ok((
            Response::Invited(InviteCreated {
                code,
                network,
                uses: row.uses_left,
                expires_at: row.expires_at,
                code_prefix: row.code_prefix,
            }),
            Vec::new(),
        ))
    }

    async fn cmd_revoke(&self, args: RevokeArgs, now: SystemTime) -> CommandResult {
        let now_secs = unix_secs(now);
        let reason = args.reason.as_deref();
        if let Some(reason) = reason
            && (reason.len() > 256 || reason.chars().any(char::is_control))
        {
            return Err(
                "\"reason\" must be at most 256 bytes without control characters".to_owned(),
            );
        }
        let revoked = match (args.peer, args.token_id) {
            (Some(peer), None) => {
                let network = self.served_network(args.network)?;
                self.store
                    .revoke_peer(&peer, network.as_ref(), reason, now_secs)
                    .await
                    .map_err(store_err)?
            }
            (None, Some(token_id)) => {
                if args.network.is_some() {
                    return Err(
                        "\"network\" applies only with \"peer\"; a token id names one token"
                            .to_owned(),
                    );
                }
                vec![
                    self.store
                        .revoke_token(token_id, reason, now_secs)
                        .await
                        .map_err(store_err)?,
                ]
            }
            _ => {
                return Err(
                    "revoke needs exactly one of \"peer\" (with optional \"network\") or \
                     \"token_id\""
                        .to_owned(),
                );
            }
        };
        let version = self.store.revocation_version().await.map_err(store_err)?;
        for row in &revoked {
            tracing::info!(peer = %row.peer, network = %row.network, token_id = row.token_id.0,
                "membership revoked");
        }
        Ok((
            Response::Revoked(Revoked {
                revoked: revoked.iter().map(|r| self.token_view(r)).collect(),
                revocation_version: version,
            }),
            Vec::new(),
        ))
    }

    /// Delegations to present on every connection, one per served network.
    pub fn delegations(&self) -> Vec<PresentedToken> {
        self.networks
            .iter()
            .map(|(name, served)| PresentedToken {
                network: name.clone(),
                kind: TokenKind::Delegation,
                token: served.issuer.delegation_bytes().to_vec(),
            })
            .collect()
    }

    /// Answers a `Request` or `Status` join message from `peer` (Noise-authenticated).
    pub async fn on_join(&self, peer: PeerId, message: JoinMessage, now: SystemTime) -> JoinReply {
        let reply = match message {
            JoinMessage::Request(request) => self.handle_request(peer, request, now).await,
            JoinMessage::Status { request_id } => self.handle_status(peer, request_id, now).await,
            JoinMessage::Deliver { .. } => JoinReply::Error {
                code: ReasonCode::Malformed,
            },
        };
        self.checked(reply)
    }

    /// Tokens approved for `peer` and not yet delivered.
    pub async fn pending_deliveries(&self, peer: PeerId, now: SystemTime) -> Vec<Delivery> {
        let rows = match self.store.undelivered_for(&peer).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(%peer, "cannot read undelivered tokens: {e}");
                return Vec::new();
            }
        };
        let now_secs = unix_secs(now);
        rows.into_iter()
            .filter(|row| row.expires_at > now_secs)
            .map(|row| Delivery {
                peer,
                network: row.network,
                request_id: row.request_id.map(RequestId::wire).unwrap_or(0),
                token_id: row.token_id.wire(),
                token: row.token,
            })
            .collect()
    }

    /// The peer acknowledged a delivery.
    pub async fn delivered(&self, token_id: IssuedTokenId, now: SystemTime) {
        match self.store.mark_delivered(token_id, unix_secs(now)).await {
            Ok(row) => tracing::debug!(peer = %row.peer, token_id = token_id.0, "token delivered"),
            Err(e) => tracing::warn!(token_id = token_id.0, "cannot record delivery: {e}"),
        }
    }

    /// The service's status without the store's part (counts and revocation version unknown):
    /// what the node shows until the first status is read from the store.
    fn initial_status(&self) -> ServiceStatus {
        ServiceStatus {
            networks: self.served_networks(),
            counts: StoreCounts::default(),
            revocation_version: None,
        }
    }

    fn served_networks(&self) -> Vec<ServedNetwork> {
        self.networks
            .iter()
            .map(|(name, served)| {
                let facts = served.issuer.facts();
                ServedNetwork {
                    name: name.clone(),
                    join: served.policy.as_str().to_owned(),
                    token_lifetime_secs: served.token_lifetime.as_secs(),
                    allowed_roles: facts.allowed_roles.clone(),
                    max_lifetime_secs: facts.max_lifetime.as_secs(),
                    delegation_expires_at: unix_secs(facts.expires_at),
                }
            })
            .collect()
    }

    /// The service's status: served networks, store counts, revocation version.
    pub async fn status(&self) -> ServiceStatus {
        let counts = match self.store.counts().await {
            Ok(c) => StoreCounts {
                pending: c.pending,
                approved: c.approved,
                denied: c.denied,
                issued: c.issued,
                delivered: c.delivered,
                revoked: c.revoked,
            },
            Err(e) => {
                tracing::warn!("cannot count store rows: {e}");
                StoreCounts::default()
            }
        };
        ServiceStatus {
            networks: self.served_networks(),
            counts,
            revocation_version: self.store.revocation_version().await.ok(),
        }
    }

    /// Runs the service as a tokio task and returns the handle the node drives it through.
    /// Must be called inside a tokio runtime.
    ///
    /// The task takes one request at a time, awaiting the store for it, so nothing the store
    /// does runs on the node's event loop. It publishes the service's status (with store
    /// counts) when it starts and after every request; until the first store read completes
    /// the status has the served networks and zero counts. It ends when the node drops the
    /// handle's request sender.
    pub fn spawn(self) -> ServiceHandle {
        let (requests, inbox) = mpsc::channel(SERVICE_QUEUE);
        let (operator, operator_inbox) = mpsc::channel(OPERATOR_QUEUE);
        let (events_tx, events) = mpsc::channel(SERVICE_QUEUE);
        let (status_tx, status) = watch::channel(self.initial_status());
        let delegations = self.delegations();
        tokio::spawn(self.run(inbox, operator_inbox, events_tx, status_tx));
        ServiceHandle {
            delegations,
            requests,
            operator,
            events,
            status,
        }
    }

    /// The service task: see [`SeedService::spawn`].
    async fn run(
        self,
        mut inbox: mpsc::Receiver<ServiceRequest>,
        mut operator: mpsc::Receiver<ServiceRequest>,
        events: mpsc::Sender<ServiceEvent>,
        status: watch::Sender<ServiceStatus>,
    ) {
        status.send_replace(self.status().await);
        let all: Vec<NetworkName> = self.networks.keys().cloned().collect();
        for event in self.publish_heads(&all, true, SystemTime::now()).await {
            let _ = events.send(event).await;
        }
        let mut refresh = tokio::time::interval(self.config.revocation_refresh);
        refresh.tick().await;
        // Store counts for the status, recounted after an operator's request at once (the CLI
        // reads them next) and otherwise at most every STATUS_REFRESH after join traffic: a
        // recount (six table counts) after every status poll cost more than the poll.
        let mut recount = tokio::time::interval(STATUS_REFRESH);
        recount.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stale = false;
        // Other seednodes sharing the store change its counts without telling this one.
        let shared = self.store.is_shared();
        let mut shared_recount = tokio::time::interval(SHARED_STATUS_REFRESH);
        shared_recount.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // What other seednodes sharing the store issue and revoke, as it happens (their
        // approvals are pushed to nodes connected here without waiting for their next poll).
        let mut store_events = self.store.subscribe();
        loop {
            tokio::select! {
                // The operator first: a queue full of join messages must not keep an operator
                // from deciding them. Then one join message, if any waits, so a burst of
                // approvals does not starve the nodes polling for them either.
                biased;
                Some(request) = operator.recv() => {
                    self.serve(request, &events).await;
                    status.send_replace(self.status().await);
                    stale = false;
                    if let Ok(request) = inbox.try_recv() {
                        stale |= changes_counts(&request);
                        self.serve(request, &events).await;
                    }
                }
                event = next_store_event(&mut store_events), if store_events.is_some() => {
                    match event {
                        Some(event) => self.on_store_event(event, &all, &events).await,
                        None => store_events = None,
                    }
                }
                request = inbox.recv() => {
                    let Some(request) = request else { break };
                    stale |= changes_counts(&request);
                    self.serve(request, &events).await;
                }
                _ = recount.tick(), if stale => {
                    status.send_replace(self.status().await);
                    stale = false;
                }
                _ = shared_recount.tick(), if shared => {
                    status.send_replace(self.status().await);
                    stale = false;
                }
                _ = refresh.tick() => {
                    for event in self.publish_heads(&all, false, SystemTime::now()).await {
                        let _ = events.send(event).await;
                    }
                }
            }
        }
        tracing::debug!("join service stopped: the node dropped its handle");
    }

    /// Acts on a change another seednode made to the shared store: pushes a token it issued
    /// (as when its subject connects here; the node drops the push unless the peer is
    /// connected to this seednode), or publishes a new revocation head at once instead of at
    /// the next `revocation_refresh`.
    async fn on_store_event(
        &self,
        event: StoreEvent,
        all: &[NetworkName],
        events: &mpsc::Sender<ServiceEvent>,
    ) {
        let now = SystemTime::now();
        match event {
            StoreEvent::TokenIssued { peer } => {
                tracing::debug!(%peer, "token issued elsewhere; pushing it");
                self.push_undelivered(peer, now, events).await;
            }
            StoreEvent::RevocationsChanged => {
                for event in self.publish_heads(all, false, now).await {
                    let _ = events.send(event).await;
                }
            }
        }
    }

    /// Hands the node every undelivered token of `peer` to push (it drops a push to a peer not
    /// connected here).
    async fn push_undelivered(
        &self,
        peer: PeerId,
        now: SystemTime,
        events: &mpsc::Sender<ServiceEvent>,
    ) {
        for d in self.pending_deliveries(peer, now).await {
            let _ = events.send(ServiceEvent::Deliver(d)).await;
        }
    }

    /// Answers one request from the node.
    async fn serve(&self, request: ServiceRequest, events: &mpsc::Sender<ServiceEvent>) {
        // The node is gone when a push fails; the task ends with the inbox.
        let emit = |event: ServiceEvent| async move {
            let _ = events.send(event).await;
        };
        let now = SystemTime::now();
        match request {
            ServiceRequest::Join {
                peer,
                message,
                reply,
            } => {
                let asked = match &message {
                    JoinMessage::Request(r) => Some(r.network.clone()),
                    _ => None,
                };
                let answer = self.on_join(peer, message, now).await;
                if let Some(network) = asked {
                    emit(ServiceEvent::Audit(
                        join_audit(&answer).peer(peer).network(&network),
                    ))
                    .await;
                }
                let _ = reply.send(answer);
            }
            ServiceRequest::Connected { peer } => self.push_undelivered(peer, now, events).await,
            ServiceRequest::Delivered { token_id } => {
                if let Some(id) = IssuedTokenId::from_wire(token_id) {
                    self.delivered(id, now).await;
                }
            }
            ServiceRequest::Operator { request, reply } => {
                let outcome = self.operator(request, now).await;
                for event in outcome.audit {
                    emit(ServiceEvent::Audit(event)).await;
                }
                for d in outcome.deliveries {
                    emit(ServiceEvent::Deliver(d)).await;
                }
                // A revocation is signed into a head and handed to the node before the
                // operator hears back, so the node enforces it first.
                if let Ok(Response::Revoked(revoked)) = &outcome.result {
                    let mut networks: Vec<NetworkName> =
                        revoked.revoked.iter().map(|t| t.network.clone()).collect();
                    networks.sort();
                    networks.dedup();
                    for event in self.publish_heads(&networks, false, now).await {
                        emit(event).await;
                    }
                }
                let _ = reply.send(outcome.result);
            }
        }
    }
}

/// The next event of a store subscription (`None` once it ended); never resolves without one.
async fn next_store_event(events: &mut Option<mpsc::Receiver<StoreEvent>>) -> Option<StoreEvent> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// Whether serving `request` can change the store counts the status shows (a peer's connection
/// only reads; a status poll answered `approved` records the delivery).
fn changes_counts(request: &ServiceRequest) -> bool {
    !matches!(request, ServiceRequest::Connected { .. })
}

// ---- command arguments ------------------------------------------------------------------

#[derive(Debug)]
struct ApproveArgs {
    id: RequestId,
    roles: Option<Vec<String>>,
    rights: Option<Vec<String>>,
    ttl_secs: Option<u64>,
}

#[derive(Debug)]
struct InviteArgs {
    network: NetworkName,
    uses: Option<u32>,
    ttl_secs: Option<u64>,
}

#[derive(Debug)]
struct RevokeArgs {
    peer: Option<PeerId>,
    network: Option<NetworkName>,
    token_id: Option<IssuedTokenId>,
    reason: Option<String>,
}

// ---- helpers ------------------------------------------------------------------------------

/// A store revocation id as a head entry id: tokens issued since serials existed are stored
/// with their 16-byte id; older rows hold the block-1 signature, hashed the way the verifier
/// identifies a legacy token.
fn revocation_entry_id(stored: Vec<u8>) -> RevocationId {
    if stored.len() == cordon_membership::REVOCATION_ID_LEN {
        RevocationId(stored)
    } else {
        RevocationId::legacy_membership(&stored)
    }
}

fn auto_approves(policy: JoinPolicy) -> bool {
    matches!(policy, JoinPolicy::Open | JoinPolicy::Invite)
}

fn issue(
    served: &Served,
    network: &NetworkName,
    peer: &PeerId,
    roles: &[String],
    rights: &[String],
    lifetime: Duration,
    now: SystemTime,
) -> Result<NewToken, IssueError> {
    let issued = served
        .issuer
        .issue_with_rights(peer, roles, rights, lifetime, now)?;
    Ok(NewToken {
        network: network.clone(),
        peer: *peer,
        roles: issued.roles,
        rights: issued.rights,
        issued_at: unix_secs(issued.issued_at),
        expires_at: unix_secs(issued.expires_at),
        revocation_id: issued.revocation_id.0,
        token: issued.bytes,
    })
}

/// SHA-256 of an invite code: the only form in which the store ever sees it.
fn invite_hash(code: &str) -> [u8; 32] {
    Sha256::digest(code.as_bytes()).into()
}

/// `bytes` bytes from the operating system's CSPRNG, as lowercase hex.
fn random_code(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(hex::encode(buf))
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn pending(request_id: RequestId) -> JoinReply {
    JoinReply::Pending {
        request_id: request_id.wire(),
    }
}

fn denied(request_id: Option<u64>, reason: DenyReason, message: Option<String>) -> JoinReply {
    JoinReply::Denied {
        request_id,
        reason,
        message,
    }
}

fn internal_code() -> JoinReply {
    JoinReply::Error {
        code: ReasonCode::Internal,
    }
}

/// The answer to a join message the store failed on: `unavailable` while the database is
/// unreachable (nothing was applied; the node asks again after its back-off), else `internal`.
fn internal(error: &StoreError, doing: &str) -> JoinReply {
    tracing::warn!("seednode store failed while {doing}: {error}");
    match error {
        StoreError::DatabaseUnreachable { .. } => JoinReply::Error {
            code: ReasonCode::Unavailable,
        },
        _ => internal_code(),
    }
}

fn store_err(error: StoreError) -> String {
    error.to_string()
}

fn request_view(row: &JoinRequestRow) -> JoinRequestView {
    JoinRequestView {
        id: row.id.wire(),
        network: row.network.clone(),
        peer: row.peer.clone(),
        label: row.label.clone(),
        invite_used: row.invite_used,
        created_at: row.created_at,
        status: row.status.as_str().to_owned(),
        decided_at: row.decided_at,
        decided_by_policy: row.decided_by_policy.clone(),
        deny_reason: row.deny_reason.clone(),
    }
}

/// An issued token as shown to operators: every column, the token bytes left out, whether it
/// chains to `current`, the delegation the seednode holds for its network now, and whether
/// `own_key`, the seednode's, signed it.
fn token_view(
    row: &IssuedTokenRow,
    current: Option<&RevocationId>,
    own_key: Option<&[u8]>,
) -> IssuedTokenView {
    IssuedTokenView {
        token_id: row.token_id.wire(),
        request_id: row.request_id.map(RequestId::wire),
        network: row.network.clone(),
        peer: row.peer.clone(),
        roles: row.roles.clone(),
        rights: row.rights.clone(),
        issued_at: row.issued_at,
        expires_at: row.expires_at,
        revocation_id: hex::encode(&row.revocation_id),
        delivered_at: row.delivered_at,
        revoked_at: row.revoked_at,
        current_delegation: current.and_then(|current| {
            cordon_membership::verify::delegation_id_unverified(&row.token).map(|id| &id == current)
        }),
        issued_here: own_key.and_then(|own| {
            cordon_membership::verify::issuer_key_unverified(&row.token).map(|key| key == own)
        }),
    }
}

/// The audit record of an operator decision, if the request is one.
fn operator_audit(request: &Request) -> Option<AuditEvent> {
    let event = match request {
        Request::Approve { id, .. } => AuditEvent::new(AuditKind::JoinApproved).request_id(*id),
        Request::Deny { id, .. } => AuditEvent::new(AuditKind::JoinDenied).request_id(*id),
        Request::Revoke { peer, token_id, .. } => {
            let mut event = AuditEvent::new(AuditKind::TokenRevoked);
            if let Some(peer) = peer {
                event = event.peer(peer);
            }
            if let Some(id) = token_id {
                event = event.token_id(id);
            }
            event
        }
        _ => return None,
    };
    Some(event.detail("by operator"))
}

/// The audit record of a join request's answer.
fn join_audit(reply: &JoinReply) -> AuditEvent {
    match reply {
        JoinReply::Pending { request_id } => {
            AuditEvent::new(AuditKind::JoinRequested).request_id(*request_id)
        }
        JoinReply::Approved { request_id, .. } => AuditEvent::new(AuditKind::JoinApproved)
            .request_id(*request_id)
            .detail("by policy"),
        JoinReply::Denied { reason, .. } => AuditEvent::new(AuditKind::JoinDenied).reason(reason),
        JoinReply::Error { code } => AuditEvent::new(AuditKind::JoinDenied).reason(code),
        JoinReply::Ack => AuditEvent::new(AuditKind::Other),
    }
}

#[cfg(test)]
mod tests {
    use cordon_membership::{
        DelegationRequest, RefusalCode, SecretKey, Verifier, VerifierConfig, issue_delegation,
    };

    use super::*;
    use crate::store::{SqliteStore, StoreLimits};
    use serde_json::{Value, json};

    /// An operator request's outcome with its answer as the socket would send it.
    struct ControlOutcome {
        result: Result<Value, String>,
        deliveries: Vec<Delivery>,
    }

    const DAY: u64 = 86_400;
    const NET: &str = "mainnet";

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn at(secs: u64) -> SystemTime {
        t0() + Duration::from_secs(secs)
    }

    fn peer(n: u8) -> PeerId {
        SecretKey::from_seed([n; 32]).peer_id()
    }

    struct Fixture {
        service: SeedService<SqliteStore>,
        verifier: Verifier,
    }

    struct Options {
        policy: &'static str,
        token_lifetime: &'static str,
        delegation_ttl: u64,
        limits: StoreLimits,
    }

    impl Default for Options {
        fn default() -> Self {
            Self {
                policy: "approval",
                token_lifetime: "7d",
                delegation_ttl: 365 * DAY,
                limits: StoreLimits::default(),
            }
        }
    }

    fn descriptor_text(anchor: &SecretKey, policy: &str, lifetime: &str) -> String {
        format!(
            "[[network]]\nname = \"{NET}\"\nanchors = [\"{}\"]\njoin = \"{policy}\"\n\
             token_lifetime = \"{lifetime}\"\nrenewal_margin = \"1d\"\n\n\
             [[network]]\nname = \"testnet\"\nanchors = [\"{}\"]\n",
            anchor.public(),
            SecretKey::from_seed([99; 32]).public()
        )
    }

    fn fixture_with(options: Options) -> Fixture {
        let anchor = SecretKey::from_seed([1; 32]);
        let seednode = SecretKey::from_seed([2; 32]);
        let delegation = issue_delegation(
            &anchor,
            &DelegationRequest {
                network: NET.to_owned(),
                seednode: seednode.public(),
                expires_at: at(options.delegation_ttl),
                allowed_roles: vec!["member".to_owned(), "ops".to_owned()],
                allowed_rights: vec!["dht_put".to_owned()],
                max_lifetime: Duration::from_secs(30 * DAY),
            },
            t0(),
        )
        .unwrap();
        let descriptor = Descriptor::parse(&descriptor_text(
            &anchor,
            options.policy,
            options.token_lifetime,
        ))
        .unwrap();
        let verifier = Verifier::new(VerifierConfig::default(), descriptor.access_list().unwrap());
        let issuer = Issuer::new(&delegation, &verifier, seednode, t0()).unwrap();
        let store = SqliteStore::open_in_memory(options.limits).unwrap();
        let service =
            SeedService::new(store, vec![issuer], &descriptor, ServiceConfig::default()).unwrap();
        Fixture { service, verifier }
    }

    fn fixture(policy: &'static str) -> Fixture {
        fixture_with(Options {
            policy,
            ..Options::default()
        })
    }

    fn request(invite: Option<&str>) -> JoinMessage {
        JoinMessage::Request(JoinRequest {
            network: NET.parse().unwrap(),
            label: "alice laptop".to_owned(),
            invite: invite.map(str::to_owned),
        })
    }

    fn status(request_id: u64) -> JoinMessage {
        JoinMessage::Status { request_id }
    }

    /// Sends `request` as the operator CLI would: parsed by the control socket's own parser
    /// into a typed request, answered by the service, encoded as the socket encodes it.
    async fn control(
        service: &SeedService<SqliteStore>,
        request: Value,
        now: SystemTime,
    ) -> ControlOutcome {
        let line = serde_json::to_vec(&request).unwrap();
        match cordon_host::control::parse_request::<Request>(&line) {
            Ok(request) => {
                let outcome = service.operator(request, now).await;
                ControlOutcome {
                    result: outcome.result.map(|r| serde_json::to_value(r).unwrap()),
                    deliveries: outcome.deliveries,
                }
            }
            Err(e) => ControlOutcome {
                result: Err(e),
                deliveries: Vec::new(),
            },
        }
    }

    fn ok(outcome: &ControlOutcome) -> &Value {
        outcome.result.as_ref().unwrap()
    }

    fn pending_id(reply: &JoinReply) -> u64 {
        match reply {
            JoinReply::Pending { request_id } => *request_id,
            other => panic!("expected Pending, got {other:?}"),
        }
    }

    fn approved_token(reply: &JoinReply) -> Vec<u8> {
        match reply {
            JoinReply::Approved { token, .. } => token.clone(),
            other => panic!("expected Approved, got {other:?}"),
        }
    }

    fn denial(reply: &JoinReply) -> (DenyReason, Option<String>) {
        match reply {
            JoinReply::Denied {
                reason, message, ..
            } => (*reason, message.clone()),
            other => panic!("expected Denied, got {other:?}"),
        }
    }

    async fn create_invite(service: &SeedService<SqliteStore>, uses: u32) -> String {
        let outcome = control(
            service,
            json!({"cmd": "invite", "network": NET, "uses": uses}),
            t0(),
        )
        .await;
        ok(&outcome)["code"].as_str().unwrap().to_owned()
    }

    #[test]
    fn default_config_is_documented() {
        let config = ServiceConfig::default();
        assert_eq!(config.default_roles, ["member"]);
        assert_eq!(config.max_label_bytes, 64);
        assert_eq!(config.invite_code_bytes, 16);
    }

    #[test]
    fn delegations_are_presented_per_network() {
        let f = fixture("approval");
        let presented = f.service.delegations();
        assert_eq!(presented.len(), 1);
        assert_eq!(presented[0].network.as_str(), NET);
        assert_eq!(presented[0].kind, TokenKind::Delegation);
        let seednode = SecretKey::from_seed([2; 32]).peer_id();
        f.verifier
            .verify_delegation(&presented[0].token, &seednode, t0())
            .unwrap();
    }

    #[tokio::test]
    async fn approval_policy_queues_and_never_auto_approves() {
        let f = fixture("approval");
        let s = &f.service;
        let first = pending_id(&s.on_join(peer(10), request(None), t0()).await);
        // Asking again, even with an invite code, returns the same request.
        let again = pending_id(&s.on_join(peer(10), request(Some("abc")), at(5)).await);
        assert_eq!(first, again);
        assert_eq!(
            pending_id(&s.on_join(peer(10), status(first), at(6)).await),
            first
        );
        let other = pending_id(&s.on_join(peer(11), request(None), at(7)).await);
        assert_ne!(other, first);
        assert!(s.pending_deliveries(peer(10), at(8)).await.is_empty());
        let counts = s.store().counts().await.unwrap();
        assert_eq!((counts.pending, counts.approved, counts.issued), (2, 0, 0));
        let listed = control(s, json!({"cmd": "pending"}), at(9)).await;
        let listed = ok(&listed).as_array().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0]["id"], json!(first));
        assert_eq!(listed[0]["peer"], json!(peer(10).to_base58()));
        assert_eq!(listed[0]["label"], json!("alice laptop"));
        assert_eq!(listed[0]["created_at"], json!(1_700_000_000u64));
    }

    #[tokio::test]
    async fn open_policy_approves_at_once_and_repeats_the_same_token() {
        let f = fixture("open");
        let reply = f.service.on_join(peer(10), request(None), t0()).await;
        let token = approved_token(&reply);
        let verdict = f
            .verifier
            .verify_membership(&token, &peer(10), t0())
            .unwrap();
        assert_eq!(verdict.network, NET);
        assert_eq!(verdict.roles, ["member"]);
        assert_eq!(verdict.expires_at, at(7 * DAY));
        // The reply carried it: nothing is left to push.
        assert!(
            f.service
                .pending_deliveries(peer(10), at(1))
                .await
                .is_empty()
        );
        // A peer holding a live token gets the same one again.
        let again = approved_token(&f.service.on_join(peer(10), request(None), at(60)).await);
        assert_eq!(again, token);
        assert_eq!(f.service.store().counts().await.unwrap().issued, 1);
    }

    #[tokio::test]
    async fn lifetime_is_clamped_to_the_delegation() {
        // The descriptor asks for 60 days; the delegation allows at most 30.
        let f = fixture_with(Options {
            policy: "open",
            token_lifetime: "60d",
            ..Options::default()
        });
        let token = approved_token(&f.service.on_join(peer(10), request(None), t0()).await);
        let verdict = f
            .verifier
            .verify_membership(&token, &peer(10), t0())
            .unwrap();
        assert_eq!(verdict.expires_at, at(30 * DAY));

        // A delegation ending in 2 days caps the token at its expiry.
        let f = fixture_with(Options {
            policy: "open",
            delegation_ttl: 2 * DAY,
            ..Options::default()
        });
        let token = approved_token(&f.service.on_join(peer(10), request(None), t0()).await);
        let verdict = f
            .verifier
            .verify_membership(&token, &peer(10), t0())
            .unwrap();
        assert_eq!(verdict.expires_at, at(2 * DAY));
    }

    #[tokio::test]
    async fn expired_delegation_leaves_the_request_pending() {
        let f = fixture_with(Options {
            policy: "open",
            delegation_ttl: DAY,
            ..Options::default()
        });
        let id = pending_id(
            &f.service
                .on_join(peer(10), request(None), at(2 * DAY))
                .await,
        );
        assert_eq!(f.service.store().counts().await.unwrap().pending, 1);
        assert_eq!(
            pending_id(&f.service.on_join(peer(10), status(id), at(2 * DAY)).await),
            id
        );
    }

    #[tokio::test]
    async fn invite_code_approves_once_and_wrong_codes_are_refused() {
        let f = fixture("invite");
        let code = create_invite(&f.service, 1).await;
        assert_eq!(code.len(), 32);
        assert!(
            code.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        // Only the hash is stored.
        let listed = f.service.store().invites(None).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(!code.starts_with(&listed[0].code_prefix));

        let token = approved_token(
            &f.service
                .on_join(peer(10), request(Some(&code)), t0())
                .await,
        );
        f.verifier
            .verify_membership(&token, &peer(10), t0())
            .unwrap();
        // The same peer asking again gets its token, not a refusal.
        assert_eq!(
            approved_token(
                &f.service
                    .on_join(peer(10), request(Some(&code)), at(1))
                    .await
            ),
            token
        );
        // Second use by another peer: refused, nothing queued.
        let (reason, _) = denial(
            &f.service
                .on_join(peer(11), request(Some(&code)), at(2))
                .await,
        );
        assert_eq!(reason, DenyReason::InvalidInvite);
        let (reason, _) = denial(
            &f.service
                .on_join(peer(12), request(Some("wrong")), at(3))
                .await,
        );
        assert_eq!(reason, DenyReason::InvalidInvite);
        assert_eq!(f.service.store().counts().await.unwrap().pending, 0);
        // Without a code the request waits for an operator.
        let id = pending_id(&f.service.on_join(peer(13), request(None), at(4)).await);
        // ... and a code sent later approves it.
        let code = create_invite(&f.service, 1).await;
        let reply = f
            .service
            .on_join(peer(13), request(Some(&code)), at(5))
            .await;
        assert!(
            matches!(reply, JoinReply::Approved { request_id, .. } if request_id == id),
            "{reply:?}"
        );
    }

    #[tokio::test]
    async fn invites_only_for_invite_networks() {
        let f = fixture("approval");
        let outcome = control(&f.service, json!({"cmd": "invite", "network": NET}), t0()).await;
        let err = outcome.result.unwrap_err();
        assert!(err.contains("join policy approval"), "{err}");
        let outcome = control(
            &f.service,
            json!({"cmd": "invite", "network": "testnet"}),
            t0(),
        )
        .await;
        assert!(outcome.result.unwrap_err().contains("does not serve"));
    }

    #[tokio::test]
    async fn operator_approval_delivers_a_verifying_token_to_the_requester() {
        let f = fixture("approval");
        let id = pending_id(&f.service.on_join(peer(10), request(None), t0()).await);
        let outcome = control(&f.service, json!({"cmd": "approve", "id": id}), at(30)).await;
        let row = ok(&outcome).clone();
        assert_eq!(row["request_id"], json!(id));
        assert_eq!(row["peer"], json!(peer(10).to_base58()));
        assert_eq!(row["roles"], json!(["member"]));
        assert!(row.get("token").is_none(), "token bytes are not echoed");
        assert_eq!(outcome.deliveries.len(), 1);
        let delivery = &outcome.deliveries[0];
        assert_eq!(delivery.peer, peer(10));
        assert_eq!(delivery.network.as_str(), NET);
        assert_eq!(delivery.request_id, id);
        let verdict = f
            .verifier
            .verify_membership(&delivery.token, &peer(10), at(31))
            .unwrap();
        assert_eq!(verdict.expires_at, at(30 + 7 * DAY));
        let stolen = f
            .verifier
            .verify_membership_uncached(&delivery.token, &peer(11), at(31))
            .unwrap_err();
        assert_eq!(stolen.code(), RefusalCode::WrongSubject);

        // Not yet acknowledged: pushed again on the next connection, until acknowledged.
        let again = f.service.pending_deliveries(peer(10), at(40)).await;
        assert_eq!(again, outcome.deliveries);
        assert!(
            f.service
                .pending_deliveries(peer(11), at(40))
                .await
                .is_empty()
        );
        f.service
            .delivered(IssuedTokenId::from_wire(delivery.token_id).unwrap(), at(41))
            .await;
        assert!(
            f.service
                .pending_deliveries(peer(10), at(42))
                .await
                .is_empty()
        );
        // Polling still answers with the token.
        let token = approved_token(&f.service.on_join(peer(10), status(id), at(50)).await);
        assert_eq!(token, delivery.token);
        // Approving twice is refused with the reason.
        let twice = control(&f.service, json!({"cmd": "approve", "id": id}), at(60)).await;
        assert!(twice.result.unwrap_err().contains("already approved"));
    }

    #[tokio::test]
    async fn expired_undelivered_tokens_are_not_pushed() {
        let f = fixture("approval");
        let id = pending_id(&f.service.on_join(peer(10), request(None), t0()).await);
        let outcome = control(
            &f.service,
            json!({"cmd": "approve", "id": id, "ttl_secs": 60}),
            t0(),
        )
        .await;
        assert_eq!(outcome.deliveries.len(), 1);
        assert_eq!(
            f.service.pending_deliveries(peer(10), at(59)).await.len(),
            1
        );
        assert!(
            f.service
                .pending_deliveries(peer(10), at(60))
                .await
                .is_empty()
        );
    }

    #[tokio::test]
    async fn status_of_another_peers_request_reveals_nothing() {
        let f = fixture("approval");
        let id = pending_id(&f.service.on_join(peer(10), request(None), t0()).await);
        control(&f.service, json!({"cmd": "approve", "id": id}), at(1)).await;
        let stranger = f.service.on_join(peer(11), status(id), at(2)).await;
        let unknown = f.service.on_join(peer(11), status(id + 1000), at(2)).await;
        let (reason, _) = denial(&stranger);
        assert_eq!(reason, DenyReason::Malformed);
        // Same answer as for an id that does not exist: no oracle.
        match (&stranger, &unknown) {
            (
                JoinReply::Denied {
                    reason: a,
                    message: ma,
                    ..
                },
                JoinReply::Denied {
                    reason: b,
                    message: mb,
                    ..
                },
            ) => assert_eq!((a, ma), (b, mb)),
            other => panic!("{other:?}"),
        }
        // The requester's token is still undelivered (the stranger did not consume it).
        assert_eq!(f.service.pending_deliveries(peer(10), at(3)).await.len(), 1);
        let huge = f.service.on_join(peer(10), status(u64::MAX), at(3)).await;
        assert_eq!(denial(&huge).0, DenyReason::Malformed);
    }

    #[tokio::test]
    async fn deny_reaches_the_requester_with_the_reason() {
        let f = fixture("approval");
        let id = pending_id(&f.service.on_join(peer(10), request(None), t0()).await);
        let outcome = control(
            &f.service,
            json!({"cmd": "deny", "id": id, "reason": "unknown device"}),
            at(1),
        )
        .await;
        assert_eq!(ok(&outcome)["status"], json!("denied"));
        let (reason, message) = denial(&f.service.on_join(peer(10), status(id), at(2)).await);
        assert_eq!(reason, DenyReason::DeniedByOperator);
        assert_eq!(message.as_deref(), Some("unknown device"));
        let listed = control(&f.service, json!({"cmd": "pending"}), at(3)).await;
        assert_eq!(ok(&listed), &json!([]));
        // A reason that cannot travel is refused up front.
        let id2 = pending_id(&f.service.on_join(peer(11), request(None), at(4)).await);
        let bad = control(
            &f.service,
            json!({"cmd": "deny", "id": id2, "reason": "a\nb"}),
            at(5),
        )
        .await;
        assert!(bad.result.unwrap_err().contains("reason"));
        // The denied peer may ask again: a new request.
        let again = pending_id(&f.service.on_join(peer(10), request(None), at(6)).await);
        assert_ne!(again, id);
    }

    #[tokio::test]
    async fn operator_decisions_stop_automatic_approval() {
        let f = fixture("open");
        approved_token(&f.service.on_join(peer(10), request(None), t0()).await);
        let outcome = control(
            &f.service,
            json!({"cmd": "revoke", "peer": peer(10).to_base58(), "reason": "stolen"}),
            at(1),
        )
        .await;
        let result = ok(&outcome);
        assert_eq!(result["revoked"].as_array().unwrap().len(), 1);
        assert_eq!(result["revocation_version"], json!(1));
        // Revoked on an open network: the next request waits for an operator.
        let id = pending_id(&f.service.on_join(peer(10), request(None), at(2)).await);
        let outcome = control(&f.service, json!({"cmd": "deny", "id": id}), at(3)).await;
        assert!(outcome.result.is_ok());
        pending_id(&f.service.on_join(peer(10), request(None), at(4)).await);
        // Other peers are still approved at once.
        approved_token(&f.service.on_join(peer(11), request(None), at(5)).await);
    }

    #[tokio::test]
    async fn revoked_token_is_not_handed_out_by_status() {
        let f = fixture("approval");
        let id = pending_id(&f.service.on_join(peer(10), request(None), t0()).await);
        let outcome = control(&f.service, json!({"cmd": "approve", "id": id}), at(1)).await;
        let token_id = ok(&outcome)["token_id"].as_i64().unwrap();
        let revoked = control(
            &f.service,
            json!({"cmd": "revoke", "token_id": token_id}),
            at(2),
        )
        .await;
        assert_eq!(ok(&revoked)["revoked"][0]["token_id"], json!(token_id));
        let (reason, _) = denial(&f.service.on_join(peer(10), status(id), at(3)).await);
        assert_eq!(reason, DenyReason::DeniedByOperator);
        assert!(
            f.service
                .pending_deliveries(peer(10), at(3))
                .await
                .is_empty()
        );
        let bad = control(
            &f.service,
            json!({"cmd": "revoke", "token_id": token_id, "peer": peer(10).to_string()}),
            at(4),
        )
        .await;
        assert!(bad.result.unwrap_err().contains("exactly one"));
    }

    #[tokio::test]
    async fn renewal_within_the_margin_issues_a_longer_token() {
        let f = fixture("approval");
        let id = pending_id(&f.service.on_join(peer(10), request(None), t0()).await);
        let outcome = control(
            &f.service,
            json!({"cmd": "approve", "id": id, "roles": ["ops"], "rights": ["dht_put"]}),
            t0(),
        )
        .await;
        let first = outcome.deliveries[0].token.clone();
        // Outside the margin (7d lifetime, 1d margin): the same token.
        let same = approved_token(
            &f.service
                .on_join(peer(10), request(None), at(5 * DAY))
                .await,
        );
        assert_eq!(same, first);
        // Inside it: a fresh token with the same roles, without an operator.
        let renewed = approved_token(
            &f.service
                .on_join(peer(10), request(None), at(6 * DAY + 1))
                .await,
        );
        assert_ne!(renewed, first);
        let verdict = f
            .verifier
            .verify_membership(&renewed, &peer(10), at(6 * DAY + 1))
            .unwrap();
        assert_eq!(verdict.roles, ["ops"]);
        assert_eq!(
            verdict.rights,
            ["dht_put"],
            "the renewal keeps the explicit right"
        );
        assert_eq!(verdict.expires_at, at(13 * DAY + 1));
        // After expiry on an approval network, the operator decides again.
        pending_id(
            &f.service
                .on_join(peer(10), request(None), at(14 * DAY))
                .await,
        );
    }

    #[tokio::test]
    async fn bounds_errors_are_reported_to_the_operator() {
        let f = fixture("approval");
        let id = pending_id(&f.service.on_join(peer(10), request(None), t0()).await);
        let outcome = control(
            &f.service,
            json!({"cmd": "approve", "id": id, "roles": ["admin"]}),
            at(1),
        )
        .await;
        let err = outcome.result.unwrap_err();
        assert!(
            err.contains("role \"admin\" is not delegated"),
            "unexpected message: {err}"
        );
        assert!(outcome.deliveries.is_empty());
        let outcome = control(
            &f.service,
            json!({"cmd": "approve", "id": id, "ttl_secs": 31 * DAY}),
            at(1),
        )
        .await;
        assert!(outcome.result.unwrap_err().contains("exceeds"));
        // The request is untouched.
        assert_eq!(f.service.store().counts().await.unwrap().pending, 1);
        let outcome = control(&f.service, json!({"cmd": "approve", "id": 999}), at(1)).await;
        assert!(outcome.result.unwrap_err().contains("does not exist"));
    }

    #[tokio::test]
    async fn members_lists_current_members() {
        let f = fixture("open");
        approved_token(&f.service.on_join(peer(10), request(None), t0()).await);
        approved_token(&f.service.on_join(peer(11), request(None), t0()).await);
        let all = control(&f.service, json!({"cmd": "members"}), at(1)).await;
        let all = ok(&all).as_array().unwrap().clone();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|m| m["network"] == json!(NET)));
        assert!(all.iter().all(|m| m.get("token").is_none()));
        let filtered = control(&f.service, json!({"cmd": "members", "network": NET}), at(1)).await;
        assert_eq!(ok(&filtered).as_array().unwrap().len(), 2);
        let expired = control(&f.service, json!({"cmd": "members"}), at(8 * DAY)).await;
        assert_eq!(ok(&expired), &json!([]));
        let unknown = control(
            &f.service,
            json!({"cmd": "members", "network": "testnet"}),
            at(1),
        )
        .await;
        assert!(unknown.result.unwrap_err().contains("serves: mainnet"));
    }

    #[tokio::test]
    async fn commands_are_validated_strictly() {
        let f = fixture("approval");
        let s = &f.service;
        let err = |v: Value| async move { control(s, v, t0()).await.result.unwrap_err() };
        let e = err(json!({"cmd": "launch"})).await;
        assert!(
            e.contains("unknown variant `launch`") && e.contains("`approve`, `deny`"),
            "{e}"
        );
        let e = err(json!({"id": 1})).await;
        assert!(e.contains("missing \"cmd\""), "{e}");
        let e = err(json!({"cmd": "approve"})).await;
        assert!(e.contains("missing field `id`"), "{e}");
        let e = err(json!({"cmd": "approve", "id": 1, "role": "x"})).await;
        assert!(e.contains("unknown field `role`"), "{e}");
        let e = err(json!({"cmd": "approve", "id": "1"})).await;
        assert!(e.contains("invalid type"), "{e}");
        let e = err(json!({"cmd": "pending", "network": "Bad Name"})).await;
        assert!(e.contains("invalid network name"), "{e}");
        let e = err(json!({"cmd": "revoke", "peer": "not-a-peer"})).await;
        assert!(e.contains("invalid \"peer\""), "{e}");
        let e = err(json!(["cmd"])).await;
        assert!(e.contains("JSON object"), "{e}");
    }

    #[tokio::test]
    async fn join_requests_outside_the_rules_are_denied() {
        let f = fixture_with(Options {
            limits: StoreLimits {
                max_pending_per_network: 1,
                ..StoreLimits::default()
            },
            ..Options::default()
        });
        let unknown = JoinMessage::Request(JoinRequest {
            network: "testnet".parse().unwrap(),
            label: "x".to_owned(),
            invite: None,
        });
        assert_eq!(
            denial(&f.service.on_join(peer(10), unknown, t0()).await).0,
            DenyReason::UnknownNetwork
        );
        pending_id(&f.service.on_join(peer(10), request(None), t0()).await);
        assert_eq!(
            denial(&f.service.on_join(peer(11), request(None), t0()).await).0,
            DenyReason::QueueFull
        );
        let long = JoinMessage::Request(JoinRequest {
            network: NET.parse().unwrap(),
            label: "x".repeat(65),
            invite: None,
        });
        assert_eq!(
            denial(&f.service.on_join(peer(12), long, t0()).await).0,
            DenyReason::Malformed
        );
        let deliver = JoinMessage::Deliver {
            network: NET.parse().unwrap(),
            request_id: 1,
            token: vec![1],
        };
        assert_eq!(
            f.service.on_join(peer(10), deliver, t0()).await,
            JoinReply::Error {
                code: ReasonCode::Malformed
            }
        );
    }

    #[tokio::test]
    async fn status_counts_and_networks() {
        let f = fixture("open");
        approved_token(&f.service.on_join(peer(10), request(None), t0()).await);
        let status = f.service.status().await;
        assert_eq!(status.counts.approved, 1);
        assert_eq!(status.counts.issued, 1);
        assert_eq!(status.counts.delivered, 1);
        assert_eq!(status.networks[0].name.as_str(), NET);
        assert_eq!(status.networks[0].join, "open");
        // The operator asks the node for status; the service is not asked directly.
        let via_control = control(&f.service, json!({"cmd": "status"}), t0()).await;
        assert!(via_control.result.is_err());
    }

    /// The next push of a spawned service, within a generous timeout.
    async fn next_event(events: &mut mpsc::Receiver<ServiceEvent>) -> ServiceEvent {
        tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("a push within 10 s")
            .expect("the service is running")
    }

    /// The first published status satisfying `pred`, within a generous timeout.
    async fn status_where(
        status: &watch::Receiver<ServiceStatus>,
        pred: impl Fn(&ServiceStatus) -> bool,
    ) -> ServiceStatus {
        let mut status = status.clone();
        tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| pred(s)))
            .await
            .expect("the status within 10 s")
            .expect("the service is running")
            .clone()
    }

    async fn ask(
        requests: &mpsc::Sender<ServiceRequest>,
        peer: PeerId,
        message: JoinMessage,
    ) -> JoinReply {
        let (reply, answer) = tokio::sync::oneshot::channel();
        requests
            .send(ServiceRequest::Join {
                peer,
                message,
                reply,
            })
            .await
            .unwrap();
        answer.await.unwrap()
    }

    #[tokio::test]
    async fn spawned_service_answers_pushes_audits_and_publishes_status() {
        // The task reads the real clock: a delegation that outlives the test run.
        let f = fixture_with(Options {
            delegation_ttl: 100 * 365 * DAY,
            ..Options::default()
        });
        let ServiceHandle {
            delegations,
            requests,
            operator,
            mut events,
            status: published,
        } = f.service.spawn();
        assert_eq!(delegations.len(), 1);
        // The served networks are known at once; the counts once the store answered.
        assert_eq!(published.borrow().networks[0].name.as_str(), NET);
        status_where(&published, |s| s.revocation_version == Some(0)).await;

        let id = pending_id(&ask(&requests, peer(10), request(None)).await);
        let ServiceEvent::Audit(audit) = next_event(&mut events).await else {
            panic!("expected the join request's audit record");
        };
        assert_eq!(audit.kind, AuditKind::JoinRequested);
        assert_eq!(audit.request_id, Some(id));
        assert_eq!(audit.peer, Some(peer(10).to_string()));
        assert_eq!(audit.network.as_deref(), Some(NET));
        status_where(&published, |s| s.counts.pending == 1).await;
        // A status poll is answered and not audited.
        assert_eq!(pending_id(&ask(&requests, peer(10), status(id)).await), id);

        // The operator approves: its audit record and the delivery are pushed, then it is
        // answered.
        let (reply, answer) = tokio::sync::oneshot::channel();
        let approve = Request::Approve {
            id,
            roles: Vec::new(),
            rights: Vec::new(),
            ttl_secs: None,
        };
        operator
            .send(ServiceRequest::Operator {
                request: approve,
                reply,
            })
            .await
            .unwrap();
        let ServiceEvent::Audit(audit) = next_event(&mut events).await else {
            panic!("expected the approval's audit record");
        };
        assert_eq!(audit.kind, AuditKind::JoinApproved);
        assert_eq!(audit.request_id, Some(id));
        assert_eq!(audit.detail.as_deref(), Some("by operator"));
        let ServiceEvent::Deliver(delivery) = next_event(&mut events).await else {
            panic!("expected the token's delivery");
        };
        assert_eq!((delivery.peer, delivery.request_id), (peer(10), id));
        let Response::Approved(view) = answer.await.unwrap().unwrap() else {
            panic!("expected the issued token");
        };
        assert_eq!(view.token_id, delivery.token_id);
        status_where(&published, |s| {
            s.counts.approved == 1 && s.counts.issued == 1
        })
        .await;

        // Not acknowledged yet: pushed again when the peer connects.
        requests
            .send(ServiceRequest::Connected { peer: peer(10) })
            .await
            .unwrap();
        let ServiceEvent::Deliver(again) = next_event(&mut events).await else {
            panic!("expected the delivery again");
        };
        assert_eq!(again, delivery);
        requests
            .send(ServiceRequest::Delivered {
                token_id: delivery.token_id,
            })
            .await
            .unwrap();
        status_where(&published, |s| s.counts.delivered == 1).await;
        requests
            .send(ServiceRequest::Connected { peer: peer(10) })
            .await
            .unwrap();
        // Answered after the connection was handled, with nothing pushed for it.
        assert_eq!(
            approved_token(&ask(&requests, peer(10), status(id)).await),
            delivery.token
        );
        assert!(events.try_recv().is_err(), "nothing more to push");

        // The node drops its handle: the task ends.
        drop(requests);
        let end = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
        assert!(matches!(end, Ok(None)), "{end:?}");
    }

    #[test]
    fn construction_checks_issuers_against_the_descriptor() {
        let anchor = SecretKey::from_seed([1; 32]);
        let seednode = SecretKey::from_seed([2; 32]);
        let delegation = |network: &str| {
            issue_delegation(
                &anchor,
                &DelegationRequest {
                    network: network.to_owned(),
                    seednode: seednode.public(),
                    expires_at: at(DAY),
                    allowed_roles: vec!["ops".to_owned()],
                    allowed_rights: Vec::new(),
                    max_lifetime: Duration::from_secs(DAY),
                },
                t0(),
            )
            .unwrap()
        };
        let both = format!(
            "[[network]]\nname = \"{NET}\"\nanchors = [\"{a}\"]\njoin = \"open\"\n\n\
             [[network]]\nname = \"lab\"\nanchors = [\"{a}\"]\n",
            a = anchor.public()
        );
        let full = Descriptor::parse(&both).unwrap();
        let verifier = Verifier::new(VerifierConfig::default(), full.access_list().unwrap());
        let issuer = |network: &str| {
            Issuer::new(&delegation(network), &verifier, seednode.clone(), t0()).unwrap()
        };
        let store = || SqliteStore::open_in_memory(StoreLimits::default()).unwrap();
        let cfg = ServiceConfig::default;

        let only_lab = Descriptor::parse(&format!(
            "[[network]]\nname = \"lab\"\nanchors = [\"{}\"]\n",
            anchor.public()
        ))
        .unwrap();
        let err = SeedService::new(store(), vec![issuer(NET)], &only_lab, cfg()).unwrap_err();
        assert!(matches!(err, ServiceError::NotInDescriptor { .. }), "{err}");
        let err = SeedService::new(store(), vec![issuer("lab"), issuer("lab")], &full, cfg())
            .unwrap_err();
        assert!(
            matches!(err, ServiceError::DuplicateNetwork { .. }),
            "{err}"
        );
        let err = SeedService::new(store(), vec![], &full, cfg()).unwrap_err();
        assert!(matches!(err, ServiceError::NoIssuers), "{err}");
        // mainnet is open but its delegation cannot grant "member".
        let err = SeedService::new(store(), vec![issuer(NET)], &full, cfg()).unwrap_err();
        assert!(
            matches!(err, ServiceError::DefaultRoleNotDelegated { .. }),
            "{err}"
        );
        // An approval network may lack the default role: the operator names roles.
        assert!(SeedService::new(store(), vec![issuer("lab")], &full, cfg()).is_ok());
        let bad = ServiceConfig {
            invite_code_bytes: 4,
            ..ServiceConfig::default()
        };
        let err = SeedService::new(store(), vec![issuer("lab")], &full, bad).unwrap_err();
        assert!(matches!(err, ServiceError::InvalidConfig { .. }), "{err}");
    }
}
