//! Size-capped CBOR encoding and decoding, and the libp2p request-response
//! codec built on it.
//!
//! Order of checks on the way in: the byte count against the cap (the
//! stream reader never buffers more than `cap + 1` bytes), then strict CBOR
//! parsing of exactly one item with no trailing bytes, then
//! [`Validate::validate`]. On the way out: validation, then the cap, so we
//! never send what a peer with the same [`Limits`] would refuse.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::marker::PhantomData;

use cbor4ii::core::dec::Read as _;
use cbor4ii::core::error::DecodeError as CoreDecodeError;
use cbor4ii::core::utils::SliceReader;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::network::ERROR_PREFIX as NETWORK_NAME_ERROR_PREFIX;
use crate::{
    JoinMessage, JoinReply, Limits, MembershipRequest, MembershipResponse, ProtocolError,
    RevocationRequest, RevocationResponse, RpcRequest, RpcResponse, Validate,
};

/// Longest decoder detail kept in an error, in characters after escaping.
const MAX_DETAIL_CHARS: usize = 120;

/// Encodes `msg` as CBOR, refusing results longer than `max` bytes.
///
/// Does not validate; [`CborCodec`] validates before calling this.
pub fn encode<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>, ProtocolError> {
    let bytes = cbor4ii::serde::to_vec(Vec::new(), msg).map_err(|e| ProtocolError::Encode {
        detail: sanitize(&format!("{e:?}")),
    })?;
    if bytes.len() > max {
        return Err(ProtocolError::TooLarge { max });
    }
    Ok(bytes)
}

/// Decodes one message from `bytes`: refuses input over `max` bytes before
/// parsing, refuses anything but exactly one CBOR item, then validates the
/// message against `limits`.
pub fn decode<T: DeserializeOwned + Validate>(
    bytes: &[u8],
    max: usize,
    limits: &Limits,
) -> Result<T, ProtocolError> {
    let msg: T = parse(bytes, max)?;
    msg.validate(limits)?;
    Ok(msg)
}

/// The size check and strict parse of [`decode`], without validation.
fn parse<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, ProtocolError> {
    if bytes.len() > max {
        return Err(ProtocolError::TooLarge { max });
    }
    let mut deserializer = cbor4ii::serde::Deserializer::new(SliceReader::new(bytes));
    let msg = T::deserialize(&mut deserializer).map_err(from_decode_error)?;
    let mut rest = deserializer.into_inner();
    let count = match rest.fill(bytes.len()) {
        Ok(remaining) => remaining.as_ref().len(),
        Err(never) => match never {},
    };
    if count > 0 {
        return Err(ProtocolError::TrailingBytes { count });
    }
    Ok(msg)
}

fn from_decode_error(err: cbor4ii::serde::DecodeError<Infallible>) -> ProtocolError {
    use cbor4ii::serde::DecodeError;
    match err {
        DecodeError::Core(CoreDecodeError::Eof { .. }) => ProtocolError::Truncated,
        DecodeError::Core(CoreDecodeError::Mismatch { name, found }) => ProtocolError::WrongType {
            detail: format!("expected {name}, found CBOR major type {}", found >> 5),
        },
        DecodeError::Core(CoreDecodeError::DepthOverflow { .. }) => ProtocolError::Malformed {
            detail: "nested too deeply".to_owned(),
        },
        DecodeError::Core(other) => ProtocolError::Malformed {
            detail: sanitize(&format!("{other:?}")),
        },
        // Serde's own messages; some quote the peer's input (an unknown
        // variant name, say), hence `sanitize`.
        DecodeError::Custom(msg) if msg.starts_with(NETWORK_NAME_ERROR_PREFIX) => {
            ProtocolError::InvalidNetworkName {
                detail: sanitize(&msg),
            }
        }
        DecodeError::Custom(msg) if msg.starts_with("invalid type:") => ProtocolError::WrongType {
            detail: sanitize(&msg),
        },
        DecodeError::Custom(msg) => ProtocolError::Malformed {
            detail: sanitize(&msg),
        },
    }
}

/// Escapes and truncates decoder text so it is safe to log.
fn sanitize(text: &str) -> String {
    let mut out: String = text
        .chars()
        .flat_map(char::escape_debug)
        .take(MAX_DETAIL_CHARS + 1)
        .collect();
    if out.chars().count() > MAX_DETAIL_CHARS {
        out = out.chars().take(MAX_DETAIL_CHARS).collect();
        out.push_str("...");
    }
    out
}

/// A libp2p request-response codec for CBOR messages with explicit size caps
/// and validation in both directions.
///
/// Reading takes at most `cap + 1` bytes from the stream and refuses the
/// message with [`io::ErrorKind::InvalidData`] if it is over the cap, does
/// not parse, or fails validation. Writing refuses (with
/// [`io::ErrorKind::InvalidInput`]) a message that fails validation or
/// encodes to more than the cap, and then writes nothing.
pub struct CborCodec<Req, Resp> {
    max_request_bytes: usize,
    max_response_bytes: usize,
    limits: Limits,
    // `fn() -> _` keeps the codec Send + Sync whatever the message types.
    _messages: PhantomData<fn() -> (Req, Resp)>,
}

/// The codec of [`MEMBERSHIP_PROTOCOL`](crate::MEMBERSHIP_PROTOCOL).
pub type MembershipCodec = CborCodec<MembershipRequest, MembershipResponse>;

/// The codec of [`JOIN_PROTOCOL`](crate::JOIN_PROTOCOL).
pub type JoinCodec = CborCodec<JoinMessage, JoinReply>;

/// The codec of [`RPC_PROTOCOL`](crate::RPC_PROTOCOL).
pub type RpcCodec = CborCodec<RpcRequest, RpcResponse>;

/// The codec of [`REVOCATION_PROTOCOL`](crate::REVOCATION_PROTOCOL).
pub type RevocationCodec = CborCodec<RevocationRequest, RevocationResponse>;

impl RevocationCodec {
    /// The revocation codec, capped by `limits.revocation_max_bytes` both ways.
    pub fn revocations(limits: Limits) -> Self {
        Self::new(
            limits.revocation_max_bytes,
            limits.revocation_max_bytes,
            limits,
        )
    }
}

impl<Req, Resp> CborCodec<Req, Resp> {
    /// A codec with explicit caps on encoded requests and responses, and
    /// `limits` for validation.
    pub fn new(max_request_bytes: usize, max_response_bytes: usize, limits: Limits) -> Self {
        Self {
            max_request_bytes,
            max_response_bytes,
            limits,
            _messages: PhantomData,
        }
    }

    /// Cap on an encoded request, in bytes.
    pub fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }

    /// Cap on an encoded response, in bytes.
    pub fn max_response_bytes(&self) -> usize {
        self.max_response_bytes
    }

    /// The limits messages are validated against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

impl MembershipCodec {
    /// The membership codec, capped by `limits.membership_max_*_bytes`.
    pub fn membership(limits: Limits) -> Self {
        Self::new(
            limits.membership_max_request_bytes,
            limits.membership_max_response_bytes,
            limits,
        )
    }
}

impl JoinCodec {
    /// The join codec, capped by `limits.join_max_*_bytes`.
    pub fn join(limits: Limits) -> Self {
        Self::new(
            limits.join_max_request_bytes,
            limits.join_max_response_bytes,
            limits,
        )
    }
}

impl RpcCodec {
    /// The rpc codec, capped by `limits.rpc_max_*_bytes`.
    pub fn rpc(limits: Limits) -> Self {
        Self::new(
            limits.rpc_max_request_bytes,
            limits.rpc_max_response_bytes,
            limits,
        )
    }
}

impl<Req, Resp> Clone for CborCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self::new(
            self.max_request_bytes,
            self.max_response_bytes,
            self.limits.clone(),
        )
    }
}

impl<Req, Resp> fmt::Debug for CborCodec<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CborCodec")
            .field("request", &std::any::type_name::<Req>())
            .field("response", &std::any::type_name::<Resp>())
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("limits", &self.limits)
            .finish()
    }
}

async fn read_capped<T, M>(io: &mut T, max: usize, limits: &Limits) -> io::Result<M>
where
    T: AsyncRead + Unpin + Send,
    M: DeserializeOwned + Validate,
{
    let mut buf = Vec::new();
    let take = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    io.take(take).read_to_end(&mut buf).await?;
    // `decode` repeats this check, but a stream over the cap must be refused
    // as "too large" even if its first `max` bytes happen to parse.
    if buf.len() > max {
        return Err(ProtocolError::TooLarge { max }.into());
    }
    Ok(decode(&buf, max, limits)?)
}

/// Validates and encodes an outgoing message. Synchronous, so the async
/// writers hold only bytes across `.await` and need no `Sync` on messages.
fn prepare<M: Serialize + Validate>(msg: &M, max: usize, limits: &Limits) -> io::Result<Vec<u8>> {
    msg.validate(limits)
        .and_then(|()| encode(msg, max))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

impl<Req, Resp> request_response::Codec for CborCodec<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Validate + Send,
    Resp: Serialize + DeserializeOwned + Validate + Send,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_capped(io, self.max_request_bytes, &self.limits).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_capped(io, self.max_response_bytes, &self.limits).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let bytes = prepare(&req, self.max_request_bytes, &self.limits)?;
        io.write_all(&bytes).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let bytes = prepare(&resp, self.max_response_bytes, &self.limits)?;
        io.write_all(&bytes).await
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use futures::io::Cursor;
    use libp2p::request_response::Codec as _;
    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;
    use crate::join::tests::{join_message, join_reply, join_request};
    use crate::membership::tests::{
        membership_request, membership_response, network_result, outcome, presented_token,
    };
    use crate::network::tests::network_name;
    use crate::reason::tests::{deny_reason, reason_code};
    use crate::{
        DenyReason, JoinRequest, NetworkName, NetworkResult, Outcome, PresentedToken, ReasonCode,
        TokenKind,
    };

    const BIG: usize = usize::MAX;

    /// Encode, then decode through the full checked path.
    fn round_trip<T>(msg: &T) -> T
    where
        T: Serialize + DeserializeOwned + Validate,
    {
        let bytes = encode(msg, BIG).unwrap();
        decode(&bytes, bytes.len(), &Limits::default()).unwrap()
    }

    /// Encode, then decode strictly but without validation (leaf types).
    fn round_trip_leaf<T: Serialize + DeserializeOwned>(value: &T) -> T {
        let bytes = encode(value, BIG).unwrap();
        parse(&bytes, bytes.len()).unwrap()
    }

    fn decode_request(bytes: &[u8]) -> Result<MembershipRequest, ProtocolError> {
        let limits = Limits::default();
        decode(bytes, limits.membership_max_request_bytes, &limits)
    }

    fn net(name: &str) -> NetworkName {
        name.parse().unwrap()
    }

    fn sample_request() -> MembershipRequest {
        MembershipRequest {
            want: Vec::new(),
            tokens: vec![PresentedToken {
                network: net("acme"),
                kind: TokenKind::Membership,
                token: vec![1, 2, 3],
            }],
        }
    }

    proptest! {
        #[test]
        fn membership_request_round_trips(msg in membership_request()) {
            prop_assert_eq!(round_trip(&msg), msg);
        }

        #[test]
        fn membership_response_round_trips(msg in membership_response()) {
            prop_assert_eq!(round_trip(&msg), msg);
        }

        #[test]
        fn presented_token_round_trips(msg in presented_token()) {
            prop_assert_eq!(round_trip(&msg), msg);
        }

        #[test]
        fn network_result_round_trips(msg in network_result()) {
            prop_assert_eq!(round_trip(&msg), msg);
        }

        #[test]
        fn join_request_round_trips(msg in join_request()) {
            prop_assert_eq!(round_trip(&msg), msg);
        }

        #[test]
        fn join_message_round_trips(msg in join_message()) {
            prop_assert_eq!(round_trip(&msg), msg);
        }

        #[test]
        fn join_reply_round_trips(msg in join_reply()) {
            prop_assert_eq!(round_trip(&msg), msg);
        }

        #[test]
        fn leaf_types_round_trip(
            name in network_name(),
            reason in reason_code(),
            deny in deny_reason(),
            outcome in outcome(),
            kind in proptest::sample::select(TokenKind::ALL),
        ) {
            prop_assert_eq!(round_trip_leaf(&name), name);
            prop_assert_eq!(round_trip_leaf(&reason), reason);
            prop_assert_eq!(round_trip_leaf(&deny), deny);
            prop_assert_eq!(round_trip_leaf(&outcome), outcome);
            prop_assert_eq!(round_trip_leaf(&kind), kind);
        }

        #[test]
        fn every_strict_prefix_is_truncated(msg in join_message()) {
            let bytes = encode(&msg, BIG).unwrap();
            for cut in 0..bytes.len() {
                let limits = Limits::default();
                let result = decode::<JoinMessage>(&bytes[..cut], BIG, &limits);
                prop_assert_eq!(result, Err(ProtocolError::Truncated), "cut at {}", cut);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let limits = Limits::default();
            let _ = decode::<MembershipRequest>(&bytes, BIG, &limits);
            let _ = decode::<MembershipResponse>(&bytes, BIG, &limits);
            let _ = decode::<JoinMessage>(&bytes, BIG, &limits);
            let _ = decode::<JoinReply>(&bytes, BIG, &limits);
        }
    }

    #[test]
    fn token_is_a_cbor_byte_string() {
        use cbor4ii::core::Value;
        use cbor4ii::core::dec::Decode;

        let bytes = encode(&sample_request().tokens[0], BIG).unwrap();
        let value = Value::decode(&mut SliceReader::new(&bytes)).unwrap();
        let Value::Map(fields) = value else {
            panic!("not a map: {value:?}")
        };
        let token = fields
            .iter()
            .find(|(k, _)| *k == Value::Text("token".into()))
            .map(|(_, v)| v)
            .unwrap();
        assert_eq!(*token, Value::Bytes(vec![1, 2, 3]));
        // Header byte: major type 2 (0b010) with length 3 = 0x43.
        let at = bytes.windows(4).position(|w| w == [0x43, 1, 2, 3]);
        assert!(at.is_some(), "{bytes:02x?}");

        let deliver = JoinMessage::Deliver {
            network: net("acme"),
            request_id: 9,
            token: vec![5; 300],
        };
        let bytes = encode(&deliver, BIG).unwrap();
        // 300 bytes: major type 2 with a two-byte length (0x59 0x01 0x2c).
        assert!(
            bytes.windows(3).any(|w| w == [0x59, 0x01, 0x2c]),
            "{bytes:02x?}"
        );
    }

    #[test]
    fn maximal_messages_fit_default_caps() {
        let limits = Limits::default();
        let long_net = |i: usize| net(&format!("{i}{}", "n".repeat(62)));
        let request = MembershipRequest {
            want: Vec::new(),
            tokens: (0..limits.max_tokens_per_message)
                .map(|i| PresentedToken {
                    network: long_net(i),
                    kind: TokenKind::Delegation,
                    token: vec![0xff; limits.max_token_bytes],
                })
                .collect(),
        };
        let response = MembershipResponse {
            results: (0..limits.max_tokens_per_message)
                .map(|i| NetworkResult {
                    network: long_net(i),
                    outcome: Outcome::Rejected {
                        reason: ReasonCode::UnknownNetwork,
                    },
                })
                .collect(),
            tokens: request.tokens.clone(),
        };
        let join = [
            JoinMessage::Request(JoinRequest {
                network: long_net(0),
                label: "\u{1F680}".repeat(16),
                invite: Some("~".repeat(limits.max_invite_bytes)),
            }),
            JoinMessage::Deliver {
                network: long_net(0),
                request_id: u64::MAX,
                token: vec![0xff; limits.max_token_bytes],
            },
        ];
        let replies = [
            JoinReply::Approved {
                request_id: u64::MAX,
                token: vec![0xff; limits.max_token_bytes],
            },
            JoinReply::Denied {
                request_id: Some(u64::MAX),
                reason: DenyReason::DeniedByOperator,
                message: Some("m".repeat(limits.max_message_text_bytes)),
            },
        ];
        assert_eq!(request.validate(&limits), Ok(()));
        encode(&request, limits.membership_max_request_bytes).unwrap();
        encode(&response, limits.membership_max_response_bytes).unwrap();
        for msg in &join {
            assert_eq!(msg.validate(&limits), Ok(()));
            encode(msg, limits.join_max_request_bytes).unwrap();
        }
        for msg in &replies {
            assert_eq!(msg.validate(&limits), Ok(()));
            encode(msg, limits.join_max_response_bytes).unwrap();
        }
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let bytes = encode(&sample_request(), BIG).unwrap();
        let limits = Limits::default();
        assert_eq!(
            decode::<MembershipRequest>(&bytes, bytes.len() - 1, &limits),
            Err(ProtocolError::TooLarge {
                max: bytes.len() - 1
            })
        );
        // Garbage over the cap is "too large", not "malformed": the size is
        // checked before a single byte is parsed.
        let garbage = vec![0xff; limits.membership_max_request_bytes + 1];
        assert_eq!(
            decode_request(&garbage),
            Err(ProtocolError::TooLarge { max: 33792 })
        );
        assert_eq!(
            encode(&sample_request(), 4),
            Err(ProtocolError::TooLarge { max: 4 })
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&sample_request(), BIG).unwrap();
        bytes.extend_from_slice(&[0x00, 0xff]);
        assert_eq!(
            decode_request(&bytes),
            Err(ProtocolError::TrailingBytes { count: 2 })
        );
        // A second complete message is trailing bytes too.
        let once = encode(&sample_request(), BIG).unwrap();
        let twice = [once.clone(), once].concat();
        assert!(matches!(
            decode_request(&twice),
            Err(ProtocolError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn empty_input_is_truncated() {
        assert_eq!(decode_request(&[]), Err(ProtocolError::Truncated));
        // A token's byte-string header promising 2^32 - 1 bytes.
        let mut bytes = encode(&sample_request(), BIG).unwrap();
        let header = bytes.len() - 4;
        assert_eq!(bytes[header], 0x43);
        bytes.truncate(header);
        bytes.extend_from_slice(&[0x5a, 0xff, 0xff, 0xff, 0xff, 1]);
        assert_eq!(decode_request(&bytes), Err(ProtocolError::Truncated));
    }

    /// Shapes a peer might send that our types cannot: used to build
    /// malformed input without hand-writing CBOR.
    #[derive(Serialize, Deserialize)]
    struct RawToken {
        network: serde_json_like::Any,
        kind: serde_json_like::Any,
        token: serde_json_like::Any,
    }

    mod serde_json_like {
        use serde::{Deserialize, Serialize};

        /// A few CBOR shapes, serialized untagged.
        #[derive(Serialize, Deserialize)]
        #[serde(untagged)]
        pub(super) enum Any {
            Text(String),
            Int(u64),
            Bytes(#[serde(with = "crate::byte_string")] Vec<u8>),
            Ints(Vec<u8>),
        }
    }

    #[derive(Serialize, Deserialize)]
    struct RawRequest {
        tokens: Vec<RawToken>,
    }

    fn raw_request(network: Any, kind: Any, token: Any) -> Vec<u8> {
        encode(
            &RawRequest {
                tokens: vec![RawToken {
                    network,
                    kind,
                    token,
                }],
            },
            BIG,
        )
        .unwrap()
    }

    use serde_json_like::Any;

    fn text(s: &str) -> Any {
        Any::Text(s.to_owned())
    }

    #[test]
    fn raw_request_helper_matches_real_encoding() {
        let raw = raw_request(text("acme"), text("membership"), Any::Bytes(vec![1, 2, 3]));
        assert_eq!(raw, encode(&sample_request(), BIG).unwrap());
        assert_eq!(decode_request(&raw), Ok(sample_request()));
    }

    #[test]
    fn wrong_types_are_refused() {
        // Token as an array of integers instead of a byte string.
        let raw = raw_request(text("acme"), text("membership"), Any::Ints(vec![1, 2, 3]));
        assert!(
            matches!(decode_request(&raw), Err(ProtocolError::WrongType { .. })),
            "{:?}",
            decode_request(&raw)
        );
        // Network as an integer.
        let raw = raw_request(Any::Int(7), text("membership"), Any::Bytes(vec![1]));
        assert!(
            matches!(decode_request(&raw), Err(ProtocolError::WrongType { .. })),
            "{:?}",
            decode_request(&raw)
        );
        // `tokens` as a string.
        #[derive(Serialize)]
        struct Bad {
            tokens: &'static str,
        }
        let raw = encode(
            &Bad {
                tokens: "all of them",
            },
            BIG,
        )
        .unwrap();
        assert!(matches!(
            decode_request(&raw),
            Err(ProtocolError::WrongType { .. })
        ));
        // A reply where a request is expected: the right shape for another type.
        let reply = encode(&JoinReply::Ack, BIG).unwrap();
        assert!(decode_request(&reply).is_err());
    }

    #[test]
    fn invalid_network_names_are_refused() {
        for bad in [
            "",
            "ACME",
            "a..b",
            "-a",
            "a/b",
            &"x".repeat(64),
            "evil\u{1b}[0m",
        ] {
            let raw = raw_request(text(bad), text("membership"), Any::Bytes(vec![1]));
            let err = decode_request(&raw).unwrap_err();
            assert!(
                matches!(err, ProtocolError::InvalidNetworkName { .. }),
                "{bad:?}: {err:?}"
            );
            assert!(!err.to_string().contains('\u{1b}'));
        }
    }

    #[test]
    fn unknown_codes_fields_and_variants_are_malformed() {
        let raw = raw_request(text("acme"), text("superuser"), Any::Bytes(vec![1]));
        assert!(matches!(
            decode_request(&raw),
            Err(ProtocolError::Malformed { .. })
        ));

        #[derive(Serialize)]
        struct Extra {
            tokens: Vec<u8>,
            admin: bool,
        }
        let raw = encode(
            &Extra {
                tokens: vec![],
                admin: true,
            },
            BIG,
        )
        .unwrap();
        assert!(matches!(
            decode_request(&raw),
            Err(ProtocolError::Malformed { .. })
        ));

        #[derive(Serialize)]
        struct Missing {}
        let raw = encode(&Missing {}, BIG).unwrap();
        assert!(matches!(
            decode_request(&raw),
            Err(ProtocolError::Malformed { .. })
        ));

        // An unknown variant name chosen by the peer is escaped and cut short.
        #[derive(Serialize)]
        enum Evil {
            #[serde(
                rename = "\u{1b}[2Jxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
            )]
            Variant,
        }
        let raw = encode(&Evil::Variant, BIG).unwrap();
        let err = decode::<JoinReply>(&raw, BIG, &Limits::default()).unwrap_err();
        let ProtocolError::Malformed { detail } = &err else {
            panic!("{err:?}")
        };
        assert!(!detail.contains('\u{1b}'), "{detail}");
        assert!(detail.chars().count() <= MAX_DETAIL_CHARS + 3, "{detail}");
    }

    #[test]
    fn too_many_tokens_are_refused() {
        let request = MembershipRequest {
            want: Vec::new(),
            tokens: (0..9)
                .map(|i| PresentedToken {
                    network: net(&format!("n{i}")),
                    kind: TokenKind::Membership,
                    token: vec![1],
                })
                .collect(),
        };
        let bytes = encode(&request, BIG).unwrap();
        assert_eq!(
            decode_request(&bytes),
            Err(ProtocolError::TooManyTokens { count: 9, max: 8 })
        );
    }

    fn join_request_bytes(label: &str) -> Vec<u8> {
        encode(
            &JoinMessage::Request(JoinRequest {
                network: net("acme"),
                label: label.to_owned(),
                invite: None,
            }),
            BIG,
        )
        .unwrap()
    }

    #[test]
    fn long_labels_and_control_characters_are_refused() {
        let limits = Limits::default();
        let decode_join = |bytes: &[u8]| decode::<JoinMessage>(bytes, BIG, &limits);
        assert_eq!(
            decode_join(&join_request_bytes(&"l".repeat(65))),
            Err(ProtocolError::TooLong {
                field: "label",
                len: 65,
                max: 64
            })
        );
        for bad in ["bell\u{7}", "esc\u{1b}[1m", "nul\0", "rtl\u{202E}gpj.exe"] {
            assert!(
                matches!(
                    decode_join(&join_request_bytes(bad)),
                    Err(ProtocolError::DisallowedCharacter { field: "label", .. })
                ),
                "{bad:?}"
            );
        }
    }

    fn membership_codec_with_cap(max: usize) -> MembershipCodec {
        MembershipCodec::new(max, max, Limits::default())
    }

    #[test]
    fn codec_accepts_exactly_the_cap() {
        let bytes = encode(&sample_request(), BIG).unwrap();
        let mut codec = membership_codec_with_cap(bytes.len());
        let mut io = Cursor::new(bytes);
        let got = block_on(codec.read_request(&crate::MEMBERSHIP_PROTOCOL, &mut io)).unwrap();
        assert_eq!(got, sample_request());
    }

    #[test]
    fn codec_refuses_over_the_cap() {
        let bytes = encode(&sample_request(), BIG).unwrap();
        let cap = bytes.len() - 1;
        let mut codec = membership_codec_with_cap(cap);
        let mut io = Cursor::new(bytes);
        let err = block_on(codec.read_request(&crate::MEMBERSHIP_PROTOCOL, &mut io)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            err.to_string(),
            format!("message exceeds the {cap}-byte cap")
        );
        // At most cap + 1 bytes were consumed from the stream.
        assert_eq!(io.position(), u64::try_from(cap + 1).unwrap());
    }

    #[test]
    fn codec_refuses_endless_stream_without_buffering_it() {
        // A valid message followed by a flood: over the cap, and not read
        // past cap + 1 bytes.
        let mut bytes = encode(&sample_request(), BIG).unwrap();
        bytes.resize(1 << 20, 0);
        let mut codec = MembershipCodec::membership(Limits::default());
        let mut io = Cursor::new(bytes);
        let err = block_on(codec.read_request(&crate::MEMBERSHIP_PROTOCOL, &mut io)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("33792"), "{err}");
        assert_eq!(io.position(), 33793);
    }

    #[test]
    fn codec_refuses_invalid_and_garbage_input() {
        let mut codec = JoinCodec::join(Limits::default());
        let mut io = Cursor::new(join_request_bytes("a\nb"));
        let err = block_on(codec.read_request(&crate::JOIN_PROTOCOL, &mut io)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let inner = err
            .get_ref()
            .unwrap()
            .downcast_ref::<ProtocolError>()
            .unwrap();
        assert!(matches!(inner, ProtocolError::DisallowedCharacter { .. }));

        let mut io = Cursor::new(vec![0xde, 0xad, 0xbe, 0xef]);
        let err = block_on(codec.read_response(&crate::JOIN_PROTOCOL, &mut io)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn codec_round_trips_both_directions() {
        let mut codec = JoinCodec::join(Limits::default());
        let protocol = crate::JOIN_PROTOCOL;
        let request = JoinMessage::Status { request_id: 42 };
        let reply = JoinReply::Pending { request_id: 42 };

        let mut wire = Cursor::new(Vec::new());
        block_on(codec.write_request(&protocol, &mut wire, request.clone())).unwrap();
        wire.set_position(0);
        assert_eq!(
            block_on(codec.read_request(&protocol, &mut wire)).unwrap(),
            request
        );

        let mut wire = Cursor::new(Vec::new());
        block_on(codec.write_response(&protocol, &mut wire, reply.clone())).unwrap();
        wire.set_position(0);
        assert_eq!(
            block_on(codec.read_response(&protocol, &mut wire)).unwrap(),
            reply
        );
    }

    #[test]
    fn codec_refuses_to_send_oversized_or_invalid_messages() {
        let bytes = encode(&sample_request(), BIG).unwrap();
        let mut codec = membership_codec_with_cap(bytes.len() - 1);
        let mut wire = Cursor::new(Vec::new());
        let err =
            block_on(codec.write_request(&crate::MEMBERSHIP_PROTOCOL, &mut wire, sample_request()))
                .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(wire.get_ref().is_empty(), "nothing was written");

        let mut codec = MembershipCodec::membership(Limits::default());
        let invalid = MembershipResponse {
            results: vec![
                NetworkResult {
                    network: net("a"),
                    outcome: Outcome::Accepted,
                };
                2
            ],
            tokens: Vec::new(),
        };
        let err = block_on(codec.write_response(&crate::MEMBERSHIP_PROTOCOL, &mut wire, invalid))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(wire.get_ref().is_empty(), "nothing was written");
    }

    #[test]
    fn codec_is_clone_debug_send_sync() {
        fn assert_traits<T: Clone + fmt::Debug + Send + Sync + 'static>() {}
        assert_traits::<MembershipCodec>();
        assert_traits::<JoinCodec>();
        let codec = MembershipCodec::membership(Limits::default());
        assert!(format!("{codec:?}").contains("MembershipRequest"));
        assert_eq!(codec.clone().max_request_bytes(), 33792);
        assert_eq!(
            JoinCodec::join(Limits::default()).max_response_bytes(),
            8192
        );
    }
}
