//! Wire types of the remote commands, [`RPC_PROTOCOL`].
//!
//! A caller sends one [`RpcRequest`] naming the network it calls in and a
//! predefined [`Command`]; the callee answers one [`RpcResponse`]: a
//! [`RpcResult`] or an error with a stable [`RpcErrorCode`]. There is no
//! free-form command: an unknown command or field is a malformed message.
//!
//! Records stored with `dht_put` are [`SignedRecord`]s: the publisher signs
//! a domain-separated encoding of the network, key, value, sequence number
//! and timestamp with its libp2p identity key (see
//! [`SignedRecord::signing_payload`]). Signing and verification live here,
//! next to the type, because the signed bytes are part of the wire contract:
//! every implementation must produce exactly these bytes. They use
//! `libp2p::identity` (ed25519-dalek underneath); nothing is hand-rolled.
//!
//! [`RPC_PROTOCOL`]: crate::RPC_PROTOCOL

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use libp2p::PeerId;
use libp2p::identity::{KeyType, Keypair, PublicKey};
use serde::{Deserialize, Serialize};

use crate::reason::{UnknownCodeError, wire_code};
use crate::validate::check_text;
use crate::{Limits, NetworkName, ProtocolError, Validate};

/// Domain-separation tag that starts every record signing payload. A
/// signature made for anything else (a libp2p handshake, another Cordon
/// message, a future record version) never verifies as a record.
pub const RECORD_SIGNING_TAG: &[u8] = b"cordon-record-v1";

/// Length of an Ed25519 signature, the only kind a record may carry.
pub const RECORD_SIGNATURE_BYTES: usize = 64;

/// Longest encoded publisher key accepted, in bytes. A protobuf-encoded
/// Ed25519 public key is 36 bytes; the slack leaves room for nothing else.
pub const MAX_PUBLISHER_KEY_BYTES: usize = 64;

/// Longest software version string in an `info` result, in bytes.
pub const MAX_VERSION_BYTES: usize = 64;

/// Longest peer id string in a `peers` result, in bytes. A base58 peer id
/// of an Ed25519 key is 52 characters.
pub const MAX_PEER_ID_CHARS: usize = 128;

wire_code! {
    /// Why an rpc was refused. Stable snake_case strings on the wire.
    RpcErrorCode, "rpc error code" {
        /// Local policy does not allow the caller's roles and rights to run
        /// the command.
        Denied => "denied",
        /// The caller sends too many requests, or a quota (such as the
        /// record store's capacity) is exhausted; retry later.
        RateLimited => "rate_limited",
        /// The caller is not a verified member of the request's network on
        /// this connection (or the network is not served here).
        NotMember => "not_member",
        /// A parameter is malformed or out of range (e.g. a record
        /// timestamp too far in the future).
        InvalidParams => "invalid_params",
        /// A parameter or the result is over a size limit.
        TooLarge => "too_large",
        /// A record's signature does not verify against its publisher key.
        BadSignature => "bad_signature",
        /// A record's publisher is not a member of the record's network.
        NotMemberSigner => "not_member_signer",
        /// A record is not newer than the stored one (sequence number not
        /// higher, or timestamp older).
        Replay => "replay",
        /// The requested item does not exist (for commands whose result has
        /// no empty form).
        NotFound => "not_found",
        /// The callee failed internally; details stay in its logs.
        Internal => "internal",
        /// The command is known but not served by this node.
        Unsupported => "unsupported",
    }
}

/// One rpc call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcRequest {
    /// The network the call is made in: the caller must be a verified
    /// member of it on the connection carrying the call, and results (peer
    /// lists, records) are limited to it.
    pub network: NetworkName,
    /// What to do.
    pub command: Command,
}

/// The predefined commands. Unit variants travel as a plain string
/// (`"ping"`), the others as a one-entry map (`{"echo": {"data": h'..'}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Liveness check; answered with [`RpcResult::Pong`].
    Ping,
    /// The callee's version, networks and uptime.
    Info,
    /// Verified members of the request's network known to the callee.
    Peers,
    /// Returns `data` unchanged: at most `Limits::max_echo_bytes` bytes.
    Echo {
        /// The payload. A CBOR byte string.
        #[serde(with = "crate::byte_string")]
        data: Vec<u8>,
    },
    /// Stores a signed record in the request's network.
    DhtPut {
        /// The record, signed for the request's network.
        record: SignedRecord,
        /// The publisher's membership token of the request's network: up to
        /// `Limits::max_token_bytes` bytes. A record is kept (and replicated,
        /// with this token) only if the token proves its publisher a member
        /// allowed `dht_put`. A CBOR byte string; may be omitted (the record is
        /// then refused with `not_member_signer`).
        #[serde(
            default,
            with = "crate::byte_string",
            skip_serializing_if = "Vec::is_empty"
        )]
        token: Vec<u8>,
    },
    /// Looks up a record by key in the request's network.
    DhtGet {
        /// 1..=`Limits::max_record_key_bytes` bytes. A CBOR byte string.
        #[serde(with = "crate::byte_string")]
        key: Vec<u8>,
    },
}

impl Command {
    /// Every command name, in declaration order. These are also the names
    /// local authorization policies use (`command("dht_put")`).
    pub const NAMES: &'static [&'static str] =
        &["ping", "info", "peers", "echo", "dht_put", "dht_get"];

    /// The command's stable name, as on the wire and in policies.
    pub const fn name(&self) -> &'static str {
        match self {
            Command::Ping => "ping",
            Command::Info => "info",
            Command::Peers => "peers",
            Command::Echo { .. } => "echo",
            Command::DhtPut { .. } => "dht_put",
            Command::DhtGet { .. } => "dht_get",
        }
    }
}

/// The answer to an [`RpcRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RpcResponse {
    /// The command ran.
    Ok(RpcResult),
    /// The command was refused or failed.
    Err {
        /// Stable error code.
        code: RpcErrorCode,
        /// Optional human-readable note: at most
        /// `Limits::max_message_text_bytes` bytes of printable text. Never
        /// carries internal details.
        message: Option<String>,
    },
}

impl RpcResponse {
    /// An error response without a message.
    pub fn error(code: RpcErrorCode) -> Self {
        RpcResponse::Err {
            code,
            message: None,
        }
    }
}

/// What a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RpcResult {
    /// Answer to [`Command::Ping`].
    Pong,
    /// Answer to [`Command::Info`].
    Info {
        /// The callee's software version: at most [`MAX_VERSION_BYTES`]
        /// bytes of printable text.
        version: String,
        /// Networks the callee serves and the caller may learn of: at most
        /// `Limits::rpc_max_networks`, no duplicates.
        networks: Vec<NetworkName>,
        /// Seconds since the callee started.
        uptime_secs: u64,
    },
    /// Answer to [`Command::Peers`].
    Peers {
        /// Base58 peer ids: at most `Limits::rpc_max_peers`, each a valid
        /// peer id, no duplicates.
        peers: Vec<String>,
    },
    /// Answer to [`Command::Echo`].
    Echo {
        /// The payload, unchanged. A CBOR byte string.
        #[serde(with = "crate::byte_string")]
        data: Vec<u8>,
    },
    /// Answer to [`Command::DhtPut`]: the record is stored.
    Stored,
    /// Answer to [`Command::DhtGet`].
    Record {
        /// The stored record, or `None` if the key is unknown.
        record: Option<SignedRecord>,
    },
}

/// A record signed by its publisher for one network.
///
/// Validation ([`Validate`]) checks only sizes; [`SignedRecord::verify`]
/// checks the signature. Timestamps are seconds since the Unix epoch.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRecord {
    /// 1..=`Limits::max_record_key_bytes` bytes. A CBOR byte string.
    #[serde(with = "crate::byte_string")]
    pub key: Vec<u8>,
    /// 0..=`Limits::max_record_value_bytes` bytes. A CBOR byte string.
    #[serde(with = "crate::byte_string")]
    pub value: Vec<u8>,
    /// The publisher's protobuf-encoded libp2p public key (Ed25519):
    /// 1..=[`MAX_PUBLISHER_KEY_BYTES`] bytes. A CBOR byte string.
    #[serde(with = "crate::byte_string")]
    pub publisher: Vec<u8>,
    /// Publisher-chosen sequence number; a newer version of a key must carry
    /// a higher one.
    pub seq: u64,
    /// When the publisher signed, in seconds since the Unix epoch.
    pub timestamp: u64,
    /// Ed25519 signature over [`SignedRecord::signing_payload`]: exactly
    /// [`RECORD_SIGNATURE_BYTES`] bytes. A CBOR byte string.
    #[serde(with = "crate::byte_string")]
    pub signature: Vec<u8>,
}

impl fmt::Debug for SignedRecord {
    /// Lengths instead of contents: record bytes are the peer's and may be
    /// large or hostile to terminals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedRecord")
            .field("key_len", &self.key.len())
            .field("value_len", &self.value.len())
            .field("publisher_len", &self.publisher.len())
            .field("seq", &self.seq)
            .field("timestamp", &self.timestamp)
            .field("signature_len", &self.signature.len())
            .finish()
    }
}

/// A record as it travels through a network's Kademlia: the value of every
/// PUT_VALUE and GET_VALUE record is one of these, CBOR-encoded, under the
/// record's key.
///
/// The token lets every member check, offline, that the publisher is a
/// member of the network allowed `dht_put` before it keeps or believes the
/// record: Kademlia's own PUT_VALUE would otherwise let any member write
/// around the rpc policy.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicatedRecord {
    /// The signed record.
    pub record: SignedRecord,
    /// The publisher's membership token of the network: 1..=
    /// `Limits::max_token_bytes` bytes. A CBOR byte string.
    #[serde(with = "crate::byte_string")]
    pub token: Vec<u8>,
}

impl ReplicatedRecord {
    /// The largest encoding of a valid replicated record under `limits`.
    pub fn max_encoded_bytes(limits: &Limits) -> usize {
        // Byte strings encode with at most a 9-byte header each; the slack
        // covers field names, integers and the publisher key.
        limits.max_record_key_bytes + limits.max_record_value_bytes + limits.max_token_bytes + 512
    }
}

impl fmt::Debug for ReplicatedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicatedRecord")
            .field("record", &self.record)
            .field("token_len", &self.token.len())
            .finish()
    }
}

impl Validate for ReplicatedRecord {
    fn validate(&self, limits: &Limits) -> Result<(), ProtocolError> {
        self.record.validate(limits)?;
        check_bytes("token", &self.token, 1, limits.max_token_bytes)
    }
}

/// Why a record could not be signed or does not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The publisher bytes are not a protobuf-encoded libp2p public key.
    #[error("record publisher is not a valid encoded public key")]
    BadPublisherKey,
    /// The publisher key is not Ed25519.
    #[error("record publisher key is {key_type}; only Ed25519 is accepted")]
    UnsupportedKeyType {
        /// The key type found.
        key_type: KeyType,
    },
    /// The signature does not verify over the record's payload for the
    /// network it was checked against.
    #[error("record signature does not verify")]
    BadSignature,
    /// The keypair could not sign (not Ed25519, or a signer failure).
    #[error("cannot sign record: {detail}")]
    Signing {
        /// What went wrong.
        detail: String,
    },
}

/// Appends `bytes` with a big-endian `u32` length prefix, so that no two
/// different field sequences encode to the same payload.
fn put_field(out: &mut Vec<u8>, bytes: &[u8]) {
    // Fields are capped far below 4 GiB by `Limits`; saturating keeps the
    // encoding total even for absurd inputs (which then fail to verify).
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

impl SignedRecord {
    /// The bytes a publisher signs: [`RECORD_SIGNING_TAG`], then the
    /// network name, key and value each with a 4-byte big-endian length
    /// prefix, then `seq` and `timestamp` as 8-byte big-endian integers.
    ///
    /// The network is covered, so a record signed for one network is never
    /// accepted in another.
    pub fn signing_payload(
        network: &NetworkName,
        key: &[u8],
        value: &[u8],
        seq: u64,
        timestamp: u64,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            RECORD_SIGNING_TAG.len() + 12 + network.as_str().len() + key.len() + value.len() + 16,
        );
        out.extend_from_slice(RECORD_SIGNING_TAG);
        put_field(&mut out, network.as_str().as_bytes());
        put_field(&mut out, key);
        put_field(&mut out, value);
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&timestamp.to_be_bytes());
        out
    }

    /// Signs a record for `network` with `keypair` (which must be Ed25519).
    /// Does not check sizes; the codec does when the record is sent.
    pub fn sign(
        keypair: &Keypair,
        network: &NetworkName,
        key: Vec<u8>,
        value: Vec<u8>,
        seq: u64,
        timestamp: u64,
    ) -> Result<Self, RecordError> {
        let public = keypair.public();
        if public.key_type() != KeyType::Ed25519 {
            return Err(RecordError::UnsupportedKeyType {
                key_type: public.key_type(),
            });
        }
        let payload = Self::signing_payload(network, &key, &value, seq, timestamp);
        let signature = keypair.sign(&payload).map_err(|e| RecordError::Signing {
            detail: e.to_string(),
        })?;
        Ok(Self {
            key,
            value,
            publisher: public.encode_protobuf(),
            seq,
            timestamp,
            signature,
        })
    }

    /// The publisher's peer id, if the publisher bytes are an Ed25519 key.
    /// Does not check the signature.
    pub fn publisher_peer_id(&self) -> Result<PeerId, RecordError> {
        Ok(self.publisher_key()?.to_peer_id())
    }

    fn publisher_key(&self) -> Result<PublicKey, RecordError> {
        if self.publisher.len() > MAX_PUBLISHER_KEY_BYTES {
            return Err(RecordError::BadPublisherKey);
        }
        let key = PublicKey::try_decode_protobuf(&self.publisher)
            .map_err(|_| RecordError::BadPublisherKey)?;
        if key.key_type() != KeyType::Ed25519 {
            return Err(RecordError::UnsupportedKeyType {
                key_type: key.key_type(),
            });
        }
        Ok(key)
    }

    /// Checks the signature for `network` and returns the publisher's peer
    /// id. The caller still has to decide whether that publisher may
    /// publish (membership, ownership, freshness).
    pub fn verify(&self, network: &NetworkName) -> Result<PeerId, RecordError> {
        let key = self.publisher_key()?;
        if self.signature.len() != RECORD_SIGNATURE_BYTES {
            return Err(RecordError::BadSignature);
        }
        let payload =
            Self::signing_payload(network, &self.key, &self.value, self.seq, self.timestamp);
        if key.verify(&payload, &self.signature) {
            Ok(key.to_peer_id())
        } else {
            Err(RecordError::BadSignature)
        }
    }
}

/// A byte field must be `min..=max` bytes long.
fn check_bytes(
    field: &'static str,
    bytes: &[u8],
    min: usize,
    max: usize,
) -> Result<(), ProtocolError> {
    if bytes.len() > max {
        return Err(ProtocolError::TooLong {
            field,
            len: bytes.len(),
            max,
        });
    }
    if bytes.len() < min {
        return Err(ProtocolError::Empty { field });
    }
    Ok(())
}

/// A list must hold at most `max` entries.
fn check_count(field: &'static str, count: usize, max: usize) -> Result<(), ProtocolError> {
    if count > max {
        return Err(ProtocolError::Malformed {
            detail: format!("{count} {field}; at most {max} allowed"),
        });
    }
    Ok(())
}

/// Checks a record key: 1..=`Limits::max_record_key_bytes` bytes.
pub fn check_record_key(key: &[u8], limits: &Limits) -> Result<(), ProtocolError> {
    check_bytes("key", key, 1, limits.max_record_key_bytes)
}

/// Checks an echo payload: at most `Limits::max_echo_bytes` bytes.
pub fn check_echo_data(data: &[u8], limits: &Limits) -> Result<(), ProtocolError> {
    check_bytes("data", data, 0, limits.max_echo_bytes)
}

impl Validate for SignedRecord {
    fn validate(&self, limits: &Limits) -> Result<(), ProtocolError> {
        check_record_key(&self.key, limits)?;
        check_bytes("value", &self.value, 0, limits.max_record_value_bytes)?;
        check_bytes("publisher", &self.publisher, 1, MAX_PUBLISHER_KEY_BYTES)?;
        if self.signature.len() != RECORD_SIGNATURE_BYTES {
            return Err(ProtocolError::Malformed {
                detail: format!(
                    "signature is {} bytes; exactly {RECORD_SIGNATURE_BYTES} required",
                    self.signature.len()
                ),
            });
        }
        Ok(())
    }
}

impl Validate for Command {
    fn validate(&self, limits: &Limits) -> Result<(), ProtocolError> {
        match self {
            Command::Ping | Command::Info | Command::Peers => Ok(()),
            Command::Echo { data } => check_echo_data(data, limits),
            Command::DhtPut { record, token } => {
                record.validate(limits)?;
                check_bytes("token", token, 0, limits.max_token_bytes)
            }
            Command::DhtGet { key } => check_record_key(key, limits),
        }
    }
}

impl Validate for RpcRequest {
    fn validate(&self, limits: &Limits) -> Result<(), ProtocolError> {
        // The network name is valid by construction.
        self.command.validate(limits)
    }
}

/// Checks a peer id string: short, and a valid peer id.
fn check_peer_id(peer: &str) -> Result<(), ProtocolError> {
    if peer.len() > MAX_PEER_ID_CHARS {
        return Err(ProtocolError::TooLong {
            field: "peer",
            len: peer.len(),
            max: MAX_PEER_ID_CHARS,
        });
    }
    if PeerId::from_str(peer).is_err() {
        return Err(ProtocolError::Malformed {
            detail: "a peer entry is not a valid peer id".to_owned(),
        });
    }
    Ok(())
}

impl Validate for RpcResult {
    fn validate(&self, limits: &Limits) -> Result<(), ProtocolError> {
        match self {
            RpcResult::Pong | RpcResult::Stored | RpcResult::Record { record: None } => Ok(()),
            RpcResult::Info {
                version, networks, ..
            } => {
                check_text("version", version, MAX_VERSION_BYTES, true)?;
                check_count("networks", networks.len(), limits.rpc_max_networks)?;
                let mut seen = BTreeSet::new();
                for network in networks {
                    if !seen.insert(network) {
                        return Err(ProtocolError::DuplicateResult {
                            network: network.clone(),
                        });
                    }
                }
                Ok(())
            }
            RpcResult::Peers { peers } => {
                check_count("peers", peers.len(), limits.rpc_max_peers)?;
                let mut seen = BTreeSet::new();
                for peer in peers {
                    check_peer_id(peer)?;
                    if !seen.insert(peer.as_str()) {
                        return Err(ProtocolError::Malformed {
                            detail: "a peer id is listed twice".to_owned(),
                        });
                    }
                }
                Ok(())
            }
            RpcResult::Echo { data } => check_echo_data(data, limits),
            RpcResult::Record {
                record: Some(record),
            } => record.validate(limits),
        }
    }
}

impl Validate for RpcResponse {
    fn validate(&self, limits: &Limits) -> Result<(), ProtocolError> {
        match self {
            RpcResponse::Ok(result) => result.validate(limits),
            RpcResponse::Err {
                message: Some(message),
                ..
            } => check_text("message", message, limits.max_message_text_bytes, false),
            RpcResponse::Err { message: None, .. } => Ok(()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;
    use serde::de::DeserializeOwned;

    use super::*;
    use crate::network::tests::network_name;
    use crate::{decode, encode};

    const BIG: usize = usize::MAX;

    fn round_trip<T>(msg: &T) -> T
    where
        T: Serialize + DeserializeOwned + Validate,
    {
        let bytes = encode(msg, BIG).unwrap();
        decode(&bytes, bytes.len(), &Limits::default()).unwrap()
    }

    fn net(name: &str) -> NetworkName {
        name.parse().unwrap()
    }

    fn bytes(range: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), range)
    }

    pub(crate) fn rpc_error_code() -> impl Strategy<Value = RpcErrorCode> {
        proptest::sample::select(RpcErrorCode::ALL)
    }

    /// Records with valid sizes (not valid signatures).
    pub(crate) fn signed_record() -> impl Strategy<Value = SignedRecord> {
        let l = Limits::default();
        (
            bytes(1..=l.max_record_key_bytes),
            bytes(0..=l.max_record_value_bytes),
            bytes(1..=MAX_PUBLISHER_KEY_BYTES),
            any::<u64>(),
            any::<u64>(),
            bytes(RECORD_SIGNATURE_BYTES..=RECORD_SIGNATURE_BYTES),
        )
            .prop_map(
                |(key, value, publisher, seq, timestamp, signature)| SignedRecord {
                    key,
                    value,
                    publisher,
                    seq,
                    timestamp,
                    signature,
                },
            )
    }

    pub(crate) fn command() -> impl Strategy<Value = Command> {
        let l = Limits::default();
        prop_oneof![
            Just(Command::Ping),
            Just(Command::Info),
            Just(Command::Peers),
            bytes(0..=l.max_echo_bytes).prop_map(|data| Command::Echo { data }),
            (signed_record(), bytes(0..=64))
                .prop_map(|(record, token)| Command::DhtPut { record, token }),
            bytes(1..=l.max_record_key_bytes).prop_map(|key| Command::DhtGet { key }),
        ]
    }

    pub(crate) fn rpc_request() -> impl Strategy<Value = RpcRequest> {
        (network_name(), command()).prop_map(|(network, command)| RpcRequest { network, command })
    }

    fn peer_id_string() -> impl Strategy<Value = String> {
        any::<[u8; 32]>().prop_map(|seed| {
            let mut seed = seed;
            Keypair::ed25519_from_bytes(&mut seed)
                .unwrap()
                .public()
                .to_peer_id()
                .to_base58()
        })
    }

    fn version() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9][a-zA-Z0-9 .+-]{0,63}"
    }

    pub(crate) fn rpc_result() -> impl Strategy<Value = RpcResult> {
        let l = Limits::default();
        prop_oneof![
            Just(RpcResult::Pong),
            (
                version(),
                proptest::collection::btree_set(network_name(), 0..=l.rpc_max_networks),
                any::<u64>()
            )
                .prop_map(|(version, networks, uptime_secs)| RpcResult::Info {
                    version,
                    networks: networks.into_iter().collect(),
                    uptime_secs
                }),
            proptest::collection::btree_set(peer_id_string(), 0..=16).prop_map(|peers| {
                RpcResult::Peers {
                    peers: peers.into_iter().collect(),
                }
            }),
            bytes(0..=l.max_echo_bytes).prop_map(|data| RpcResult::Echo { data }),
            Just(RpcResult::Stored),
            proptest::option::of(signed_record()).prop_map(|record| RpcResult::Record { record }),
        ]
    }

    pub(crate) fn rpc_response() -> impl Strategy<Value = RpcResponse> {
        prop_oneof![
            rpc_result().prop_map(RpcResponse::Ok),
            (
                rpc_error_code(),
                proptest::option::of("[a-zA-Z0-9 .,:-]{0,256}")
            )
                .prop_map(|(code, message)| RpcResponse::Err { code, message }),
        ]
    }

    proptest! {
        #[test]
        fn rpc_request_round_trips(msg in rpc_request()) {
            prop_assert_eq!(round_trip(&msg), msg);
        }

        #[test]
        fn rpc_response_round_trips(msg in rpc_response()) {
            prop_assert_eq!(round_trip(&msg), msg);
        }

        #[test]
        fn command_round_trips(msg in command()) {
            prop_assert_eq!(round_trip(&msg), msg);
        }

        #[test]
        fn rpc_result_round_trips(msg in rpc_result()) {
            prop_assert_eq!(round_trip(&msg), msg);
        }

        #[test]
        fn signed_record_round_trips(msg in signed_record()) {
            prop_assert_eq!(round_trip(&msg), msg);
        }

        #[test]
        fn rpc_error_code_round_trips(code in rpc_error_code()) {
            let bytes = encode(&code, BIG).unwrap();
            let back: RpcErrorCode = cbor4ii::serde::from_slice(&bytes).unwrap();
            prop_assert_eq!(back, code);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let limits = Limits::default();
            let _ = decode::<RpcRequest>(&bytes, BIG, &limits);
            let _ = decode::<RpcResponse>(&bytes, BIG, &limits);
        }

    }

    proptest! {
        // Ed25519 is slow in debug builds; a few cases cover the property.
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn signatures_verify_only_for_the_signed_content(
            seed in any::<[u8; 32]>(),
            key in bytes(1..=16),
            value in bytes(0..=64),
            seq in any::<u64>(),
            timestamp in any::<u64>(),
        ) {
            let mut seed = seed;
            let keypair = Keypair::ed25519_from_bytes(&mut seed).unwrap();
            let acme = net("acme");
            let record =
                SignedRecord::sign(&keypair, &acme, key, value, seq, timestamp).unwrap();
            prop_assert_eq!(record.verify(&acme).unwrap(), keypair.public().to_peer_id());
            prop_assert!(matches!(record.verify(&net("other")), Err(RecordError::BadSignature)));
            let mut bumped = record.clone();
            bumped.seq = seq.wrapping_add(1);
            prop_assert!(matches!(bumped.verify(&acme), Err(RecordError::BadSignature)));
            let mut moved = record;
            moved.timestamp = timestamp.wrapping_add(1);
            prop_assert!(matches!(moved.verify(&acme), Err(RecordError::BadSignature)));
        }
    }

    #[test]
    fn rpc_codec_uses_rpc_caps() {
        let codec = crate::RpcCodec::rpc(Limits::default());
        assert_eq!(codec.max_request_bytes(), 16384);
        assert_eq!(codec.max_response_bytes(), 65536);
    }

    #[test]
    fn error_codes_are_stable() {
        let wire: Vec<&str> = RpcErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            wire,
            [
                "denied",
                "rate_limited",
                "not_member",
                "invalid_params",
                "too_large",
                "bad_signature",
                "not_member_signer",
                "replay",
                "not_found",
                "internal",
                "unsupported",
            ]
        );
    }

    #[test]
    fn command_names_match_wire_names() {
        let commands = [
            Command::Ping,
            Command::Info,
            Command::Peers,
            Command::Echo { data: vec![] },
            Command::DhtPut {
                record: SignedRecord {
                    key: vec![1],
                    value: vec![],
                    publisher: vec![1],
                    seq: 0,
                    timestamp: 0,
                    signature: vec![0; 64],
                },
                token: Vec::new(),
            },
            Command::DhtGet { key: vec![1] },
        ];
        let names: Vec<&str> = commands.iter().map(Command::name).collect();
        assert_eq!(names, Command::NAMES);
        // Unit commands travel as their name; the others as a map keyed by it.
        for command in &commands {
            let bytes = encode(command, BIG).unwrap();
            let value: cbor4ii::core::Value = cbor4ii::serde::from_slice(&bytes).unwrap();
            let name = match value {
                cbor4ii::core::Value::Text(name) => name,
                cbor4ii::core::Value::Map(entries) => match &entries[..] {
                    [(cbor4ii::core::Value::Text(name), _)] => name.clone(),
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            };
            assert_eq!(name, command.name());
        }
    }

    /// Encodes any serde value, for shapes our types cannot produce.
    fn raw<T: Serialize>(value: &T) -> Vec<u8> {
        encode(value, BIG).unwrap()
    }

    fn decode_request(bytes: &[u8]) -> Result<RpcRequest, ProtocolError> {
        let limits = Limits::default();
        decode(bytes, limits.rpc_max_request_bytes, &limits)
    }

    #[test]
    fn unknown_commands_and_fields_are_refused() {
        #[derive(Serialize)]
        struct Req<C> {
            network: &'static str,
            command: C,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "snake_case")]
        enum Evil {
            Shell { cmd: String },
            Shutdown,
        }
        for command in [
            Evil::Shell {
                cmd: "rm -rf /".into(),
            },
            Evil::Shutdown,
        ] {
            let bytes = raw(&Req {
                network: "acme",
                command,
            });
            assert!(
                matches!(decode_request(&bytes), Err(ProtocolError::Malformed { .. })),
                "{:?}",
                decode_request(&bytes)
            );
        }

        // A known command with an extra field.
        #[derive(Serialize)]
        #[serde(rename_all = "snake_case")]
        enum EchoPlus {
            Echo {
                #[serde(with = "crate::byte_string")]
                data: Vec<u8>,
                admin: bool,
            },
        }
        let bytes = raw(&Req {
            network: "acme",
            command: EchoPlus::Echo {
                data: vec![1],
                admin: true,
            },
        });
        assert!(matches!(
            decode_request(&bytes),
            Err(ProtocolError::Malformed { .. })
        ));

        // An extra top-level field.
        #[derive(Serialize)]
        struct Extra {
            network: &'static str,
            command: &'static str,
            sudo: bool,
        }
        let bytes = raw(&Extra {
            network: "acme",
            command: "ping",
            sudo: true,
        });
        assert!(matches!(
            decode_request(&bytes),
            Err(ProtocolError::Malformed { .. })
        ));

        // The same request without the extra field decodes.
        #[derive(Serialize)]
        struct Plain {
            network: &'static str,
            command: &'static str,
        }
        let bytes = raw(&Plain {
            network: "acme",
            command: "ping",
        });
        assert_eq!(
            decode_request(&bytes),
            Ok(RpcRequest {
                network: net("acme"),
                command: Command::Ping
            })
        );
        // Unknown error codes are refused too.
        #[derive(Serialize)]
        #[serde(rename_all = "snake_case")]
        enum Resp {
            Err {
                code: &'static str,
                message: Option<String>,
            },
        }
        let bytes = raw(&Resp::Err {
            code: "teapot",
            message: None,
        });
        let limits = Limits::default();
        assert!(decode::<RpcResponse>(&bytes, BIG, &limits).is_err());
    }

    #[test]
    fn echo_and_key_sizes() {
        let limits = Limits::default();
        let echo = |n: usize| Command::Echo { data: vec![7; n] };
        assert_eq!(echo(0).validate(&limits), Ok(()));
        assert_eq!(echo(1024).validate(&limits), Ok(()));
        assert_eq!(
            echo(1025).validate(&limits),
            Err(ProtocolError::TooLong {
                field: "data",
                len: 1025,
                max: 1024
            })
        );
        let get = |n: usize| Command::DhtGet { key: vec![7; n] };
        assert_eq!(get(1).validate(&limits), Ok(()));
        assert_eq!(get(128).validate(&limits), Ok(()));
        assert_eq!(
            get(0).validate(&limits),
            Err(ProtocolError::Empty { field: "key" })
        );
        assert!(matches!(
            get(129).validate(&limits),
            Err(ProtocolError::TooLong { max: 128, .. })
        ));
        // Oversized echo bytes are refused at decode, not just at validate.
        let bytes = raw(&RpcRequest {
            network: net("acme"),
            command: echo(1025),
        });
        assert!(matches!(
            decode_request(&bytes),
            Err(ProtocolError::TooLong { field: "data", .. })
        ));
    }

    fn record() -> SignedRecord {
        SignedRecord {
            key: vec![1; 8],
            value: vec![2; 8],
            publisher: vec![3; 36],
            seq: 1,
            timestamp: 1,
            signature: vec![4; 64],
        }
    }

    #[test]
    fn record_sizes() {
        let limits = Limits::default();
        assert_eq!(record().validate(&limits), Ok(()));
        let cases: Vec<(SignedRecord, &str)> = vec![
            (
                SignedRecord {
                    key: vec![],
                    ..record()
                },
                "key",
            ),
            (
                SignedRecord {
                    key: vec![0; 129],
                    ..record()
                },
                "key",
            ),
            (
                SignedRecord {
                    value: vec![0; 4097],
                    ..record()
                },
                "value",
            ),
            (
                SignedRecord {
                    publisher: vec![],
                    ..record()
                },
                "publisher",
            ),
            (
                SignedRecord {
                    publisher: vec![0; 65],
                    ..record()
                },
                "publisher",
            ),
        ];
        for (bad, field) in cases {
            let err = bad.validate(&limits).unwrap_err();
            assert!(
                matches!(err, ProtocolError::TooLong { field: f, .. } | ProtocolError::Empty { field: f } if f == field),
                "{field}: {err:?}"
            );
        }
        for len in [0, 63, 65] {
            let bad = SignedRecord {
                signature: vec![0; len],
                ..record()
            };
            assert!(matches!(
                bad.validate(&limits),
                Err(ProtocolError::Malformed { .. })
            ));
        }
        assert_eq!(
            SignedRecord {
                value: vec![],
                ..record()
            }
            .validate(&limits),
            Ok(())
        );
    }

    #[test]
    fn result_limits() {
        let limits = Limits::default();
        let info = |version: &str, networks: Vec<NetworkName>| RpcResult::Info {
            version: version.to_owned(),
            networks,
            uptime_secs: 5,
        };
        assert_eq!(
            info("cordon 0.1.0", vec![net("a"), net("b")]).validate(&limits),
            Ok(())
        );
        assert!(matches!(
            info("", vec![]).validate(&limits),
            Err(ProtocolError::Empty { field: "version" })
        ));
        assert!(matches!(
            info("v\u{1b}[2J", vec![]).validate(&limits),
            Err(ProtocolError::DisallowedCharacter { .. })
        ));
        assert!(matches!(
            info(&"v".repeat(65), vec![]).validate(&limits),
            Err(ProtocolError::TooLong { .. })
        ));
        assert!(matches!(
            info("v", vec![net("a"), net("a")]).validate(&limits),
            Err(ProtocolError::DuplicateResult { .. })
        ));
        let many: Vec<NetworkName> = (0..17).map(|i| net(&format!("n{i}"))).collect();
        assert!(matches!(
            info("v", many).validate(&limits),
            Err(ProtocolError::Malformed { .. })
        ));

        let peer = Keypair::generate_ed25519()
            .public()
            .to_peer_id()
            .to_base58();
        let peers = |peers: Vec<String>| RpcResult::Peers { peers };
        assert_eq!(peers(vec![peer.clone()]).validate(&limits), Ok(()));
        for bad in [
            vec![peer.clone(), peer.clone()],
            vec!["not-a-peer".to_owned()],
            vec!["1".repeat(129)],
            vec![String::new()],
        ] {
            assert!(peers(bad.clone()).validate(&limits).is_err(), "{bad:?}");
        }
        let too_many: Vec<String> = (0..257)
            .map(|_| {
                Keypair::generate_ed25519()
                    .public()
                    .to_peer_id()
                    .to_base58()
            })
            .collect();
        assert!(peers(too_many).validate(&limits).is_err());

        let err = |message: &str| RpcResponse::Err {
            code: RpcErrorCode::Denied,
            message: Some(message.to_owned()),
        };
        assert_eq!(err("").validate(&limits), Ok(()));
        assert!(err(&"m".repeat(257)).validate(&limits).is_err());
        assert!(err("a\nb").validate(&limits).is_err());
        assert_eq!(
            RpcResponse::error(RpcErrorCode::Replay).validate(&limits),
            Ok(())
        );
    }

    #[test]
    fn maximal_messages_fit_default_caps() {
        let limits = Limits::default();
        let long_net = |i: usize| net(&format!("{i:02}{}", "n".repeat(61)));
        let record = SignedRecord {
            key: vec![0xff; limits.max_record_key_bytes],
            value: vec![0xff; limits.max_record_value_bytes],
            publisher: vec![0xff; MAX_PUBLISHER_KEY_BYTES],
            seq: u64::MAX,
            timestamp: u64::MAX,
            signature: vec![0xff; RECORD_SIGNATURE_BYTES],
        };
        let requests = [
            RpcRequest {
                network: long_net(0),
                command: Command::DhtPut {
                    record: record.clone(),
                    token: vec![0xff; limits.max_token_bytes],
                },
            },
            RpcRequest {
                network: long_net(0),
                command: Command::Echo {
                    data: vec![0xff; limits.max_echo_bytes],
                },
            },
        ];
        for request in &requests {
            assert_eq!(request.validate(&limits), Ok(()));
            encode(request, limits.rpc_max_request_bytes).unwrap();
        }
        // Longest valid peer ids: identity multihash of a 42-byte key is
        // the longest libp2p accepts inline; use many real ones.
        let peers: Vec<String> = (0..limits.rpc_max_peers)
            .map(|_| {
                Keypair::generate_ed25519()
                    .public()
                    .to_peer_id()
                    .to_base58()
            })
            .collect();
        let responses = [
            RpcResponse::Ok(RpcResult::Peers { peers }),
            RpcResponse::Ok(RpcResult::Record {
                record: Some(record),
            }),
            RpcResponse::Ok(RpcResult::Info {
                version: "\u{1F680}".repeat(16),
                networks: (0..limits.rpc_max_networks).map(long_net).collect(),
                uptime_secs: u64::MAX,
            }),
            RpcResponse::Err {
                code: RpcErrorCode::NotMemberSigner,
                message: Some("m".repeat(limits.max_message_text_bytes)),
            },
        ];
        for response in &responses {
            assert_eq!(response.validate(&limits), Ok(()));
            encode(response, limits.rpc_max_response_bytes).unwrap();
        }
    }

    #[test]
    fn payload_is_domain_separated_and_injective() {
        let acme = net("acme");
        let p = SignedRecord::signing_payload(&acme, b"ab", b"c", 1, 2);
        assert!(p.starts_with(RECORD_SIGNING_TAG));
        // Moving a byte between key and value changes the payload.
        assert_ne!(p, SignedRecord::signing_payload(&acme, b"a", b"bc", 1, 2));
        assert_ne!(p, SignedRecord::signing_payload(&acme, b"ab", b"c", 2, 1));
        assert_eq!(
            p.len(),
            RECORD_SIGNING_TAG.len() + 4 + 4 + 4 + 2 + 4 + 1 + 8 + 8
        );
    }

    #[test]
    fn forged_and_foreign_records_do_not_verify() {
        let acme = net("acme");
        let alice = Keypair::generate_ed25519();
        let mallory = Keypair::generate_ed25519();
        let good = SignedRecord::sign(&alice, &acme, b"k".to_vec(), b"v".to_vec(), 1, 10).unwrap();
        assert_eq!(good.verify(&acme).unwrap(), alice.public().to_peer_id());
        assert_eq!(
            good.publisher_peer_id().unwrap(),
            alice.public().to_peer_id()
        );

        // Mallory signs other data and claims Alice's key.
        let forged = SignedRecord {
            value: b"evil".to_vec(),
            ..good.clone()
        };
        assert!(matches!(
            forged.verify(&acme),
            Err(RecordError::BadSignature)
        ));
        let theirs =
            SignedRecord::sign(&mallory, &acme, b"k".to_vec(), b"evil".to_vec(), 1, 10).unwrap();
        let stolen = SignedRecord {
            publisher: good.publisher.clone(),
            ..theirs
        };
        assert!(matches!(
            stolen.verify(&acme),
            Err(RecordError::BadSignature)
        ));

        let garbage = SignedRecord {
            publisher: vec![1, 2, 3],
            ..good.clone()
        };
        assert!(matches!(
            garbage.verify(&acme),
            Err(RecordError::BadPublisherKey)
        ));
        let short = SignedRecord {
            signature: vec![0; 10],
            ..good
        };
        assert!(matches!(
            short.verify(&acme),
            Err(RecordError::BadSignature)
        ));
    }

    #[test]
    fn record_debug_does_not_dump_contents() {
        let shown = format!(
            "{:?}",
            SignedRecord {
                value: b"\x1b[2Jsecret".to_vec(),
                ..record()
            }
        );
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("value_len: 10"), "{shown}");
    }
}
