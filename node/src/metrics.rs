//! Prometheus metrics and the scrape endpoint (off unless `--metrics ADDR` is given).
//!
//! Every metric is registered here with its help text; the event loop only increments them.
//! The HTTP endpoint serves `GET /metrics` and nothing else, reads at most 8 KiB of request,
//! and is bounded by [`MetricsServerConfig`]: clients at once in total and per source address
//! (so one client reconnecting cannot hold every slot and starve the scraper), a short deadline
//! for the request head, and one for the whole answer. Bind it to loopback (or a management
//! network) and let the scraper reach it there: the numbers describe the node's peers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cordon_host::config::{Invalid, duration_in_range, in_range};
use serde::{Deserialize, Serialize};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Label: an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// e.g. `established`, `closed`, `auth_timeout`, `filtered`.
    pub outcome: String,
}

/// Labels of a membership check.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// `accepted` or `rejected`.
    pub result: String,
    /// Stable reason code (`none` when accepted).
    pub reason: String,
}

/// Labels of a remote command.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// The command.
    pub command: String,
    /// `ok`, or the error code.
    pub outcome: String,
}

/// Label: a network.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NetworkLabel {
    /// The network name.
    pub network: String,
}

/// The node's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Connections by outcome.
    pub connections: Family<OutcomeLabel, Counter>,
    /// Membership checks by result and reason.
    pub membership_checks: Family<CheckLabels, Counter>,
    /// Time to verify one presentation, in seconds.
    pub verification_seconds: Histogram,
    /// Remote commands by command and outcome.
    pub commands: Family<CommandLabels, Counter>,
    /// Calls refused by a rate limit.
    pub rate_limited: Counter,
    /// Bans applied.
    pub bans: Counter,
    /// Routing-table size per network.
    pub routing_table: Family<NetworkLabel, Gauge>,
    /// Seednode: join requests waiting for an operator.
    pub pending_requests: Gauge,
    /// Seednode: join requests approved so far.
    pub approved_requests: Gauge,
    /// Revocation heads applied (new versions from any signer).
    pub revocation_heads: Counter,
    /// Two different heads seen for one (signer, version).
    pub revocation_equivocations: Counter,
    /// Per network: seconds since the newest revocation head was issued.
    pub revocation_head_age: Family<NetworkLabel, Gauge>,
    /// Per network: revoked ids held.
    pub revoked_ids: Family<NetworkLabel, Gauge>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` under the `cordon` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            connections: Family::default(),
            membership_checks: Family::default(),
            verification_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 14)),
            commands: Family::default(),
            rate_limited: Counter::default(),
            bans: Counter::default(),
            routing_table: Family::default(),
            pending_requests: Gauge::default(),
            approved_requests: Gauge::default(),
            revocation_heads: Counter::default(),
            revocation_equivocations: Counter::default(),
            revocation_head_age: Family::default(),
            revoked_ids: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("cordon");
        r.register(
            "connections",
            "Connections by outcome",
            m.connections.clone(),
        );
        r.register(
            "membership_checks",
            "Membership presentations checked, by result and reason code",
            m.membership_checks.clone(),
        );
        r.register(
            "verification_seconds",
            "Time to verify one membership presentation",
            m.verification_seconds.clone(),
        );
        r.register(
            "commands",
            "Remote commands by command and outcome",
            m.commands.clone(),
        );
        r.register(
            "rate_limited",
            "Calls refused by a rate limit",
            m.rate_limited.clone(),
        );
        r.register("bans", "Bans applied", m.bans.clone());
        r.register(
            "routing_table_peers",
            "Peers in each network's routing table",
            m.routing_table.clone(),
        );
        r.register(
            "join_requests_pending",
            "Seednode: join requests waiting for an operator",
            m.pending_requests.clone(),
        );
        r.register(
            "join_requests_approved",
            "Seednode: join requests approved",
            m.approved_requests.clone(),
        );
        r.register(
            "revocation_heads",
            "Revocation heads applied",
            m.revocation_heads.clone(),
        );
        r.register(
            "revocation_equivocations",
            "Two different revocation heads seen for one signer and version",
            m.revocation_equivocations.clone(),
        );
        r.register(
            "revocation_head_age_seconds",
            "Seconds since the newest revocation head of each network was issued",
            m.revocation_head_age.clone(),
        );
        r.register(
            "revoked_ids",
            "Revoked ids held per network",
            m.revoked_ids.clone(),
        );
        m
    }

    /// Counts a connection outcome.
    pub fn connection(&self, outcome: &str) {
        self.connections
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts a membership check.
    pub fn check(&self, reason: Option<&str>) {
        self.membership_checks
            .get_or_create(&CheckLabels {
                result: if reason.is_some() {
                    "rejected"
                } else {
                    "accepted"
                }
                .into(),
                reason: reason.unwrap_or("none").into(),
            })
            .inc();
    }
}

/// Bounds of the metrics endpoint (config section `[metrics_server]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsServerConfig {
    /// Clients served at once; more are disconnected at once. Default 8.
    pub max_clients: usize,
    /// Of those, from one source address. Default 2.
    pub max_clients_per_ip: usize,
    /// Time a client has to send its request head. Default 2 s.
    #[serde(with = "cordon_host::config::duration")]
    pub request_timeout: Duration,
    /// Time to answer one client, request included. Default 5 s.
    #[serde(with = "cordon_host::config::duration")]
    pub response_timeout: Duration,
}

impl Default for MetricsServerConfig {
    fn default() -> Self {
        Self {
            max_clients: 8,
            max_clients_per_ip: 2,
            request_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
        }
    }
}

impl MetricsServerConfig {
    /// Checks every bound.
    pub fn validate(&self) -> Result<(), Invalid> {
        in_range("max_clients", self.max_clients, 1, 1024)?;
        in_range(
            "max_clients_per_ip",
            self.max_clients_per_ip,
            1,
            self.max_clients,
        )?;
        duration_in_range(
            "response_timeout",
            self.response_timeout,
            Duration::from_millis(100),
            Duration::from_secs(300),
        )?;
        duration_in_range(
            "request_timeout",
            self.request_timeout,
            Duration::from_millis(100),
            self.response_timeout,
        )
    }
}

/// Clients being served, per source address.
#[derive(Debug, Default)]
struct Clients {
    per_ip: HashMap<IpAddr, usize>,
    total: usize,
}

/// One client's place; given back when dropped.
#[derive(Debug)]
struct Slot {
    clients: Arc<Mutex<Clients>>,
    ip: IpAddr,
}

impl Slot {
    fn take(
        clients: &Arc<Mutex<Clients>>,
        ip: IpAddr,
        config: &MetricsServerConfig,
    ) -> Option<Self> {
        let mut c = clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mine = c.per_ip.get(&ip).copied().unwrap_or(0);
        if c.total >= config.max_clients || mine >= config.max_clients_per_ip {
            return None;
        }
        c.total += 1;
        c.per_ip.insert(ip, mine + 1);
        Some(Self {
            clients: clients.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Serves `GET /metrics` on `addr` until `shutdown` resolves. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    config: MetricsServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let clients = Arc::new(Mutex::new(Clients::default()));
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = &mut shutdown => return,
            };
            let Ok((stream, from)) = accepted else {
                continue;
            };
            // Over a cap: dropped unanswered, at once.
            let Some(slot) = Slot::take(&clients, from.ip(), &config) else {
                continue;
            };
            let registry = registry.clone();
            let config = config.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let _ = tokio::time::timeout(
                    config.response_timeout,
                    answer(stream, &registry, config.request_timeout),
                )
                .await;
            });
        }
    });
    Ok(local)
}

async fn answer(
    mut stream: tokio::net::TcpStream,
    registry: &Registry,
    request_timeout: Duration,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    let head = async {
        while len < buf.len() {
            let n = stream.read(&mut buf[len..]).await?;
            if n == 0 {
                break;
            }
            len += n;
            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        Ok::<(), std::io::Error>(())
    };
    match tokio::time::timeout(request_timeout, head).await {
        Ok(read) => read?,
        // No request head in time: the slot goes to the next client.
        Err(_) => return Ok(()),
    }
    let request = &buf[..len];
    let response = if request.starts_with(b"GET /metrics ")
        || request.starts_with(b"GET /metrics\r")
    {
        let mut body = String::new();
        match prometheus_client::encoding::text::encode(&mut body, registry) {
            Ok(()) => format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
            Err(_) => "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
        }
    } else {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
    };
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_registered_metrics_and_404_elsewhere() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.connection("established");
        metrics.check(Some("wrong_subject"));
        let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(registry),
            MetricsServerConfig::default(),
            async {
                let _ = stopped.await;
            },
        )
        .await
        .unwrap();
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let body = tokio::time::timeout(Duration::from_secs(5), get("/metrics"))
            .await
            .unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(
            body.contains("cordon_connections_total{outcome=\"established\"} 1"),
            "{body}"
        );
        assert!(
            body.contains(
                "cordon_membership_checks_total{result=\"rejected\",reason=\"wrong_subject\"} 1"
            ),
            "{body}"
        );
        let other = tokio::time::timeout(Duration::from_secs(5), get("/secret"))
            .await
            .unwrap();
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    }
}
