//! Network descriptor files: the access list of a node (DESIGN.md section 2).
//!
//! A node accepts exactly the networks its descriptor lists. The file is TOML with one
//! `[[network]]` table per network (see `node/networks.example.toml`):
//!
//! ```toml
//! [[network]]
//! name = "mainnet"
//! anchors = ["ed25519/<64 hex digits>"]   # 1, or 2 while the anchor key is rotated
//! bootstrap = ["/ip4/192.0.2.1/tcp/4001/p2p/12D3KooW..."]
//! join = "approval"                        # approval | invite | open
//! strict = false
//! private_addresses = false                # true: a LAN, or every node on one host
//! token_lifetime = "30d"
//! renewal_margin = "1d"
//! max_revocation_staleness = "1d"
//! ```
//!
//! Parsing validates everything a later stage would trip over: unknown fields, duplicate
//! networks, anchor count, bootstrap addresses without a peer id, a renewal margin that is not
//! shorter than the token lifetime, and the caps below. Errors name the file, and for TOML
//! errors the line, column and field. They never echo a secret key pasted by mistake into
//! `anchors`.

use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use cordon_membership::{AccessList, AccessListError, NetworkTrust, PublicKey};
use cordon_protocol::NetworkName;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

/// Largest descriptor file read, in bytes (1 MiB).
pub const MAX_DESCRIPTOR_BYTES: u64 = 1024 * 1024;
/// Most networks one descriptor may list.
pub const MAX_NETWORKS: usize = 64;
/// Most anchors per network: the current key and, during a rotation, the next one.
pub const MAX_ANCHORS: usize = 2;
/// Most bootstrap addresses per network.
pub const MAX_BOOTSTRAP: usize = 32;
/// Default token lifetime: 30 days.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Default renewal margin: 1 day.
pub const DEFAULT_RENEWAL_MARGIN: Duration = Duration::from_secs(24 * 60 * 60);

/// The networks a node accepts: the parsed descriptor file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptor {
    /// One entry per network (`[[network]]` tables), in file order.
    #[serde(rename = "network", default)]
    pub networks: Vec<NetworkEntry>,
}

/// One accepted network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkEntry {
    /// The network's name (`mainnet`, `testnet`, `lab.example.org`).
    pub name: NetworkName,
    /// Trusted anchor public keys, `ed25519/<hex>`: one, or two while the anchor is rotated.
    #[serde(with = "anchor_list")]
    pub anchors: Vec<PublicKey>,
    /// Bootstrap seednodes; each address ends in `/p2p/<peer id>`. Default: none.
    #[serde(default, with = "multiaddr_list")]
    pub bootstrap: Vec<Multiaddr>,
    /// How join requests are decided. Default: `approval`.
    #[serde(default)]
    pub join: JoinPolicy,
    /// Refuse peers that also present tokens of other networks. Default: `false`.
    #[serde(default)]
    pub strict: bool,
    /// Accept loopback, link-local and private-range addresses (RFC 1918, fc00::/7,
    /// 100.64.0.0/10) that members claim or are reached at, for this network's routing table and
    /// address book. For a network on a LAN, or with every node on one host. Default: `false`
    /// (such addresses are dropped, so no member can make others dial into their own hosts and
    /// networks).
    #[serde(default)]
    pub private_addresses: bool,
    /// Lifetime of issued membership tokens (humantime, e.g. `"30d"`). Default: 30 days.
    #[serde(default = "default_token_lifetime", with = "crate::config::duration")]
    pub token_lifetime: Duration,
    /// How long before expiry a node renews its token (humantime). Must be shorter than
    /// `token_lifetime`. Default: 1 day.
    #[serde(default = "default_renewal_margin", with = "crate::config::duration")]
    pub renewal_margin: Duration,
    /// How old the newest revocation head of the network may grow before a node admits no new
    /// members of it (`stale_revocations`) until it syncs (humantime, at least 1 s). Seednodes
    /// re-sign their heads every `revocation_refresh` (1 h), so keep this well above that.
    /// Default: 1 day.
    #[serde(
        default = "default_max_revocation_staleness",
        with = "crate::config::duration"
    )]
    pub max_revocation_staleness: Duration,
}

/// Default [`NetworkEntry::max_revocation_staleness`]: 1 day.
pub const DEFAULT_MAX_REVOCATION_STALENESS: Duration = Duration::from_secs(86_400);

fn default_max_revocation_staleness() -> Duration {
    DEFAULT_MAX_REVOCATION_STALENESS
}

fn default_token_lifetime() -> Duration {
    DEFAULT_TOKEN_LIFETIME
}

fn default_renewal_margin() -> Duration {
    DEFAULT_RENEWAL_MARGIN
}

/// How a network's seednodes decide join requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinPolicy {
    /// The operator approves each request (`seednode approve ID`). The default.
    #[default]
    Approval,
    /// A valid single-use invite code approves the request automatically.
    Invite,
    /// Every request is approved automatically (like a public testnet).
    Open,
}

impl JoinPolicy {
    /// The policy's name as written in descriptor files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approval => "approval",
            Self::Invite => "invite",
            Self::Open => "open",
        }
    }
}

impl fmt::Display for JoinPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JoinPolicy {
    type Err = DescriptorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "approval" => Ok(Self::Approval),
            "invite" => Ok(Self::Invite),
            "open" => Ok(Self::Open),
            _ => Err(DescriptorError::UnknownJoinPolicy {
                input: s.chars().take(32).collect(),
            }),
        }
    }
}

/// A descriptor file could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptorError {
    /// The file does not exist.
    #[error(
        "descriptor file {path} does not exist; pass the file listing your networks with --networks (see node/networks.example.toml)"
    )]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read descriptor file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_DESCRIPTOR_BYTES`].
    #[error(
        "descriptor file {path} is larger than {max} bytes; is it the right file? A descriptor lists at most {MAX_NETWORKS} networks"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap.
        max: u64,
    },
    /// A problem with the contents of a file; `problem` says which.
    #[error("descriptor file {path}: {problem}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with its contents.
        problem: Box<DescriptorError>,
    },
    /// The text is not UTF-8.
    #[error("not UTF-8 text; a descriptor is a TOML file")]
    NotUtf8,
    /// TOML syntax error, unknown field, missing field or invalid value.
    #[error("line {line}, column {column}{}: {message}", field_suffix(.field))]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The field being read, when it can be told.
        field: Option<String>,
        /// What is wrong (from the TOML parser; it does not quote the input).
        message: String,
    },
    /// No `[[network]]` table.
    #[error("no network is listed; add a [[network]] table with a name and its anchor key")]
    NoNetworks,
    /// Too many networks.
    #[error("{count} networks are listed; at most {max} are supported")]
    TooManyNetworks {
        /// Networks listed.
        count: usize,
        /// The cap.
        max: usize,
    },
    /// A network appears twice.
    #[error("network `{name}` is listed twice; merge its [[network]] tables into one")]
    DuplicateNetwork {
        /// The network.
        name: NetworkName,
    },
    /// Too few or too many anchors.
    #[error(
        "network `{network}` lists {count} anchors; list its anchor public key (two only while rotating the anchor key)"
    )]
    AnchorCount {
        /// The network.
        network: NetworkName,
        /// Anchors listed.
        count: usize,
    },
    /// The same anchor key is listed twice.
    #[error("network `{network}` lists anchor {anchor} twice; remove the duplicate")]
    DuplicateAnchor {
        /// The network.
        network: NetworkName,
        /// The key.
        anchor: PublicKey,
    },
    /// Too many bootstrap addresses.
    #[error(
        "network `{network}` lists {count} bootstrap addresses; at most {max} are allowed, keep a few reliable seednodes"
    )]
    TooManyBootstrap {
        /// The network.
        network: NetworkName,
        /// Addresses listed.
        count: usize,
        /// The cap.
        max: usize,
    },
    /// A bootstrap address does not name its peer.
    #[error(
        "bootstrap address {addr} of network `{network}` does not end in /p2p/<peer id>; append the seednode's peer id (printed by `seednode init`)"
    )]
    BootstrapWithoutPeerId {
        /// The network.
        network: NetworkName,
        /// The address.
        addr: Multiaddr,
    },
    /// `max_revocation_staleness` is under a second.
    #[error("network `{network}`: max_revocation_staleness must be at least 1s (e.g. \"1d\")")]
    Staleness {
        /// The network.
        network: NetworkName,
    },
    /// The renewal margin is not shorter than the token lifetime.
    #[error(
        "network `{network}`: renewal_margin ({}) must be shorter than token_lifetime ({}); lower renewal_margin or raise token_lifetime",
        humantime::format_duration(*.renewal_margin),
        humantime::format_duration(*.token_lifetime)
    )]
    RenewalMargin {
        /// The network.
        network: NetworkName,
        /// The margin given.
        renewal_margin: Duration,
        /// The lifetime given.
        token_lifetime: Duration,
    },
    /// The anchors do not form a consistent access list (e.g. key id collision).
    #[error("{0}")]
    AccessList(#[from] AccessListError),
    /// An unknown join policy name.
    #[error("unknown join policy {input:?}; use approval, invite or open")]
    UnknownJoinPolicy {
        /// The input, truncated.
        input: String,
    },
    /// The descriptor could not be written as TOML.
    #[error("cannot write the descriptor as TOML: {0}")]
    Serialize(String),
}

fn field_suffix(field: &Option<String>) -> String {
    match field {
        Some(field) => format!(" (field `{field}`)"),
        None => String::new(),
    }
}

impl Descriptor {
    /// Reads and validates a descriptor file (at most [`MAX_DESCRIPTOR_BYTES`]).
    pub fn load(path: &Path) -> Result<Self, DescriptorError> {
        let file = std::fs::File::open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                DescriptorError::Missing {
                    path: path.to_owned(),
                }
            } else {
                DescriptorError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let mut bytes = Vec::new();
        file.take(MAX_DESCRIPTOR_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| DescriptorError::Io {
                path: path.to_owned(),
                source,
            })?;
        if bytes.len() as u64 > MAX_DESCRIPTOR_BYTES {
            return Err(DescriptorError::TooLarge {
                path: path.to_owned(),
                max: MAX_DESCRIPTOR_BYTES,
            });
        }
        let in_file = |problem| DescriptorError::InFile {
            path: path.to_owned(),
            problem: Box::new(problem),
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| in_file(DescriptorError::NotUtf8))?;
        Self::parse(text).map_err(in_file)
    }

    /// Parses and validates descriptor text.
    pub fn parse(text: &str) -> Result<Self, DescriptorError> {
        let descriptor: Self = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
        descriptor.validate()?;
        Ok(descriptor)
    }

    /// Checks the rules listed in the module documentation.
    pub fn validate(&self) -> Result<(), DescriptorError> {
        if self.networks.is_empty() {
            return Err(DescriptorError::NoNetworks);
        }
        if self.networks.len() > MAX_NETWORKS {
            return Err(DescriptorError::TooManyNetworks {
                count: self.networks.len(),
                max: MAX_NETWORKS,
            });
        }
        let mut names = HashSet::new();
        for entry in &self.networks {
            if !names.insert(&entry.name) {
                return Err(DescriptorError::DuplicateNetwork {
                    name: entry.name.clone(),
                });
            }
            entry.validate()?;
        }
        self.access_list()?;
        Ok(())
    }

    /// The descriptor as TOML text that [`Descriptor::parse`] reads back.
    pub fn to_toml_string(&self) -> Result<String, DescriptorError> {
        toml::to_string(self).map_err(|e| DescriptorError::Serialize(e.to_string()))
    }

    /// The entry of a network, if listed.
    pub fn network(&self, name: &NetworkName) -> Option<&NetworkEntry> {
        self.networks.iter().find(|entry| &entry.name == name)
    }

    /// The access list for the token verifier: each network's name, anchors and `strict`.
    pub fn access_list(&self) -> Result<AccessList, DescriptorError> {
        let trust = self.networks.iter().map(|entry| NetworkTrust {
            name: entry.name.to_string(),
            anchors: entry.anchors.clone(),
            strict: entry.strict,
        });
        Ok(AccessList::new(trust)?)
    }
}

impl NetworkEntry {
    /// An entry with one anchor and every other field at its default.
    pub fn new(name: NetworkName, anchor: PublicKey) -> Self {
        Self {
            name,
            anchors: vec![anchor],
            bootstrap: Vec::new(),
            join: JoinPolicy::default(),
            strict: false,
            private_addresses: false,
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            renewal_margin: DEFAULT_RENEWAL_MARGIN,
            max_revocation_staleness: DEFAULT_MAX_REVOCATION_STALENESS,
        }
    }

    /// Checks this entry on its own (anchors, bootstrap addresses, durations).
    pub fn validate(&self) -> Result<(), DescriptorError> {
        let network = || self.name.clone();
        if self.anchors.is_empty() || self.anchors.len() > MAX_ANCHORS {
            return Err(DescriptorError::AnchorCount {
                network: network(),
                count: self.anchors.len(),
            });
        }
        if self.anchors.len() == 2 && self.anchors[0] == self.anchors[1] {
            return Err(DescriptorError::DuplicateAnchor {
                network: network(),
                anchor: self.anchors[0],
            });
        }
        if self.bootstrap.len() > MAX_BOOTSTRAP {
            return Err(DescriptorError::TooManyBootstrap {
                network: network(),
                count: self.bootstrap.len(),
                max: MAX_BOOTSTRAP,
            });
        }
        if let Some(addr) = self.bootstrap.iter().find(|a| bootstrap_peer(a).is_none()) {
            return Err(DescriptorError::BootstrapWithoutPeerId {
                network: network(),
                addr: addr.clone(),
            });
        }
        if self.max_revocation_staleness < Duration::from_secs(1) {
            return Err(DescriptorError::Staleness { network: network() });
        }
        if self.renewal_margin >= self.token_lifetime {
            return Err(DescriptorError::RenewalMargin {
                network: network(),
                renewal_margin: self.renewal_margin,
                token_lifetime: self.token_lifetime,
            });
        }
        Ok(())
    }

    /// The bootstrap seednodes as (peer id, address) pairs.
    pub fn bootstrap_peers(&self) -> impl Iterator<Item = (PeerId, &Multiaddr)> {
        self.bootstrap
            .iter()
            .filter_map(|addr| Some((bootstrap_peer(addr)?, addr)))
    }
}

/// The peer a bootstrap address names: its final `/p2p/<peer id>` component.
pub fn bootstrap_peer(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last()? {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    }
}

/// Turns a TOML error into line, column and field, without the parser's source snippet (the
/// file might be a key file passed by mistake, and the snippet would print it).
fn syntax_error(text: &str, error: &toml::de::Error) -> DescriptorError {
    let mut offset = error.span().map_or(0, |span| span.start.min(text.len()));
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    DescriptorError::Syntax {
        line,
        column,
        field: field_at(text, line),
        message: error.message().trim().to_owned(),
    }
}

/// The key being set at `line` (1-based): the nearest `key = ...` at or above it within the
/// same table. Multi-line arrays put the failing value lines below their key.
fn field_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().take(line).collect();
    for candidate in lines.iter().rev() {
        let candidate = candidate.trim_start();
        if candidate.starts_with('[') && !candidate.starts_with("[\"") {
            return None;
        }
        if let Some((key, _)) = candidate.split_once('=') {
            let key = key.trim();
            if !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Some(key.to_owned());
            }
        }
    }
    None
}

/// `Vec<PublicKey>` as strings, refusing (without echoing) a secret key pasted by mistake.
mod anchor_list {
    use cordon_membership::PublicKey;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(keys: &[PublicKey], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(keys.iter().map(ToString::to_string))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PublicKey>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts
            .iter()
            .map(|text| {
                if text.trim_start().starts_with("ed25519-private") {
                    return Err(D::Error::custom(
                        "this is a secret key, not a public key; list the anchor's public key \
                         (from anchor.pub, `ed25519/<hex>`) and keep anchor.key offline",
                    ));
                }
                text.parse().map_err(D::Error::custom)
            })
            .collect()
    }
}

/// `Vec<Multiaddr>` as strings.
mod multiaddr_list {
    use libp2p::Multiaddr;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(addrs: &[Multiaddr], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(addrs.iter().map(ToString::to_string))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Multiaddr>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts
            .iter()
            .map(|text| {
                text.parse().map_err(|e| {
                    D::Error::custom(format!(
                        "invalid multiaddr {:?} ({e}); expected e.g. \
                         \"/ip4/192.0.2.1/tcp/4001/p2p/12D3KooW...\"",
                        text.chars().take(200).collect::<String>()
                    ))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use cordon_membership::SecretKey;

    use super::*;

    fn key(n: u8) -> PublicKey {
        SecretKey::from_seed([n; 32]).public()
    }

    fn peer(n: u8) -> PeerId {
        SecretKey::from_seed([n; 32]).peer_id()
    }

    fn entry(name: &str, anchor: u8) -> String {
        format!(
            "[[network]]\nname = \"{name}\"\nanchors = [\"{}\"]\n",
            key(anchor)
        )
    }

    fn parse_err(text: &str) -> DescriptorError {
        Descriptor::parse(text).unwrap_err()
    }

    #[test]
    fn minimal_entry_gets_defaults() {
        let d = Descriptor::parse(&entry("mainnet", 1)).unwrap();
        let net = d.network(&"mainnet".parse().unwrap()).unwrap();
        assert_eq!(net.anchors, vec![key(1)]);
        assert!(net.bootstrap.is_empty());
        assert_eq!(net.join, JoinPolicy::Approval);
        assert!(!net.strict);
        assert_eq!(net.token_lifetime, Duration::from_secs(30 * 86_400));
        assert_eq!(net.renewal_margin, Duration::from_secs(86_400));
        assert!(d.network(&"testnet".parse().unwrap()).is_none());
    }

    #[test]
    fn full_round_trip() {
        let mut main = NetworkEntry::new("mainnet".parse().unwrap(), key(1));
        main.anchors.push(key(2));
        main.bootstrap = vec![
            format!("/ip4/127.0.0.1/tcp/4001/p2p/{}", peer(9))
                .parse()
                .unwrap(),
            format!("/dns4/seed.example.org/tcp/4001/p2p/{}", peer(8))
                .parse()
                .unwrap(),
        ];
        main.join = JoinPolicy::Invite;
        main.strict = true;
        main.token_lifetime = Duration::from_secs(7 * 86_400 + 3600);
        main.renewal_margin = Duration::from_secs(90 * 60);
        let mut test = NetworkEntry::new("lab.example.org".parse().unwrap(), key(3));
        test.join = JoinPolicy::Open;
        let descriptor = Descriptor {
            networks: vec![main, test],
        };
        descriptor.validate().unwrap();
        let text = descriptor.to_toml_string().unwrap();
        assert!(text.contains("[[network]]"), "{text}");
        assert_eq!(Descriptor::parse(&text).unwrap(), descriptor);
    }

    #[test]
    fn every_option_parses() {
        let text = format!(
            r#"
[[network]]
name = "mainnet"
anchors = [
    "{}",
    "{}",
]
bootstrap = ["/ip4/127.0.0.1/tcp/4001/p2p/{}"]
join = "open"
strict = true
token_lifetime = "2d"
renewal_margin = "12h"
"#,
            key(1),
            key(2),
            peer(5)
        );
        let d = Descriptor::parse(&text).unwrap();
        let net = &d.networks[0];
        assert_eq!(net.join, JoinPolicy::Open);
        assert!(net.strict);
        assert_eq!(net.token_lifetime, Duration::from_secs(2 * 86_400));
        assert_eq!(net.renewal_margin, Duration::from_secs(12 * 3600));
        let peers: Vec<_> = net.bootstrap_peers().map(|(p, _)| p).collect();
        assert_eq!(peers, vec![peer(5)]);
    }

    #[test]
    fn unknown_field_refused_with_line_and_field() {
        let text = format!("{}stritc = true\n", entry("mainnet", 1));
        let err = parse_err(&text);
        let DescriptorError::Syntax {
            line,
            field,
            message,
            ..
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!(*line, 4, "{err}");
        assert_eq!(field.as_deref(), Some("stritc"), "{err}");
        assert!(message.contains("stritc"), "{err}");
        let top = format!("version = 2\n{}", entry("mainnet", 1));
        assert!(matches!(parse_err(&top), DescriptorError::Syntax { .. }));
    }

    #[test]
    fn bad_values_name_their_field() {
        let text = entry("mainnet", 1).replace("ed25519/", "ed25519/zz");
        let err = parse_err(&text);
        assert!(
            matches!(&err, DescriptorError::Syntax { line: 3, field: Some(f), .. } if f == "anchors"),
            "{err}"
        );
        let text = format!("{}token_lifetime = \"forever\"\n", entry("mainnet", 1));
        let err = parse_err(&text);
        assert!(
            matches!(&err, DescriptorError::Syntax { field: Some(f), .. } if f == "token_lifetime"),
            "{err}"
        );
        assert!(err.to_string().contains("30d"), "{err}");
        let text = format!("{}join = \"maybe\"\n", entry("mainnet", 1));
        assert!(matches!(parse_err(&text), DescriptorError::Syntax { .. }));
        let text = "[[network]]\nname = \"Main Net\"\nanchors = []\n";
        let err = parse_err(text);
        assert!(
            matches!(&err, DescriptorError::Syntax { field: Some(f), .. } if f == "name"),
            "{err}"
        );
    }

    #[test]
    fn secret_key_in_anchors_is_refused_without_echo() {
        let secret = format!("ed25519-private/{}", "ab".repeat(32));
        let text = format!("[[network]]\nname = \"mainnet\"\nanchors = [\"{secret}\"]\n");
        let message = parse_err(&text).to_string();
        assert!(message.contains("secret key"), "{message}");
        assert!(!message.contains(&"ab".repeat(32)), "{message}");
        // Even as a bare line (a key file passed as the descriptor).
        let message = parse_err(&format!("{secret}\n")).to_string();
        assert!(!message.contains(&"ab".repeat(32)), "{message}");
    }

    #[test]
    fn duplicate_network_refused() {
        let text = format!("{}{}", entry("mainnet", 1), entry("mainnet", 2));
        assert!(matches!(
            parse_err(&text),
            DescriptorError::DuplicateNetwork { name } if name.as_str() == "mainnet"
        ));
    }

    #[test]
    fn anchor_count_refused() {
        let none = "[[network]]\nname = \"mainnet\"\nanchors = []\n";
        assert!(matches!(
            parse_err(none),
            DescriptorError::AnchorCount { count: 0, .. }
        ));
        let three = format!(
            "[[network]]\nname = \"mainnet\"\nanchors = [\"{}\", \"{}\", \"{}\"]\n",
            key(1),
            key(2),
            key(3)
        );
        assert!(matches!(
            parse_err(&three),
            DescriptorError::AnchorCount { count: 3, .. }
        ));
        let twice = format!(
            "[[network]]\nname = \"mainnet\"\nanchors = [\"{}\", \"{}\"]\n",
            key(1),
            key(1)
        );
        assert!(matches!(
            parse_err(&twice),
            DescriptorError::DuplicateAnchor { .. }
        ));
        let missing = "[[network]]\nname = \"mainnet\"\n";
        assert!(matches!(parse_err(missing), DescriptorError::Syntax { .. }));
    }

    #[test]
    fn bootstrap_rules() {
        let no_peer = format!(
            "{}bootstrap = [\"/ip4/127.0.0.1/tcp/4001\"]\n",
            entry("mainnet", 1)
        );
        let err = parse_err(&no_peer);
        assert!(
            matches!(err, DescriptorError::BootstrapWithoutPeerId { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("/p2p/<peer id>"), "{err}");
        let garbage = format!("{}bootstrap = [\"not an address\"]\n", entry("mainnet", 1));
        assert!(matches!(
            parse_err(&garbage),
            DescriptorError::Syntax { field: Some(f), .. } if f == "bootstrap"
        ));
        let many: Vec<String> = (0..=MAX_BOOTSTRAP)
            .map(|i| format!("\"/ip4/10.0.0.{i}/tcp/4001/p2p/{}\"", peer(7)))
            .collect();
        let text = format!("{}bootstrap = [{}]\n", entry("mainnet", 1), many.join(", "));
        assert!(matches!(
            parse_err(&text),
            DescriptorError::TooManyBootstrap {
                count: 33,
                max: 32,
                ..
            }
        ));
    }

    #[test]
    fn renewal_margin_must_be_shorter() {
        for (lifetime, margin) in [("1d", "1d"), ("1h", "2h"), ("0s", "0s")] {
            let text = format!(
                "{}token_lifetime = \"{lifetime}\"\nrenewal_margin = \"{margin}\"\n",
                entry("mainnet", 1)
            );
            let err = parse_err(&text);
            assert!(
                matches!(err, DescriptorError::RenewalMargin { .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn network_count_limits() {
        assert!(matches!(parse_err(""), DescriptorError::NoNetworks));
        let text: String = (0..=MAX_NETWORKS)
            .map(|i| entry(&format!("net{i}"), 1))
            .collect();
        assert!(matches!(
            parse_err(&text),
            DescriptorError::TooManyNetworks { count: 65, max: 64 }
        ));
        let text: String = (0..MAX_NETWORKS)
            .map(|i| entry(&format!("net{i}"), 1))
            .collect();
        assert_eq!(Descriptor::parse(&text).unwrap().networks.len(), 64);
    }

    #[test]
    fn access_list_maps_entries() {
        let text = format!(
            "{}strict = true\n{}",
            entry("mainnet", 1),
            entry("testnet", 2)
        );
        let access = Descriptor::parse(&text).unwrap().access_list().unwrap();
        let main = access.network("mainnet").unwrap();
        assert_eq!(main.anchors, vec![key(1)]);
        assert!(main.strict);
        assert!(!access.network("testnet").unwrap().strict);
        assert_eq!(access.anchor_by_id(key(2).key_id()), Some(&key(2)));
    }

    #[test]
    fn bootstrap_peer_takes_the_final_p2p() {
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{}", peer(1))
            .parse()
            .unwrap();
        assert_eq!(bootstrap_peer(&addr), Some(peer(1)));
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        assert_eq!(bootstrap_peer(&addr), None);
        assert_eq!(bootstrap_peer(&Multiaddr::empty()), None);
    }

    #[test]
    fn join_policy_text() {
        for policy in [JoinPolicy::Approval, JoinPolicy::Invite, JoinPolicy::Open] {
            assert_eq!(policy.to_string().parse::<JoinPolicy>().unwrap(), policy);
        }
        assert!("Approval".parse::<JoinPolicy>().is_err());
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let err = Descriptor::load(&missing).unwrap_err();
        assert!(matches!(err, DescriptorError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("nope.toml"), "{err}");

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, format!("{}bogus = 1\n", entry("mainnet", 1))).unwrap();
        let message = Descriptor::load(&bad).unwrap_err().to_string();
        assert!(message.contains("bad.toml"), "{message}");
        assert!(message.contains("line 4"), "{message}");
        assert!(message.contains("`bogus`"), "{message}");

        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_DESCRIPTOR_BYTES as usize + 1]).unwrap();
        assert!(matches!(
            Descriptor::load(&big),
            Err(DescriptorError::TooLarge { .. })
        ));

        let binary = dir.path().join("binary.toml");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
        let err = Descriptor::load(&binary).unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");

        let good = dir.path().join("good.toml");
        std::fs::write(&good, entry("mainnet", 1)).unwrap();
        assert_eq!(Descriptor::load(&good).unwrap().networks.len(), 1);
    }

    #[test]
    fn example_file_parses() {
        let text = include_str!("../../networks.example.toml");
        let d = Descriptor::parse(text).unwrap();
        let main = d.network(&"mainnet".parse().unwrap()).unwrap();
        assert_eq!(main.join, JoinPolicy::Approval);
        assert!(!main.bootstrap.is_empty());
        let test = d.network(&"testnet".parse().unwrap()).unwrap();
        assert_eq!(test.join, JoinPolicy::Open);
        d.access_list().unwrap();
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../networks.example.toml");
        assert_eq!(Descriptor::load(&path).unwrap(), d);
    }
}
