//! Store notifications between seednodes sharing one PostgreSQL database: the payloads the
//! store sends with `NOTIFY` ([`Notice`]) and the task that holds one `LISTEN` connection and
//! turns them into [`StoreEvent`]s for the join service ([`listen`]).
//!
//! # Invariants
//! - **Notifications are only a wake-up.** Every event names something the service then reads
//!   back from the store; a lost, dropped or duplicated notification delays or repeats a push,
//!   and the nodes' polling remains the fallback. So the queue is bounded and a full queue
//!   drops (counted and logged at debug), never blocks the connection.
//! - **Payloads are hostile input** (anyone who may `NOTIFY` on the database can send one):
//!   at most [`MAX_PAYLOAD`] bytes are parsed, exactly the shapes below are accepted, a peer
//!   must parse as a PeerId; anything else is dropped.
//! - **One connection, reopened with bounded back-off.** When the server goes away the task
//!   warns once per outage (with the reason, never the url or a password), retries after
//!   100 ms, doubling up to `listen_retry_max`, and logs at info when it listens again.
//! - **A silent connection is checked, not trusted.** Every `listen_heartbeat` after its last
//!   answer the task sends `SELECT 1`; no answer within `connect_timeout`
//!   counts as a lost connection, so a network that drops the connection without closing it
//!   costs at most that long, not TCP keepalive's hours.
//!
//! Payload shapes (space separated; ORIGIN is 16 lowercase hex digits, random per store
//! handle, so a seednode ignores what it sent itself):
//! - `token ORIGIN PEER`: a token for PEER (base58) was issued and is not yet delivered;
//! - `revoked ORIGIN`: the revocation set changed.

use std::future::{Future, poll_fn};
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_postgres::{AsyncMessage, Notification};

use crate::postgres::{NOTIFY_CHANNEL, pg_detail};
use crate::store::StoreEvent;

/// Longest payload parsed; longer ones are dropped unread. Ours are at most about 80 bytes.
pub(crate) const MAX_PAYLOAD: usize = 160;

/// First wait before reopening a lost `LISTEN` connection; it doubles from there.
pub(crate) const LISTEN_RETRY_MIN: Duration = Duration::from_millis(100);

/// Hex digits of an origin.
const ORIGIN_LEN: usize = 16;

/// What a store transaction announces to the other seednodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    /// A token for `peer` was issued and is not yet delivered.
    TokenIssued {
        /// Its subject.
        peer: PeerId,
    },
    /// The revocation set changed.
    RevocationsChanged,
}

impl Notice {
    /// The payload announcing this from the store handle `origin`.
    pub(crate) fn payload(&self, origin: &str) -> String {
        match self {
            Notice::TokenIssued { peer } => format!("token {origin} {}", peer.to_base58()),
            Notice::RevocationsChanged => format!("revoked {origin}"),
        }
    }

    /// Parses a payload (hostile input): `(origin, notice)`, or `None` for anything that is
    /// not exactly one of the shapes in the [module documentation](self).
    pub(crate) fn parse(payload: &str) -> Option<(&str, Notice)> {
        if payload.len() > MAX_PAYLOAD {
            return None;
        }
        let mut fields = payload.split(' ');
        let kind = fields.next()?;
        let origin = fields.next().filter(|o| is_origin(o))?;
        let notice = match kind {
            "token" => Notice::TokenIssued {
                peer: PeerId::from_str(fields.next()?).ok()?,
            },
            "revoked" => Notice::RevocationsChanged,
            _ => return None,
        };
        fields.next().is_none().then_some((origin, notice))
    }

    fn event(self) -> StoreEvent {
        match self {
            Notice::TokenIssued { peer } => StoreEvent::TokenIssued { peer },
            Notice::RevocationsChanged => StoreEvent::RevocationsChanged,
        }
    }
}

fn is_origin(text: &str) -> bool {
    text.len() == ORIGIN_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A random origin for a store handle. It only has to differ between the handles sharing a
/// database (it is no secret), so the standard library's randomly keyed hasher suffices.
pub(crate) fn random_origin() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// Where the `LISTEN` task sends what it hears, and how it reconnects.
pub(crate) struct Listener {
    /// The connection settings (the pool's, password included; never logged).
    pub(crate) config: tokio_postgres::Config,
    /// TLS, as the pool's connections use it.
    pub(crate) tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// The origin of the store handle it listens for, whose own notices it skips.
    pub(crate) origin: String,
    /// Longest wait between two connection attempts.
    pub(crate) retry_max: Duration,
    /// Longest one connection attempt (connect, authenticate, `LISTEN`) may take, and longest
    /// the server may take to answer a liveness check.
    pub(crate) connect_timeout: Duration,
    /// How long after the last answer the next liveness check (`SELECT 1`) is sent.
    pub(crate) heartbeat: Duration,
    /// Notifications dropped because the queue was full, over the store handle's life.
    pub(crate) dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the connection settings: they hold the password.
        f.debug_struct("Listener")
            .field("origin", &self.origin)
            .field("retry_max", &self.retry_max)
            .field("connect_timeout", &self.connect_timeout)
            .field("heartbeat", &self.heartbeat)
            .finish_non_exhaustive()
    }
}

/// How one `LISTEN` connection ended.
enum Ended {
    /// The receiver was dropped: stop for good.
    Unwanted,
    /// The connection failed or was lost (the reason, without secrets).
    Lost(String),
}

/// Holds one `LISTEN` connection on [`NOTIFY_CHANNEL`] and feeds `queue` until its receiver is
/// dropped, reconnecting with bounded exponential back-off (see the
/// [module documentation](self)).
pub(crate) async fn listen(listener: Listener, queue: mpsc::Sender<StoreEvent>) {
    let mut retry = LISTEN_RETRY_MIN;
    let mut outage = false;
    loop {
        let mut listening = false;
        let ended = tokio::select! {
            ended = listen_once(&listener, &queue, &mut listening) => ended,
            () = queue.closed() => Ended::Unwanted,
        };
        let reason = match ended {
            Ended::Unwanted => break,
            Ended::Lost(reason) => reason,
        };
        if listening {
            // It had worked: this is a new outage, retried quickly at first.
            retry = LISTEN_RETRY_MIN;
            outage = false;
        }
        if outage {
            tracing::debug!(reason = %reason, retry_in = ?retry, "store notifications still unavailable");
        } else {
            outage = true;
            tracing::warn!(
                reason = %reason,
                "store notification connection lost or unavailable; retrying with back-off \
                 (approvals made on other seednodes reach nodes at their next poll meanwhile)"
            );
        }
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            () = queue.closed() => break,
        }
        retry = retry.saturating_mul(2).min(listener.retry_max);
    }
    tracing::debug!("store notifications stopped: the join service dropped its receiver");
}

/// One connection: connect, `LISTEN`, then forward notifications until it ends. Sets
/// `listening` (and logs at info) once the `LISTEN` is in place.
async fn listen_once(
    listener: &Listener,
    queue: &mpsc::Sender<StoreEvent>,
    listening: &mut bool,
) -> Ended {
    let connect = tokio::time::timeout(
        listener.connect_timeout,
        listener.config.connect(listener.tls.clone()),
    );
    let (client, mut connection) = match connect.await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Ended::Lost(format!("cannot connect: {}", pg_detail(&e))),
        Err(_) => {
            return Ended::Lost(format!(
                "cannot connect within {}",
                humantime::format_duration(listener.connect_timeout)
            ));
        }
    };
    let statement = format!("LISTEN {NOTIFY_CHANNEL}");
    // The one statement in flight, if any: the LISTEN, then a liveness check every
    // `heartbeat` (a connection the network silently dropped would otherwise look like a
    // quiet channel for as long as TCP keepalive takes, hours). Each must be answered within
    // `connect_timeout`.
    let mut query = Some(Box::pin(client.batch_execute(&statement)));
    let mut answer_by = Instant::now() + listener.connect_timeout;
    let mut next_check = None;
    loop {
        let wake_at = if query.is_some() {
            answer_by
        } else {
            next_check.unwrap_or(answer_by)
        };
        // Drive the connection (which carries the statement) and the statement itself.
        let drive = poll_fn(|cx| {
            if let Some(statement) = query.as_mut()
                && let Poll::Ready(result) = statement.as_mut().poll(cx)
            {
                return Poll::Ready(Step::Answered(result));
            }
            connection.poll_message(cx).map(|message| match message {
                Some(Ok(AsyncMessage::Notification(n))) => Step::Notification(n),
                Some(Ok(_)) => Step::Notice,
                Some(Err(e)) => Step::Failed(e),
                None => Step::Closed,
            })
        });
        let step = tokio::time::timeout_at(wake_at, drive)
            .await
            .unwrap_or(Step::Due);
        match step {
            Step::Due if query.is_some() => {
                return Ended::Lost(if *listening {
                    "the server did not answer a liveness check in time".to_owned()
                } else {
                    "LISTEN was not acknowledged in time".to_owned()
                });
            }
            Step::Due => {
                query = Some(Box::pin(client.batch_execute("SELECT 1")));
                answer_by = Instant::now() + listener.connect_timeout;
            }
            Step::Answered(Ok(())) => {
                query = None;
                next_check = Some(Instant::now() + listener.heartbeat);
                if !*listening {
                    *listening = true;
                    tracing::info!(
                        channel = NOTIFY_CHANNEL,
                        "listening for store notifications"
                    );
                }
            }
            Step::Answered(Err(e)) => {
                let doing = if *listening {
                    "liveness check"
                } else {
                    "LISTEN"
                };
                return Ended::Lost(format!("{doing} failed: {}", pg_detail(&e)));
            }
            Step::Notification(n) => {
                if n.channel() != NOTIFY_CHANNEL {
                    continue;
                }
                let Some((origin, notice)) = Notice::parse(n.payload()) else {
                    tracing::debug!(
                        reason = "malformed",
                        bytes = n.payload().len(),
                        "store notification dropped"
                    );
                    continue;
                };
                if origin == listener.origin {
                    continue;
                }
                match queue.try_send(notice.event()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(event)) => {
                        let dropped = listener.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                        tracing::debug!(
                            reason = "queue_full",
                            ?event,
                            dropped,
                            "store notification dropped; polling delivers instead"
                        );
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return Ended::Unwanted,
                }
            }
            Step::Notice => {}
            Step::Failed(e) => return Ended::Lost(pg_detail(&e)),
            Step::Closed => {
                return Ended::Lost("the server closed the connection".to_owned());
            }
        }
    }
}

/// What driving the `LISTEN` connection produced.
enum Step {
    /// The statement in flight (the `LISTEN` or a liveness check) was answered.
    Answered(Result<(), tokio_postgres::Error>),
    /// The statement in flight is overdue, or the next liveness check is due.
    Due,
    /// A notification came.
    Notification(Notification),
    /// A notice (a server message that is not an error) came; ignored.
    Notice,
    /// The connection failed.
    Failed(tokio_postgres::Error),
    /// The server closed it.
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let origin = random_origin();
        assert!(is_origin(&origin), "{origin}");
        let peer = PeerId::random();
        for notice in [Notice::TokenIssued { peer }, Notice::RevocationsChanged] {
            let payload = notice.payload(&origin);
            assert!(payload.len() <= MAX_PAYLOAD, "{payload}");
            assert_eq!(Notice::parse(&payload), Some((origin.as_str(), notice)));
        }
        assert_ne!(random_origin(), origin, "each handle has its own origin");
    }

    #[test]
    fn hostile_payloads_are_dropped() {
        let peer = PeerId::random().to_base58();
        let origin = "0123456789abcdef";
        let long = format!("token {origin} {}", "1".repeat(MAX_PAYLOAD));
        for bad in [
            String::new(),
            "token".to_owned(),
            format!("token {origin}"),
            format!("token {origin} not-a-peer"),
            format!("token {origin} {peer} extra"),
            format!("token  {origin} {peer}"),
            format!("token 0123456789ABCDEF {peer}"),
            format!("token 0123 {peer}"),
            format!("revoked {origin} {peer}"),
            format!("revoked {origin} "),
            format!("other {origin}"),
            long,
            format!("token {origin} {peer}\u{0}"),
        ] {
            assert_eq!(Notice::parse(&bad), None, "{bad:?}");
        }
    }
}
