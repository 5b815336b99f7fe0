//! Wire types of the join protocol, [`JOIN_PROTOCOL`].
//!
//! A node sends [`JoinMessage::Request`] to a seednode whose delegation it
//! has verified, gets back [`JoinReply::Pending`] with a request id, and
//! polls with [`JoinMessage::Status`]. Requesting and receiving are
//! separate: when an operator approves while the node is offline, the
//! seednode pushes the token with [`JoinMessage::Deliver`] the next time the
//! node connects, and the node answers [`JoinReply::Ack`].
//!
//! [`JOIN_PROTOCOL`]: crate::JOIN_PROTOCOL

use serde::{Deserialize, Serialize};

use crate::membership::check_token;
use crate::validate::{check_invite, check_text};
use crate::{DenyReason, Limits, NetworkName, ProtocolError, ReasonCode, Validate};

/// A request to join a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The network to join.
    pub network: NetworkName,
    /// A human-readable name for the operator reviewing the request:
    /// 1..=`Limits::max_label_bytes` bytes of printable text.
    pub label: String,
    /// An invite code, if the requester has one: 1..=`Limits::max_invite_bytes`
    /// bytes of printable ASCII without spaces.
    pub invite: Option<String>,
}

/// A message on the join protocol's request side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum JoinMessage {
    /// Node to seednode: please let me join.
    Request(JoinRequest),
    /// Node to seednode: what became of this request?
    Status {
        /// The id from [`JoinReply::Pending`].
        request_id: u64,
    },
    /// Seednode to node: your request was approved, here is the token.
    Deliver {
        /// The network the token is for.
        network: NetworkName,
        /// The id of the approved request.
        request_id: u64,
        /// The membership token. A CBOR byte string.
        #[serde(with = "crate::byte_string")]
        token: Vec<u8>,
    },
}

/// A message on the join protocol's response side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum JoinReply {
    /// The request is queued for an operator.
    Pending {
        /// Id to poll with [`JoinMessage::Status`].
        request_id: u64,
    },
    /// The request was approved.
    Approved {
        /// The approved request.
        request_id: u64,
        /// The membership token. A CBOR byte string.
        #[serde(with = "crate::byte_string")]
        token: Vec<u8>,
    },
    /// The request was denied.
    Denied {
        /// The denied request, if it got as far as having an id.
        request_id: Option<u64>,
        /// Stable reason code.
        reason: DenyReason,
        /// Optional operator note: at most `Limits::max_message_text_bytes`
        /// bytes of printable text.
        message: Option<String>,
    },
    /// A [`JoinMessage::Deliver`] was received and stored.
    Ack,
    /// The message could not be handled at all.
    Error {
        /// Stable reason code.
        code: ReasonCode,
    },
}

impl Validate for JoinRequest {
    fn validate(&self, limits: &Limits) -> Result<(), ProtocolError> {
        check_text("label", &self.label, limits.max_label_bytes, true)?;
        if let Some(invite) = &self.invite {
            check_invite(invite, limits.max_invite_bytes)?;
        }
        Ok(())
    }
}

impl Validate for JoinMessage {
    fn validate(&self, limits: &Limits) -> Result<(), ProtocolError> {
        match self {
            JoinMessage::Request(request) => request.validate(limits),
            JoinMessage::Status { .. } => Ok(()),
            JoinMessage::Deliver { network, token, .. } => {
                check_token(Some(network), token, limits)
            }
        }
    }
}

impl Validate for JoinReply {
    fn validate(&self, limits: &Limits) -> Result<(), ProtocolError> {
        match self {
            JoinReply::Approved { token, .. } => check_token(None, token, limits),
            JoinReply::Denied {
                message: Some(message),
                ..
            } => check_text("message", message, limits.max_message_text_bytes, false),
            JoinReply::Pending { .. }
            | JoinReply::Denied { message: None, .. }
            | JoinReply::Ack
            | JoinReply::Error { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::membership::tests::token_bytes;
    use crate::network::tests::network_name;
    use crate::reason::tests::{deny_reason, reason_code};

    /// Printable labels up to 64 bytes: a visible first character, then up
    /// to 15 non-control characters of at most 4 bytes each.
    fn label() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9][\\PC&&[^\\u{2028}-\\u{202E}\\u{2060}-\\u{206F}\\u{00AD}\\u{061C}\\u{180E}\\u{200B}-\\u{200F}\\u{FEFF}\\u{FFF9}-\\u{FFFB}]]{0,15}"
    }

    fn invite() -> impl Strategy<Value = String> {
        "[!-~]{1,64}"
    }

    fn message_text() -> impl Strategy<Value = String> {
        "[\\PC&&[^\\u{2028}-\\u{202E}\\u{2060}-\\u{206F}\\u{00AD}\\u{061C}\\u{180E}\\u{200B}-\\u{200F}\\u{FEFF}\\u{FFF9}-\\u{FFFB}]]{0,64}"
    }

    pub(crate) fn join_request() -> impl Strategy<Value = JoinRequest> {
        (network_name(), label(), proptest::option::of(invite())).prop_map(
            |(network, label, invite)| JoinRequest {
                network,
                label,
                invite,
            },
        )
    }

    pub(crate) fn join_message() -> impl Strategy<Value = JoinMessage> {
        prop_oneof![
            join_request().prop_map(JoinMessage::Request),
            any::<u64>().prop_map(|request_id| JoinMessage::Status { request_id }),
            (
                network_name(),
                any::<u64>(),
                token_bytes(&Limits::default())
            )
                .prop_map(|(network, request_id, token)| JoinMessage::Deliver {
                    network,
                    request_id,
                    token
                }),
        ]
    }

    pub(crate) fn join_reply() -> impl Strategy<Value = JoinReply> {
        prop_oneof![
            any::<u64>().prop_map(|request_id| JoinReply::Pending { request_id }),
            (any::<u64>(), token_bytes(&Limits::default()))
                .prop_map(|(request_id, token)| JoinReply::Approved { request_id, token }),
            (
                proptest::option::of(any::<u64>()),
                deny_reason(),
                proptest::option::of(message_text())
            )
                .prop_map(|(request_id, reason, message)| JoinReply::Denied {
                    request_id,
                    reason,
                    message
                }),
            Just(JoinReply::Ack),
            reason_code().prop_map(|code| JoinReply::Error { code }),
        ]
    }

    fn request(label: &str, invite: Option<&str>) -> JoinMessage {
        JoinMessage::Request(JoinRequest {
            network: "acme".parse().unwrap(),
            label: label.to_owned(),
            invite: invite.map(str::to_owned),
        })
    }

    #[test]
    fn request_limits() {
        let limits = Limits::default();
        assert_eq!(
            request("alice's laptop", Some("XK2-99")).validate(&limits),
            Ok(())
        );
        assert_eq!(
            request(&"x".repeat(65), None).validate(&limits),
            Err(ProtocolError::TooLong {
                field: "label",
                len: 65,
                max: 64
            })
        );
        assert_eq!(
            request("", None).validate(&limits),
            Err(ProtocolError::Empty { field: "label" })
        );
        assert!(matches!(
            request("a\u{1b}[2Jb", None).validate(&limits),
            Err(ProtocolError::DisallowedCharacter {
                field: "label",
                position: 1,
                code: 0x1b,
                ..
            })
        ));
        assert!(matches!(
            request("ok", Some(&"i".repeat(65))).validate(&limits),
            Err(ProtocolError::TooLong {
                field: "invite",
                ..
            })
        ));
        let empty_delivery = JoinMessage::Deliver {
            network: "acme".parse().unwrap(),
            request_id: 1,
            token: Vec::new(),
        };
        assert!(matches!(
            empty_delivery.validate(&limits),
            Err(ProtocolError::TokenSize { len: 0, .. })
        ));
    }

    #[test]
    fn reply_limits() {
        let limits = Limits::default();
        let denied = |message: &str| JoinReply::Denied {
            request_id: None,
            reason: DenyReason::QueueFull,
            message: Some(message.to_owned()),
        };
        assert_eq!(denied("try again tomorrow").validate(&limits), Ok(()));
        assert!(matches!(
            denied(&"m".repeat(257)).validate(&limits),
            Err(ProtocolError::TooLong {
                field: "message",
                len: 257,
                max: 256
            })
        ));
        assert!(matches!(
            denied("line\nbreak").validate(&limits),
            Err(ProtocolError::DisallowedCharacter {
                field: "message",
                ..
            })
        ));
        let big = JoinReply::Approved {
            request_id: 1,
            token: vec![0; 4097],
        };
        assert!(matches!(
            big.validate(&limits),
            Err(ProtocolError::TokenSize {
                network: None,
                len: 4097,
                max: 4096
            })
        ));
    }
}
