//! The one error type of encoding, decoding and validation.

use crate::{NetworkName, TokenKind};

/// Why a message was refused, on the way in or on the way out.
///
/// Texts never contain the peer's raw bytes: size errors name only the cap,
/// and decoder details are truncated and escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The encoded message is larger than the cap for its direction.
    #[error("message exceeds the {max}-byte cap")]
    TooLarge {
        /// The cap in bytes.
        max: usize,
    },
    /// The input ended in the middle of a CBOR item.
    #[error("message is truncated")]
    Truncated,
    /// Bytes follow the single CBOR item a message must consist of.
    #[error("{count} trailing bytes after the message")]
    TrailingBytes {
        /// How many bytes follow the message.
        count: usize,
    },
    /// A CBOR item has the wrong type for its field.
    #[error("wrong CBOR type: {detail}")]
    WrongType {
        /// What was expected and what was found.
        detail: String,
    },
    /// A network name in the message is invalid.
    #[error("{detail}")]
    InvalidNetworkName {
        /// Which rule was broken and what is allowed.
        detail: String,
    },
    /// Any other CBOR or shape problem: missing or unknown field, unknown
    /// variant or code, bad UTF-8, nesting too deep.
    #[error("malformed message: {detail}")]
    Malformed {
        /// Truncated, escaped description.
        detail: String,
    },
    /// A membership request carries more tokens than allowed.
    #[error("{count} tokens in one message; at most {max} allowed")]
    TooManyTokens {
        /// Tokens in the message.
        count: usize,
        /// `Limits::max_tokens_per_message`.
        max: usize,
    },
    /// A list in a message is longer than allowed.
    #[error("{count} {field} in one message; at most {max} allowed")]
    TooMany {
        /// What the list holds.
        field: &'static str,
        /// Its length.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A membership response carries more results than allowed.
    #[error("{count} results in one message; at most {max} allowed")]
    TooManyResults {
        /// Results in the message.
        count: usize,
        /// `Limits::max_tokens_per_message`.
        max: usize,
    },
    /// A token is empty or longer than `Limits::max_token_bytes`.
    #[error("token{} is {len} bytes; 1 to {max} allowed", for_network(.network.as_ref()))]
    TokenSize {
        /// The network the token is for, when the message names it.
        network: Option<NetworkName>,
        /// Token length in bytes.
        len: usize,
        /// `Limits::max_token_bytes`.
        max: usize,
    },
    /// The same network and token kind appear twice in one request.
    #[error("more than one {kind} token for network {network}")]
    DuplicateToken {
        /// The repeated network.
        network: NetworkName,
        /// The repeated kind.
        kind: TokenKind,
    },
    /// The same network appears twice in one response.
    #[error("more than one result for network {network}")]
    DuplicateResult {
        /// The repeated network.
        network: NetworkName,
    },
    /// A text field is longer than its limit.
    #[error("{field} is {len} bytes; at most {max} allowed")]
    TooLong {
        /// The field, e.g. "label".
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A required text field is empty or only whitespace.
    #[error("{field} is empty")]
    Empty {
        /// The field, e.g. "label".
        field: &'static str,
    },
    /// A text field contains a character it may not contain: a control
    /// character, an invisible formatting character, or (for invite codes)
    /// anything but printable ASCII.
    #[error("{field} contains character U+{code:04X} at byte {position}; allowed: {allowed}")]
    DisallowedCharacter {
        /// The field, e.g. "label".
        field: &'static str,
        /// Byte offset of the character.
        position: usize,
        /// Unicode scalar value of the character.
        code: u32,
        /// What the field may contain.
        allowed: &'static str,
    },
    /// Serialization failed locally.
    #[error("cannot encode message: {detail}")]
    Encode {
        /// The encoder's description.
        detail: String,
    },
}

fn for_network(network: Option<&NetworkName>) -> String {
    network.map_or_else(String::new, |n| format!(" for network {n}"))
}

impl From<ProtocolError> for std::io::Error {
    /// Maps to `InvalidData`, the kind libp2p request-response expects for a
    /// peer's bad message.
    fn from(err: ProtocolError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, err)
    }
}
