//! The operator command line's client side: it turns `seednode pending`, `approve`, ... into
//! typed control requests ([`cordon_node::api::Request`]) for the running daemon and renders
//! the typed answers for people.
//!
//! `--json` prints the answer as the daemon sent it, so scripts see exactly what the daemon
//! said. Rendering is pure (it is handed `now`) so tables are tested without a daemon. Text
//! from the network (labels, peer ids) is shown with control characters replaced, so a label
//! cannot rewrite the terminal.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use cordon_host::control::{ControlError, call_blocking, socket_path};
use cordon_node::api::{
    InviteCreated, IssuedTokenView, JoinRequestView, Published, Reloaded, Request, Revoked, Status,
};
use cordon_protocol::NetworkName;
use libp2p::PeerId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// How long the CLI waits for the daemon's answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What `seednode revoke` revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    /// Every unrevoked token of a peer, on one network or all.
    Peer {
        /// The peer.
        peer: PeerId,
        /// Only this network.
        network: Option<NetworkName>,
    },
    /// One issued token, by its id (from `seednode members`).
    Token(u64),
}

/// One operator command, as parsed from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorCommand {
    /// List pending join requests.
    Pending {
        /// Only this network.
        network: Option<NetworkName>,
    },
    /// Approve a pending request and issue its token.
    Approve {
        /// The request id.
        id: u64,
        /// Roles to grant; empty means the daemon's default roles.
        roles: Vec<String>,
        /// Explicit rights to grant on top of the roles (e.g. `dht_put`).
        rights: Vec<String>,
        /// Token lifetime; `None` means the network's default.
        ttl: Option<Duration>,
    },
    /// Deny a pending request.
    Deny {
        /// The request id.
        id: u64,
        /// A note sent to the requesting node.
        reason: Option<String>,
    },
    /// Deny every pending request matching all the criteria given.
    DenyPending {
        /// Only this network.
        network: Option<NetworkName>,
        /// Only requests at least this old.
        older_than: Option<Duration>,
        /// Only requests with exactly this label.
        label: Option<String>,
        /// A note sent to each requesting node.
        reason: Option<String>,
    },
    /// List current members.
    Members {
        /// Only this network.
        network: Option<NetworkName>,
    },
    /// Create an invite code.
    Invite {
        /// The network it admits to.
        network: NetworkName,
        /// How many joins it admits; `None` means 1.
        uses: Option<u32>,
        /// How long it is valid; `None` means a day.
        ttl: Option<Duration>,
    },
    /// Publish an anchor-signed revocation file.
    PublishRevocation {
        /// The file's bytes.
        update: Vec<u8>,
    },
    /// Revoke memberships.
    Revoke {
        /// What to revoke.
        target: RevokeTarget,
        /// Why (kept in the revocation record).
        reason: Option<String>,
    },
    /// The daemon's status.
    Status,
    /// Re-read the descriptor and filter rules (a new delegation needs a restart).
    Reload,
}

fn secs(ttl: Option<&Duration>, flag: &str) -> anyhow::Result<Option<u64>> {
    match ttl {
        None => Ok(None),
        Some(d) if d.as_secs() == 0 => {
            Err(anyhow!("{flag} must be at least 1s (e.g. 30d, 12h, 90m)"))
        }
        Some(d) => Ok(Some(d.as_secs())),
    }
}

impl OperatorCommand {
    /// The control request for the daemon. Fails on a lifetime under a second.
    pub fn request(&self) -> anyhow::Result<Request> {
        Ok(match self {
            Self::Pending { network } => Request::Pending {
                network: network.clone(),
            },
            Self::Approve {
                id,
                roles,
                rights,
                ttl,
            } => Request::Approve {
                id: *id,
                roles: roles.clone(),
                rights: rights.clone(),
                ttl_secs: secs(ttl.as_ref(), "--ttl")?,
            },
            Self::Deny { id, reason } => Request::Deny {
                id: *id,
                reason: reason.clone(),
            },
            Self::DenyPending {
                network,
                older_than,
                label,
                reason,
            } => Request::DenyPending {
                network: network.clone(),
                older_than_secs: older_than.map(|d| d.as_secs()),
                label: label.clone(),
                reason: reason.clone(),
            },
            Self::Members { network } => Request::Members {
                network: network.clone(),
            },
            Self::Invite { network, uses, ttl } => Request::Invite {
                network: network.clone(),
                uses: *uses,
                ttl_secs: secs(ttl.as_ref(), "--ttl")?,
            },
            Self::Revoke { target, reason } => match target {
                RevokeTarget::Peer { peer, network } => Request::Revoke {
                    peer: Some(*peer),
                    network: network.clone(),
                    token_id: None,
                    reason: reason.clone(),
                },
                RevokeTarget::Token(id) => Request::Revoke {
                    peer: None,
                    network: None,
                    token_id: Some(*id),
                    reason: reason.clone(),
                },
            },
            Self::Status => Request::Status {},
            Self::Reload => Request::Reload {},
            Self::PublishRevocation { update } => Request::PublishRevocation {
                update: hex::encode(update),
            },
        })
    }

    /// Sends the command to the seednode running on `data_dir` and returns what to print:
    /// the answer as JSON with `json`, else rendered for people (`now` in unix seconds).
    pub fn run(&self, data_dir: &Path, json: bool, now: u64) -> anyhow::Result<String> {
        let request = self.request()?;
        match self {
            Self::Pending { network } => {
                let list: Vec<JoinRequestView> = call(data_dir, &request)?;
                output(json, &list, |l| render_pending(l, network.as_ref(), now))
            }
            Self::Approve { .. } => {
                let token: IssuedTokenView = call(data_dir, &request)?;
                output(json, &token, |t| render_approved(t, now))
            }
            Self::Deny { .. } => {
                let row: JoinRequestView = call(data_dir, &request)?;
                output(json, &row, render_denied)
            }
            Self::DenyPending { .. } => {
                let list: Vec<JoinRequestView> = call(data_dir, &request)?;
                output(json, &list, |l| render_denied_pending(l))
            }
            Self::Members { network } => {
                let list: Vec<IssuedTokenView> = call(data_dir, &request)?;
                output(json, &list, |l| render_members(l, network.as_ref(), now))
            }
            Self::Invite { .. } => {
                let invite: InviteCreated = call(data_dir, &request)?;
                output(json, &invite, |i| render_invite(i, now))
            }
            Self::Revoke { target, .. } => {
                let revoked: Revoked = call(data_dir, &request)?;
                output(json, &revoked, |r| render_revoked(r, target, now))
            }
            Self::PublishRevocation { .. } => {
                let published: Published = call(data_dir, &request)?;
                output(json, &published, |p| {
                    format!(
                        "published: network {} now holds version {} of the revocations signed by {}",
                        safe(p.network.as_str()),
                        p.version,
                        safe(&p.signer)
                    )
                })
            }
            Self::Reload => {
                let reloaded: Reloaded = call(data_dir, &request)?;
                // Local facts only (paths, keys, network names): nothing from the network.
                output(json, &reloaded, |r| r.text().trim_end().to_owned())
            }
            Self::Status => {
                let status: Status = call(data_dir, &request)?;
                output(json, &status, |s| {
                    serde_json::to_value(s).map_or_else(|e| e.to_string(), |v| render_value(&v))
                })
            }
        }
    }
}

fn output<T: Serialize>(
    json: bool,
    value: &T,
    render: impl FnOnce(&T) -> String,
) -> anyhow::Result<String> {
    if json {
        Ok(serde_json::to_string_pretty(value)?)
    } else {
        Ok(render(value))
    }
}

/// Sends `request` to the seednode running on `data_dir` and returns its answer.
///
/// Errors say how to fix the problem (start the daemon, check `--data`).
pub fn call<T: DeserializeOwned>(data_dir: &Path, request: &Request) -> anyhow::Result<T> {
    let socket = socket_path(data_dir);
    call_blocking(&socket, request, CALL_TIMEOUT).map_err(|e| match e {
        ControlError::NotRunning { .. } => anyhow!(
            "no seednode is running with data directory {dir} (nothing listens on {sock}); \
             start it with `seednode run --data {dir} --networks FILE --delegation FILE`, or \
             point --data (or $CORDON_DATA) at the running seednode's directory",
            dir = data_dir.display(),
            sock = socket.display()
        ),
        ControlError::Remote(message) => anyhow!("the seednode refused the command: {message}"),
        other => anyhow!("talking to the seednode at {}: {other}", socket.display()),
    })
}

// ---- rendering ----------------------------------------------------------------------------

/// Left-aligned columns separated by two spaces; trailing spaces trimmed.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            let pad = width.saturating_sub(cell.chars().count());
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', pad + 2));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.pop();
    out
}

/// A compact duration: `42s`, `5m`, `3h20m`, `12d4h`.
pub fn compact_duration(secs: u64) -> String {
    const MINUTE: u64 = 60;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    match secs {
        s if s < MINUTE => format!("{s}s"),
        s if s < HOUR => format!("{}m", s / MINUTE),
        s if s < DAY => match (s % HOUR) / MINUTE {
            0 => format!("{}h", s / HOUR),
            m => format!("{}h{m}m", s / HOUR),
        },
        s => match (s % DAY) / HOUR {
            0 => format!("{}d", s / DAY),
            h => format!("{}d{h}h", s / DAY),
        },
    }
}

/// An expiry relative to `now`: `in 29d23h` or `expired`.
fn expires_in(expires_at: u64, now: u64) -> String {
    if expires_at > now {
        format!("in {}", compact_duration(expires_at - now))
    } else {
        "expired".to_owned()
    }
}

/// Text from the network made safe for a terminal: control characters become `?`.
fn safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn or_dash(value: Option<&str>) -> String {
    value.map_or_else(|| "-".to_owned(), safe)
}

fn roles(roles: &[String]) -> String {
    if roles.is_empty() {
        return "-".to_owned();
    }
    roles.iter().map(|r| safe(r)).collect::<Vec<_>>().join(",")
}

fn on_network(network: Option<&NetworkName>) -> String {
    network
        .map(|n| format!(" on network {}", safe(n.as_str())))
        .unwrap_or_default()
}

fn render_pending(list: &[JoinRequestView], network: Option<&NetworkName>, now: u64) -> String {
    if list.is_empty() {
        return format!("no pending join requests{}", on_network(network));
    }
    let body: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            let mut label = or_dash(r.label.as_deref());
            if r.invite_used {
                label.push_str(" (invite)");
            }
            vec![
                r.id.to_string(),
                safe(r.network.as_str()),
                safe(&r.peer),
                label,
                compact_duration(now.saturating_sub(r.created_at)),
            ]
        })
        .collect();
    table(&["ID", "NETWORK", "PEER", "LABEL", "AGE"], &body)
}

fn render_approved(token: &IssuedTokenView, now: u64) -> String {
    format!(
        "approved join request {}: token {} for peer {} on network {} (roles {}, expires {}); \
         it is delivered now if the peer is connected, otherwise when it next connects",
        token
            .request_id
            .map_or_else(|| "-".to_owned(), |id| id.to_string()),
        token.token_id,
        safe(&token.peer),
        safe(token.network.as_str()),
        roles(&token.roles),
        expires_in(token.expires_at, now),
    )
}

fn render_denied_pending(list: &[JoinRequestView]) -> String {
    if list.is_empty() {
        return "no pending join request matched; nothing denied".to_owned();
    }
    let mut out = format!("denied {} pending join request(s):", list.len());
    for row in list {
        let _ = write!(
            out,
            "\n  {} {} {} {}",
            row.id,
            safe(row.network.as_str()),
            safe(&row.peer),
            or_dash(row.label.as_deref())
        );
    }
    out
}

fn render_denied(row: &JoinRequestView) -> String {
    let mut line = format!(
        "denied join request {} from peer {} for network {}",
        row.id,
        safe(&row.peer),
        safe(row.network.as_str()),
    );
    if let Some(reason) = &row.deny_reason {
        let _ = write!(line, " (reason: {})", safe(reason));
    }
    line
}

fn member_rows(list: &[IssuedTokenView], now: u64) -> Vec<Vec<String>> {
    list.iter()
        .map(|t| {
            vec![
                t.token_id.to_string(),
                safe(t.network.as_str()),
                safe(&t.peer),
                roles(&t.roles),
                expires_in(t.expires_at, now),
                if t.delivered_at.is_some() {
                    "yes"
                } else {
                    "no"
                }
                .to_owned(),
                match (t.issued_here, t.current_delegation) {
                    (Some(false), _) => "other seednode",
                    (_, Some(true)) => "current",
                    (_, Some(false)) => "earlier",
                    (_, None) => "-",
                }
                .to_owned(),
            ]
        })
        .collect()
}

const MEMBER_HEADERS: &[&str] = &[
    "TOKEN",
    "NETWORK",
    "PEER",
    "ROLES",
    "EXPIRES",
    "DELIVERED",
    "DELEGATION",
];

fn render_members(list: &[IssuedTokenView], network: Option<&NetworkName>, now: u64) -> String {
    if list.is_empty() {
        return format!("no members{}", on_network(network));
    }
    table(MEMBER_HEADERS, &member_rows(list, now))
}

fn render_invite(invite: &InviteCreated, now: u64) -> String {
    format!(
        "invite code for network {}: {}\nuses: {}, expires {}\nthe code is shown only once; \
         give it to the joining node's operator",
        safe(invite.network.as_str()),
        safe(&invite.code),
        invite.uses,
        expires_in(invite.expires_at, now),
    )
}

fn render_revoked(revoked: &Revoked, target: &RevokeTarget, now: u64) -> String {
    if revoked.revoked.is_empty() {
        let who = match target {
            RevokeTarget::Peer { peer, network } => {
                format!("peer {peer}{}", on_network(network.as_ref()))
            }
            RevokeTarget::Token(id) => format!("token {id}"),
        };
        return format!("nothing to revoke: {who} holds no unrevoked token");
    }
    format!(
        "revoked {} token(s); revocation set is now version {}\n{}",
        revoked.revoked.len(),
        revoked.revocation_version,
        table(MEMBER_HEADERS, &member_rows(&revoked.revoked, now))
    )
}

/// Any JSON value as indented `key: value` lines; arrays of objects become tables.
pub fn render_value(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, 0);
    out.trim_end().to_owned()
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => safe(s),
        Value::Null => "-".to_owned(),
        Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(","),
        other => safe(&other.to_string()),
    }
}

fn is_scalar_like(value: &Value) -> bool {
    match value {
        Value::Object(_) => false,
        Value::Array(items) => items.iter().all(|i| !i.is_object() && !i.is_array()),
        _ => true,
    }
}

fn write_value(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                if is_scalar_like(field) {
                    let _ = writeln!(out, "{pad}{}: {}", safe(key), scalar(field));
                } else {
                    let _ = writeln!(out, "{pad}{}:", safe(key));
                    write_value(out, field, indent + 2);
                }
            }
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
            let mut headers: Vec<String> = Vec::new();
            for item in items {
                if let Value::Object(fields) = item {
                    for key in fields.keys() {
                        if !headers.contains(key) {
                            headers.push(key.clone());
                        }
                    }
                }
            }
            let upper: Vec<String> = headers.iter().map(|h| safe(&h.to_uppercase())).collect();
            let header_refs: Vec<&str> = upper.iter().map(String::as_str).collect();
            let body: Vec<Vec<String>> = items
                .iter()
                .map(|item| {
                    headers
                        .iter()
                        .map(|h| item.get(h).map(scalar).unwrap_or_else(|| "-".to_owned()))
                        .collect()
                })
                .collect();
            for line in table(&header_refs, &body).lines() {
                let _ = writeln!(out, "{pad}{line}");
            }
        }
        Value::Array(items) => {
            for item in items {
                if is_scalar_like(item) {
                    let _ = writeln!(out, "{pad}- {}", scalar(item));
                } else {
                    let _ = writeln!(out, "{pad}-");
                    write_value(out, item, indent + 2);
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", scalar(other));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    const PEER: &str = "12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp";

    fn net(name: &str) -> NetworkName {
        name.parse().unwrap()
    }

    fn request(
        id: u64,
        network: &str,
        label: Option<&str>,
        invite: bool,
        age: u64,
    ) -> JoinRequestView {
        JoinRequestView {
            id,
            network: net(network),
            peer: PEER.into(),
            label: label.map(str::to_owned),
            invite_used: invite,
            created_at: NOW - age,
            status: "pending".into(),
            decided_at: None,
            decided_by_policy: None,
            deny_reason: None,
        }
    }

    fn token(
        id: u64,
        network: &str,
        peer: &str,
        roles: &[&str],
        expires_in: u64,
        delivered: bool,
    ) -> IssuedTokenView {
        IssuedTokenView {
            token_id: id,
            request_id: Some(3),
            network: net(network),
            peer: peer.into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            rights: Vec::new(),
            issued_at: NOW,
            expires_at: NOW + expires_in,
            revocation_id: "ab".into(),
            delivered_at: delivered.then_some(NOW - 5),
            revoked_at: None,
            current_delegation: Some(delivered),
            issued_here: Some(true),
        }
    }

    #[test]
    fn table_aligns_columns_and_trims() {
        let out = table(
            &["ID", "NAME", "X"],
            &[
                vec!["1".into(), "alpha".into(), String::new()],
                vec!["123".into(), "b".into(), "z".into()],
            ],
        );
        assert_eq!(out, "ID   NAME   X\n1    alpha\n123  b      z");
    }

    #[test]
    fn table_counts_characters_not_bytes() {
        let out = table(&["L", "N"], &[vec!["Zoë".into(), "1".into()]]);
        assert_eq!(out, "L    N\nZoë  1");
    }

    #[test]
    fn compact_durations() {
        assert_eq!(compact_duration(0), "0s");
        assert_eq!(compact_duration(59), "59s");
        assert_eq!(compact_duration(60), "1m");
        assert_eq!(compact_duration(3599), "59m");
        assert_eq!(compact_duration(3600), "1h");
        assert_eq!(compact_duration(3600 + 20 * 60), "1h20m");
        assert_eq!(compact_duration(86_400), "1d");
        assert_eq!(compact_duration(12 * 86_400 + 4 * 3600 + 59), "12d4h");
    }

    #[test]
    fn pending_table() {
        let result = [
            request(3, "mainnet", Some("alice laptop"), false, 90),
            request(12, "lab.example.org", None, true, 7200),
        ];
        let out = render_pending(&result, None, NOW);
        let expected = format!(
            "ID  NETWORK          PEER{pad}  LABEL         AGE\n\
             3   mainnet          {PEER}  alice laptop  1m\n\
             12  lab.example.org  {PEER}  - (invite)    2h",
            pad = " ".repeat(PEER.len() - 4)
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn empty_lists_say_so() {
        assert_eq!(
            render_pending(&[], Some(&net("mainnet")), NOW),
            "no pending join requests on network mainnet"
        );
        assert_eq!(render_members(&[], None, NOW), "no members");
    }

    #[test]
    fn labels_cannot_drive_the_terminal() {
        let result = [request(1, "m", Some("x\u{1b}[2Jy"), false, 0)];
        let out = render_pending(&result, None, NOW);
        assert!(!out.contains('\u{1b}'), "{out:?}");
        assert!(out.contains("x?[2Jy"), "{out}");
    }

    #[test]
    fn members_table() {
        let mut elsewhere = token(9, "mainnet", "peerC", &["member"], 90, true);
        elsewhere.issued_here = Some(false);
        let result = [
            token(7, "mainnet", "peerA", &["member", "ops"], 30 * 86_400, true),
            token(8, "testnet", "peerB", &["member"], 90, false),
            elsewhere,
        ];
        let out = render_members(&result, None, NOW);
        assert_eq!(
            out,
            "TOKEN  NETWORK  PEER   ROLES       EXPIRES  DELIVERED  DELEGATION\n\
             7      mainnet  peerA  member,ops  in 30d   yes        current\n\
             8      testnet  peerB  member      in 1m    no         earlier\n\
             9      mainnet  peerC  member      in 1m    yes        other seednode"
        );
    }

    #[test]
    fn confirmations_are_one_line() {
        let approved = token(7, "mainnet", "peerA", &["member"], 86_400, false);
        let out = render_approved(&approved, NOW);
        assert!(!out.contains('\n'));
        assert!(
            out.starts_with(
                "approved join request 3: token 7 for peer peerA on network mainnet \
                 (roles member, expires in 1d)"
            ),
            "{out}"
        );

        let denied = JoinRequestView {
            peer: "peerB".into(),
            status: "denied".into(),
            deny_reason: Some("unknown device".into()),
            ..request(4, "mainnet", None, false, 0)
        };
        assert_eq!(
            render_denied(&denied),
            "denied join request 4 from peer peerB for network mainnet (reason: unknown device)"
        );
    }

    #[test]
    fn invite_shows_the_code() {
        let result = InviteCreated {
            code: "00ff".into(),
            network: net("lab"),
            uses: 2,
            expires_at: NOW + 86_400,
            code_prefix: "1234abcd".into(),
        };
        let out = render_invite(&result, NOW);
        assert!(out.starts_with("invite code for network lab: 00ff\nuses: 2, expires in 1d"));
    }

    #[test]
    fn revoke_renders_rows_or_nothing() {
        let peer: PeerId = PEER.parse().unwrap();
        let target = RevokeTarget::Peer {
            peer,
            network: Some(net("mainnet")),
        };
        let none = Revoked {
            revoked: Vec::new(),
            revocation_version: 3,
        };
        assert_eq!(
            render_revoked(&none, &target, NOW),
            format!("nothing to revoke: peer {PEER} on network mainnet holds no unrevoked token")
        );
        let result = Revoked {
            revoked: vec![token(7, "mainnet", "peerA", &["member"], 60, false)],
            revocation_version: 4,
        };
        let out = render_revoked(&result, &target, NOW);
        assert!(
            out.starts_with("revoked 1 token(s); revocation set is now version 4\nTOKEN"),
            "{out}"
        );
    }

    #[test]
    fn status_renders_nested_values() {
        // Keys in alphabetical order, so the expectation holds whether or not serde_json
        // preserves insertion order.
        let status = json!({
            "counts": {"approved": 2, "pending": 1},
            "networks": [
                {"allowed_roles": ["member"], "join": "approval", "name": "mainnet"},
                {"allowed_roles": ["member", "ops"], "join": "invite", "name": "lab"},
            ],
            "revocation_version": 0,
            "service": null,
        });
        assert_eq!(
            render_value(&status),
            "counts:\n  approved: 2\n  pending: 1\nnetworks:\n  \
             ALLOWED_ROLES  JOIN      NAME\n  \
             member         approval  mainnet\n  \
             member,ops     invite    lab\nrevocation_version: 0\nservice: -"
        );
    }

    #[test]
    fn requests_carry_only_given_fields() {
        let cmd = OperatorCommand::Approve {
            id: 5,
            roles: vec![],
            rights: vec![],
            ttl: None,
        };
        let wire = |c: &OperatorCommand| serde_json::to_value(c.request().unwrap()).unwrap();
        assert_eq!(wire(&cmd), json!({"cmd": "approve", "id": 5}));
        let cmd = OperatorCommand::Approve {
            id: 5,
            roles: vec!["ops".into()],
            rights: vec![],
            ttl: Some(Duration::from_secs(3600)),
        };
        assert_eq!(
            wire(&cmd),
            json!({"cmd": "approve", "id": 5, "roles": ["ops"], "ttl_secs": 3600})
        );
        let cmd = OperatorCommand::Revoke {
            target: RevokeTarget::Token(9),
            reason: Some("lost".into()),
        };
        assert_eq!(
            wire(&cmd),
            json!({"cmd": "revoke", "token_id": 9, "reason": "lost"})
        );
        let cmd = OperatorCommand::Invite {
            network: net("lab"),
            uses: None,
            ttl: Some(Duration::from_millis(10)),
        };
        assert!(cmd.request().is_err(), "sub-second ttl is refused");
    }
}
