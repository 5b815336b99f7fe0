//! Bounds on message sizes and contents.

/// Default cap on one token, in bytes.
const DEFAULT_MAX_TOKEN_BYTES: usize = 4096;
/// Default cap on tokens (and results) per membership message.
const DEFAULT_MAX_TOKENS_PER_MESSAGE: usize = 8;
/// Default cap on the encoded size of a membership message: room for a
/// full set of maximal tokens plus 1 KiB of framing (names, keys, headers).
const DEFAULT_MEMBERSHIP_MAX_BYTES: usize =
    DEFAULT_MAX_TOKENS_PER_MESSAGE * DEFAULT_MAX_TOKEN_BYTES + 1024;
/// Default cap on the encoded size of a membership response: a full set of
/// maximal tokens (the answering side's own) plus a full set of results, with
/// 2 KiB for both.
const DEFAULT_MEMBERSHIP_MAX_RESPONSE_BYTES: usize =
    DEFAULT_MAX_TOKENS_PER_MESSAGE * DEFAULT_MAX_TOKEN_BYTES + 2048;
/// Default cap on the encoded size of a join message.
const DEFAULT_JOIN_MAX_BYTES: usize = 8192;
/// Default cap on the encoded size of an rpc request: room for a maximal
/// `dht_put` (key, value, publisher key, signature) with ample framing.
const DEFAULT_RPC_MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Default cap on the encoded size of an rpc response: room for a maximal
/// peer list (256 peer ids of about 52 characters) or record.
const DEFAULT_RPC_MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Bounds every message must respect, on decode and on encode.
///
/// The defaults are safe for production; each field says its default. A
/// peer's message over any bound is refused before the application sees it.
/// Both sides of a connection should use the same limits: a message within
/// our limits but over the peer's is refused by the peer.
///
/// As a config section every field is optional (the default stays) and an
/// unknown one is refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest token (membership, delegation or delivered) in bytes.
    /// Default: 4096.
    pub max_token_bytes: usize,
    /// Most tokens in one membership request, and most results in one
    /// membership response. Default: 8.
    pub max_tokens_per_message: usize,
    /// Longest join-request label in bytes. Default: 64.
    pub max_label_bytes: usize,
    /// Longest invite code in bytes. Default: 64.
    pub max_invite_bytes: usize,
    /// Longest free-text message (e.g. in a join denial) in bytes.
    /// Default: 256.
    pub max_message_text_bytes: usize,
    /// Largest encoded membership request. Default: 33792 (8 * 4096 + 1024).
    pub membership_max_request_bytes: usize,
    /// Largest encoded membership response (results and the answering side's own tokens).
    /// Default: 34816 (8 * 4096 + 2048).
    pub membership_max_response_bytes: usize,
    /// Largest encoded join message (request side). Default: 8192.
    pub join_max_request_bytes: usize,
    /// Largest encoded join reply (response side). Default: 8192.
    pub join_max_response_bytes: usize,
    /// Largest encoded rpc request. Default: 16384.
    pub rpc_max_request_bytes: usize,
    /// Largest encoded rpc response. Default: 65536.
    pub rpc_max_response_bytes: usize,
    /// Largest payload of an rpc `echo`, in bytes. Default: 1024.
    pub max_echo_bytes: usize,
    /// Longest record key, in bytes (records need a non-empty key).
    /// Default: 128.
    pub max_record_key_bytes: usize,
    /// Largest record value, in bytes. Default: 4096.
    pub max_record_value_bytes: usize,
    /// Most peer ids in one rpc `peers` result. Default: 256.
    pub rpc_max_peers: usize,
    /// Most network names in one rpc `info` result. Default: 16.
    pub rpc_max_networks: usize,
    /// Largest encoded revocation message (a snapshot of a signer's set travels in one).
    /// Default: 1048576 (about 30,000 entries).
    pub revocation_max_bytes: usize,
    /// Most revocation signers (seednodes and anchors) per network in one message.
    /// Default: 16.
    pub max_revocation_signers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            max_tokens_per_message: DEFAULT_MAX_TOKENS_PER_MESSAGE,
            max_label_bytes: 64,
            max_invite_bytes: 64,
            max_message_text_bytes: 256,
            membership_max_request_bytes: DEFAULT_MEMBERSHIP_MAX_BYTES,
            membership_max_response_bytes: DEFAULT_MEMBERSHIP_MAX_RESPONSE_BYTES,
            join_max_request_bytes: DEFAULT_JOIN_MAX_BYTES,
            join_max_response_bytes: DEFAULT_JOIN_MAX_BYTES,
            rpc_max_request_bytes: DEFAULT_RPC_MAX_REQUEST_BYTES,
            rpc_max_response_bytes: DEFAULT_RPC_MAX_RESPONSE_BYTES,
            max_echo_bytes: 1024,
            max_record_key_bytes: 128,
            max_record_value_bytes: 4096,
            rpc_max_peers: 256,
            rpc_max_networks: 16,
            revocation_max_bytes: 1024 * 1024,
            max_revocation_signers: 16,
        }
    }
}

impl Limits {
    /// Checks each bound is usable: at least what one well-formed message of
    /// its kind needs, at most 16 times the default (a bound far above every
    /// peer's would only let this side send what all of them refuse).
    /// Returns the field and what is accepted.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let d = Self::default();
        let fields: [(&'static str, usize, usize, usize); 18] = [
            (
                "max_token_bytes",
                self.max_token_bytes,
                512,
                d.max_token_bytes,
            ),
            (
                "max_tokens_per_message",
                self.max_tokens_per_message,
                1,
                d.max_tokens_per_message,
            ),
            (
                "max_label_bytes",
                self.max_label_bytes,
                1,
                d.max_label_bytes,
            ),
            (
                "max_invite_bytes",
                self.max_invite_bytes,
                8,
                d.max_invite_bytes,
            ),
            (
                "max_message_text_bytes",
                self.max_message_text_bytes,
                16,
                d.max_message_text_bytes,
            ),
            (
                "membership_max_request_bytes",
                self.membership_max_request_bytes,
                1024,
                d.membership_max_request_bytes,
            ),
            (
                "membership_max_response_bytes",
                self.membership_max_response_bytes,
                1024,
                d.membership_max_response_bytes,
            ),
            (
                "join_max_request_bytes",
                self.join_max_request_bytes,
                1024,
                d.join_max_request_bytes,
            ),
            (
                "join_max_response_bytes",
                self.join_max_response_bytes,
                1024,
                d.join_max_response_bytes,
            ),
            (
                "rpc_max_request_bytes",
                self.rpc_max_request_bytes,
                1024,
                d.rpc_max_request_bytes,
            ),
            (
                "rpc_max_response_bytes",
                self.rpc_max_response_bytes,
                1024,
                d.rpc_max_response_bytes,
            ),
            ("max_echo_bytes", self.max_echo_bytes, 1, d.max_echo_bytes),
            (
                "max_record_key_bytes",
                self.max_record_key_bytes,
                1,
                d.max_record_key_bytes,
            ),
            (
                "max_record_value_bytes",
                self.max_record_value_bytes,
                1,
                d.max_record_value_bytes,
            ),
            ("rpc_max_peers", self.rpc_max_peers, 1, d.rpc_max_peers),
            (
                "rpc_max_networks",
                self.rpc_max_networks,
                1,
                d.rpc_max_networks,
            ),
            (
                "revocation_max_bytes",
                self.revocation_max_bytes,
                4096,
                d.revocation_max_bytes,
            ),
            (
                "max_revocation_signers",
                self.max_revocation_signers,
                1,
                d.max_revocation_signers,
            ),
        ];
        for (field, value, min, default) in fields {
            let max = default.saturating_mul(16);
            if value < min || value > max {
                return Err((
                    field,
                    format!("must be between {min} and {max}, got {value}"),
                ));
            }
        }
        let presentation = self
            .max_tokens_per_message
            .saturating_mul(self.max_token_bytes);
        if self.membership_max_request_bytes < presentation {
            return Err((
                "membership_max_request_bytes",
                format!(
                    "must hold max_tokens_per_message tokens of max_token_bytes ({presentation} \
                     bytes), got {}",
                    self.membership_max_request_bytes
                ),
            ));
        }
        if self.join_max_response_bytes < self.max_token_bytes {
            return Err((
                "join_max_response_bytes",
                format!(
                    "must hold one token of max_token_bytes ({}), got {}",
                    self.max_token_bytes, self.join_max_response_bytes
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_defaults() {
        let l = Limits::default();
        assert_eq!(l.max_token_bytes, 4096);
        assert_eq!(l.max_tokens_per_message, 8);
        assert_eq!(l.max_label_bytes, 64);
        assert_eq!(l.max_invite_bytes, 64);
        assert_eq!(l.max_message_text_bytes, 256);
        assert_eq!(l.membership_max_request_bytes, 33792);
        assert_eq!(l.membership_max_response_bytes, 34816);
        assert_eq!(l.join_max_request_bytes, 8192);
        assert_eq!(l.join_max_response_bytes, 8192);
        assert_eq!(l.rpc_max_request_bytes, 16384);
        assert_eq!(l.rpc_max_response_bytes, 65536);
        assert_eq!(l.max_echo_bytes, 1024);
        assert_eq!(l.max_record_key_bytes, 128);
        assert_eq!(l.max_record_value_bytes, 4096);
        assert_eq!(l.rpc_max_peers, 256);
        assert_eq!(l.rpc_max_networks, 16);
        assert_eq!(l.validate(), Ok(()));
    }

    #[test]
    fn unusable_bounds_are_refused() {
        let zero = Limits {
            max_tokens_per_message: 0,
            ..Limits::default()
        };
        assert_eq!(zero.validate().unwrap_err().0, "max_tokens_per_message");
        let tight = Limits {
            membership_max_request_bytes: 4096,
            ..Limits::default()
        };
        assert_eq!(
            tight.validate().unwrap_err().0,
            "membership_max_request_bytes"
        );
    }
}
