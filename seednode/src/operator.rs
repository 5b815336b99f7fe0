//! The operator command line's client side: it turns `seednode pending`, `approve`, ... into
//! control requests for the running daemon and renders the answers for people.
//!
//! The daemon's answers are the JSON values [`crate::service::SeedService`] builds; `--json`
//! prints them unchanged, so scripts see exactly what the daemon said. Rendering is pure (it is
//! handed `now`) so tables are tested without a daemon. Text from the network (labels, peer
//! ids) is shown with control characters replaced, so a label cannot rewrite the terminal.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use cordon_host::control::{ControlError, call_blocking, socket_path};
use serde_json::{Map, Value, json};

/// How long the CLI waits for the daemon's answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What `seednode revoke` revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    /// Every unrevoked token of a peer, on one network or all.
    Peer {
        /// The peer id.
        peer: String,
        /// Only this network.
        network: Option<String>,
    },
    /// One issued token, by its id (from `seednode members`).
    Token(i64),
}

/// One operator command, as parsed from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorCommand {
    /// List pending join requests.
    Pending {
        /// Only this network.
        network: Option<String>,
    },
    /// Approve a pending request and issue its token.
    Approve {
        /// The request id.
        id: i64,
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
        id: i64,
        /// A note sent to the requesting node.
        reason: Option<String>,
    },
    /// List current members.
    Members {
        /// Only this network.
        network: Option<String>,
    },
    /// Create an invite code.
    Invite {
        /// The network it admits to.
        network: String,
        /// How many joins it admits; `None` means 1.
        uses: Option<u32>,
        /// How long it is valid; `None` means a day.
        ttl: Option<Duration>,
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
}

impl OperatorCommand {
    /// The control request for the daemon. Fails on a lifetime under a second.
    pub fn request(&self) -> anyhow::Result<Value> {
        let secs = |ttl: &Option<Duration>, flag: &str| -> anyhow::Result<Option<u64>> {
            match ttl {
                None => Ok(None),
                Some(d) if d.as_secs() == 0 => {
                    Err(anyhow!("{flag} must be at least 1s (e.g. 30d, 12h, 90m)"))
                }
                Some(d) => Ok(Some(d.as_secs())),
            }
        };
        let mut request = Map::new();
        let mut put = |key: &str, value: Value| {
            if !value.is_null() {
                request.insert(key.to_owned(), value);
            }
        };
        match self {
            Self::Pending { network } => {
                put("cmd", json!("pending"));
                put("network", json!(network));
            }
            Self::Approve {
                id,
                roles,
                rights,
                ttl,
            } => {
                put("cmd", json!("approve"));
                put("id", json!(id));
                if !roles.is_empty() {
                    put("roles", json!(roles));
                }
                if !rights.is_empty() {
                    put("rights", json!(rights));
                }
                put("ttl_secs", json!(secs(ttl, "--ttl")?));
            }
            Self::Deny { id, reason } => {
                put("cmd", json!("deny"));
                put("id", json!(id));
                put("reason", json!(reason));
            }
            Self::Members { network } => {
                put("cmd", json!("members"));
                put("network", json!(network));
            }
            Self::Invite { network, uses, ttl } => {
                put("cmd", json!("invite"));
                put("network", json!(network));
                put("uses", json!(uses));
                put("ttl_secs", json!(secs(ttl, "--ttl")?));
            }
            Self::Revoke { target, reason } => {
                put("cmd", json!("revoke"));
                match target {
                    RevokeTarget::Peer { peer, network } => {
                        put("peer", json!(peer));
                        put("network", json!(network));
                    }
                    RevokeTarget::Token(id) => put("token_id", json!(id)),
                }
                put("reason", json!(reason));
            }
            Self::Status => put("cmd", json!("status")),
        }
        Ok(Value::Object(request))
    }

    /// The daemon's `result` for this command, for people. `now` is unix seconds.
    pub fn render(&self, result: &Value, now: u64) -> String {
        match self {
            Self::Pending { network } => render_pending(result, network.as_deref(), now),
            Self::Approve { .. } => render_approved(result, now),
            Self::Deny { .. } => render_denied(result),
            Self::Members { network } => render_members(result, network.as_deref(), now),
            Self::Invite { .. } => render_invite(result, now),
            Self::Revoke { target, .. } => render_revoked(result, target, now),
            Self::Status => render_value(result),
        }
    }
}

/// Sends `request` to the seednode running on `data_dir` and returns its result.
///
/// Errors say how to fix the problem (start the daemon, check `--data`).
pub fn call(data_dir: &Path, request: &Value) -> anyhow::Result<Value> {
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

fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => safe(s),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => safe(&other.to_string()),
    }
}

fn number(value: &Value, key: &str) -> Option<u64> {
    value.get(key).and_then(Value::as_u64)
}

fn roles(value: &Value) -> String {
    match value.get("roles") {
        Some(Value::Array(roles)) => roles
            .iter()
            .map(|r| r.as_str().map(safe).unwrap_or_else(|| safe(&r.to_string())))
            .collect::<Vec<_>>()
            .join(","),
        _ => "-".to_owned(),
    }
}

fn rows(result: &Value) -> &[Value] {
    result.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn on_network(network: Option<&str>) -> String {
    network
        .map(|n| format!(" on network {}", safe(n)))
        .unwrap_or_default()
}

fn render_pending(result: &Value, network: Option<&str>, now: u64) -> String {
    let list = rows(result);
    if list.is_empty() {
        return format!("no pending join requests{}", on_network(network));
    }
    let body: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            let mut label = text(r, "label");
            if r.get("invite_used") == Some(&Value::Bool(true)) {
                label.push_str(" (invite)");
            }
            vec![
                text(r, "id"),
                text(r, "network"),
                text(r, "peer"),
                label,
                number(r, "created_at")
                    .map(|t| compact_duration(now.saturating_sub(t)))
                    .unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    table(&["ID", "NETWORK", "PEER", "LABEL", "AGE"], &body)
}

fn render_approved(result: &Value, now: u64) -> String {
    format!(
        "approved join request {}: token {} for peer {} on network {} (roles {}, expires {}); \
         it is delivered now if the peer is connected, otherwise when it next connects",
        text(result, "request_id"),
        text(result, "token_id"),
        text(result, "peer"),
        text(result, "network"),
        roles(result),
        number(result, "expires_at")
            .map(|t| expires_in(t, now))
            .unwrap_or_else(|| "-".to_owned()),
    )
}

fn render_denied(result: &Value) -> String {
    let mut line = format!(
        "denied join request {} from peer {} for network {}",
        text(result, "id"),
        text(result, "peer"),
        text(result, "network"),
    );
    if let Some(Value::String(reason)) = result.get("deny_reason") {
        let _ = write!(line, " (reason: {})", safe(reason));
    }
    line
}

fn member_rows(list: &[Value], now: u64) -> Vec<Vec<String>> {
    list.iter()
        .map(|t| {
            vec![
                text(t, "token_id"),
                text(t, "network"),
                text(t, "peer"),
                roles(t),
                number(t, "expires_at")
                    .map(|e| expires_in(e, now))
                    .unwrap_or_else(|| "-".to_owned()),
                if t.get("delivered_at").is_some_and(|d| !d.is_null()) {
                    "yes".to_owned()
                } else {
                    "no".to_owned()
                },
            ]
        })
        .collect()
}

const MEMBER_HEADERS: &[&str] = &["TOKEN", "NETWORK", "PEER", "ROLES", "EXPIRES", "DELIVERED"];

fn render_members(result: &Value, network: Option<&str>, now: u64) -> String {
    let list = rows(result);
    if list.is_empty() {
        return format!("no members{}", on_network(network));
    }
    table(MEMBER_HEADERS, &member_rows(list, now))
}

fn render_invite(result: &Value, now: u64) -> String {
    format!(
        "invite code for network {}: {}\nuses: {}, expires {}\nthe code is shown only once; \
         give it to the joining node's operator",
        text(result, "network"),
        text(result, "code"),
        text(result, "uses"),
        number(result, "expires_at")
            .map(|t| expires_in(t, now))
            .unwrap_or_else(|| "-".to_owned()),
    )
}

fn render_revoked(result: &Value, target: &RevokeTarget, now: u64) -> String {
    let list = result.get("revoked").map(rows).unwrap_or_default();
    let version = text(result, "revocation_version");
    if list.is_empty() {
        let who = match target {
            RevokeTarget::Peer { peer, network } => {
                format!("peer {}{}", safe(peer), on_network(network.as_deref()))
            }
            RevokeTarget::Token(id) => format!("token {id}"),
        };
        return format!("nothing to revoke: {who} holds no unrevoked token");
    }
    format!(
        "revoked {} token(s); revocation set is now version {version}\n{}",
        list.len(),
        table(MEMBER_HEADERS, &member_rows(list, now))
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

    const NOW: u64 = 1_700_000_000;
    const PEER: &str = "12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp";

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
        let result = json!([
            {"id": 3, "network": "mainnet", "peer": PEER, "label": "alice laptop",
             "invite_used": false, "created_at": NOW - 90},
            {"id": 12, "network": "lab.example.org", "peer": PEER, "label": null,
             "invite_used": true, "created_at": NOW - 7200},
        ]);
        let out = OperatorCommand::Pending { network: None }.render(&result, NOW);
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
        let cmd = OperatorCommand::Pending {
            network: Some("mainnet".into()),
        };
        assert_eq!(
            cmd.render(&json!([]), NOW),
            "no pending join requests on network mainnet"
        );
        let cmd = OperatorCommand::Members { network: None };
        assert_eq!(cmd.render(&json!([]), NOW), "no members");
    }

    #[test]
    fn labels_cannot_drive_the_terminal() {
        let result = json!([{"id": 1, "network": "m", "peer": "p",
                             "label": "x\u{1b}[2Jy", "created_at": NOW}]);
        let out = OperatorCommand::Pending { network: None }.render(&result, NOW);
        assert!(!out.contains('\u{1b}'), "{out:?}");
        assert!(out.contains("x?[2Jy"), "{out}");
    }

    #[test]
    fn members_table() {
        let result = json!([
            {"token_id": 7, "request_id": 3, "network": "mainnet", "peer": "peerA",
             "roles": ["member", "ops"], "issued_at": NOW - 10, "expires_at": NOW + 30 * 86_400,
             "revocation_id": "ab", "delivered_at": NOW - 5, "revoked_at": null},
            {"token_id": 8, "request_id": null, "network": "testnet", "peer": "peerB",
             "roles": ["member"], "issued_at": NOW, "expires_at": NOW + 90,
             "revocation_id": "cd", "delivered_at": null, "revoked_at": null},
        ]);
        let out = OperatorCommand::Members { network: None }.render(&result, NOW);
        assert_eq!(
            out,
            "TOKEN  NETWORK  PEER   ROLES       EXPIRES  DELIVERED\n\
             7      mainnet  peerA  member,ops  in 30d   yes\n\
             8      testnet  peerB  member      in 1m    no"
        );
    }

    #[test]
    fn confirmations_are_one_line() {
        let approved = json!({"token_id": 7, "request_id": 3, "network": "mainnet",
            "peer": "peerA", "roles": ["member"], "issued_at": NOW,
            "expires_at": NOW + 86_400, "delivered_at": null, "revoked_at": null});
        let cmd = OperatorCommand::Approve {
            id: 3,
            roles: vec![],
            rights: vec![],
            ttl: None,
        };
        let out = cmd.render(&approved, NOW);
        assert!(!out.contains('\n'));
        assert!(
            out.starts_with(
                "approved join request 3: token 7 for peer peerA on network mainnet \
                 (roles member, expires in 1d)"
            ),
            "{out}"
        );

        let denied = json!({"id": 4, "network": "mainnet", "peer": "peerB",
            "status": "denied", "deny_reason": "unknown device"});
        let cmd = OperatorCommand::Deny {
            id: 4,
            reason: None,
        };
        assert_eq!(
            cmd.render(&denied, NOW),
            "denied join request 4 from peer peerB for network mainnet (reason: unknown device)"
        );
    }

    #[test]
    fn invite_shows_the_code() {
        let result = json!({"code": "00ff", "network": "lab", "uses": 2,
                            "expires_at": NOW + 86_400, "code_prefix": "1234abcd"});
        let cmd = OperatorCommand::Invite {
            network: "lab".into(),
            uses: Some(2),
            ttl: None,
        };
        let out = cmd.render(&result, NOW);
        assert!(out.starts_with("invite code for network lab: 00ff\nuses: 2, expires in 1d"));
    }

    #[test]
    fn revoke_renders_rows_or_nothing() {
        let target = RevokeTarget::Peer {
            peer: "peerA".into(),
            network: Some("mainnet".into()),
        };
        let cmd = OperatorCommand::Revoke {
            target: target.clone(),
            reason: None,
        };
        assert_eq!(
            cmd.render(&json!({"revoked": [], "revocation_version": 3}), NOW),
            "nothing to revoke: peer peerA on network mainnet holds no unrevoked token"
        );
        let result = json!({"revoked": [{"token_id": 7, "network": "mainnet", "peer": "peerA",
            "roles": ["member"], "expires_at": NOW + 60, "delivered_at": null}],
            "revocation_version": 4});
        let out = cmd.render(&result, NOW);
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
        assert_eq!(cmd.request().unwrap(), json!({"cmd": "approve", "id": 5}));
        let cmd = OperatorCommand::Approve {
            id: 5,
            roles: vec!["ops".into()],
            rights: vec![],
            ttl: Some(Duration::from_secs(3600)),
        };
        assert_eq!(
            cmd.request().unwrap(),
            json!({"cmd": "approve", "id": 5, "roles": ["ops"], "ttl_secs": 3600})
        );
        let cmd = OperatorCommand::Revoke {
            target: RevokeTarget::Token(9),
            reason: Some("lost".into()),
        };
        assert_eq!(
            cmd.request().unwrap(),
            json!({"cmd": "revoke", "token_id": 9, "reason": "lost"})
        );
        let cmd = OperatorCommand::Invite {
            network: "lab".into(),
            uses: None,
            ttl: Some(Duration::from_millis(10)),
        };
        assert!(cmd.request().is_err(), "sub-second ttl is refused");
    }
}
