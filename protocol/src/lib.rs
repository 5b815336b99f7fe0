//! Cordon's wire layer: protocol names, the messages exchanged on them, and
//! the size-capped CBOR codec that moves those messages over libp2p streams.
//!
//! # What this crate owns
//! - The versioned protocol names (`/cordon/membership/2`, `/cordon/join/1`,
//!   `/cordon/rpc/1` and the per-network Kademlia name
//!   `/cordon/<network>/kad/1.0.0`), see [`names`].
//! - The wire types of the membership exchange ([`membership`]) and of the
//!   join protocol ([`join`]), the validated [`NetworkName`], and the stable
//!   reason codes sent over the wire ([`reason`]).
//! - The bounds every message must respect ([`Limits`]) and the codec that
//!   enforces them ([`codec`]).
//!
//! # Invariants
//! - Every decoded message is size-capped and validated before anyone sees
//!   it: [`decode`] and [`CborCodec`] refuse input over the cap *before*
//!   parsing (the stream reader never buffers more than `cap + 1` bytes),
//!   refuse trailing bytes after the CBOR item, and then run
//!   [`Validate::validate`] against the [`Limits`]. A value of a wire type
//!   obtained from this crate's decoder is therefore always within limits.
//! - A [`NetworkName`] is valid by construction, including when deserialized.
//! - Reason codes are stable snake_case strings; renaming one is a protocol
//!   version bump, not a refactor.
//! - Errors never echo the peer's raw bytes: size errors name only the cap,
//!   and decoder messages are truncated and escaped.
//!
//! # Design choices
//! - CBOR via `cbor4ii`'s serde support; byte payloads (tokens) are CBOR byte
//!   strings (major type 2), not arrays of integers.
//! - Enums are externally tagged (`"ack"` or `{"pending": {...}}`) and every
//!   struct denies unknown fields: the protocol is versioned by name, so an
//!   unexpected field is a malformed message rather than an extension point.
//! - The codec also validates and size-checks what *we* send, so a local bug
//!   surfaces as a local error instead of a remote refusal.
//! - No async runtime: the codec is written against `futures` I/O traits.

#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod byte_string;
pub mod codec;
mod error;
pub mod join;
mod limits;
pub mod membership;
pub mod names;
mod network;
pub mod reason;
pub mod revocation;
pub mod rpc;
mod validate;

pub use codec::{CborCodec, JoinCodec, MembershipCodec, RevocationCodec, RpcCodec, decode, encode};
pub use error::ProtocolError;
pub use join::{JoinMessage, JoinReply, JoinRequest};
pub use limits::Limits;
pub use membership::{
    MembershipRequest, MembershipResponse, NetworkResult, Outcome, PresentedToken, TokenKind,
};
pub use names::{
    JOIN_PROTOCOL, MEMBERSHIP_PROTOCOL, REVOCATION_PROTOCOL, RPC_PROTOCOL, kad_protocol,
};
pub use network::{MAX_NETWORK_NAME_BYTES, NetworkName, NetworkNameError};
pub use reason::{DenyReason, ReasonCode, UnknownCodeError};
pub use revocation::{HeadVersion, RevocationRequest, RevocationResponse, SignedUpdate};
pub use rpc::{
    Command, RecordError, ReplicatedRecord, RpcErrorCode, RpcRequest, RpcResponse, RpcResult,
    SignedRecord,
};
pub use validate::Validate;
