//! Wire types of the membership exchange, [`MEMBERSHIP_PROTOCOL`].
//!
//! On a new connection the dialer sends a [`MembershipRequest`] with its
//! tokens for the networks it dialed the peer for. The listener answers with
//! a [`MembershipResponse`]: one [`NetworkResult`] per network it considered
//! and, for each network whose token it accepted, its own token of that
//! network, so both sides are proven in one round trip. The listener's token
//! is never sent before the dialer's verified, so a stranger learns nothing.
//! Either side may present again later (a renewed token, another network) by
//! the same request. A seednode presents its delegation the same way, and to a
//! joining node that asked for it (`want`), so the node can check it before
//! sending join requests.
//!
//! [`MEMBERSHIP_PROTOCOL`]: crate::MEMBERSHIP_PROTOCOL

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::reason::{UnknownCodeError, wire_code};
use crate::{Limits, NetworkName, ProtocolError, ReasonCode, Validate};

wire_code! {
    /// What a presented token claims to be.
    TokenKind, "token kind" {
        /// A node's membership token for the network.
        Membership => "membership",
        /// A seednode's delegation from the network's trust anchor.
        Delegation => "delegation",
    }
}

/// One token offered for one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresentedToken {
    /// The network the token is for.
    pub network: NetworkName,
    /// Whether this is a membership token or a delegation.
    pub kind: TokenKind,
    /// The serialized token, opaque to this crate. A CBOR byte string.
    #[serde(with = "crate::byte_string")]
    pub token: Vec<u8>,
}

/// The tokens one side presents on a new connection.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipRequest {
    /// At most `Limits::max_tokens_per_message`, at most one per network and
    /// kind. May be empty (a node that only wants to join).
    pub tokens: Vec<PresentedToken>,
    /// Networks whose seednode delegation the sender asks for (it is joining them and holds
    /// no token yet). A seednode presents a network's delegation only to a peer that asked for
    /// it here or proved the network, so it never tells a stranger which networks it serves.
    /// At most `Limits::max_tokens_per_message`, no repeats.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub want: Vec<NetworkName>,
}

/// The answer to a [`MembershipRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipResponse {
    /// At most `Limits::max_tokens_per_message`, at most one per network.
    pub results: Vec<NetworkResult>,
    /// The answering side's own tokens: one for each network whose token in the request it
    /// accepted (its membership, or a seednode's delegation), and a seednode's delegation for
    /// each network the request asked for (`want`). The requester takes only tokens of networks
    /// it presented or asked for. Same bounds as [`MembershipRequest::tokens`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<PresentedToken>,
}

/// The verdict on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkResult {
    /// The network judged.
    pub network: NetworkName,
    /// Accepted, or rejected with a stable reason.
    pub outcome: Outcome,
}

/// Whether a network's membership was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// The peer is a verified member of the network on this connection.
    Accepted,
    /// The peer is not, and this is why.
    Rejected {
        /// Stable reason code.
        reason: ReasonCode,
    },
}

impl Validate for PresentedToken {
    fn validate(&self, limits: &Limits) -> Result<(), ProtocolError> {
        check_token(Some(&self.network), &self.token, limits)
    }
}

/// A token must be non-empty and at most `Limits::max_token_bytes`.
pub(crate) fn check_token(
    network: Option<&NetworkName>,
    token: &[u8],
    limits: &Limits,
) -> Result<(), ProtocolError> {
    if token.is_empty() || token.len() > limits.max_token_bytes {
        return Err(ProtocolError::TokenSize {
            network: network.cloned(),
            len: token.len(),
            max: limits.max_token_bytes,
        });
    }
    Ok(())
}

impl Validate for MembershipRequest {
    fn validate(&self, limits: &Limits) -> Result<(), ProtocolError> {
        if self.want.len() > limits.max_tokens_per_message {
            return Err(ProtocolError::TooManyTokens {
                count: self.want.len(),
                max: limits.max_tokens_per_message,
            });
        }
        let mut wanted = BTreeSet::new();
        for network in &self.want {
            if !wanted.insert(network) {
                return Err(ProtocolError::DuplicateToken {
                    network: network.clone(),
                    kind: TokenKind::Delegation,
                });
            }
        }
        check_tokens(&self.tokens, limits)
    }
}

/// At most `Limits::max_tokens_per_message` tokens, each within its size cap, at most one per
/// network and kind: two tokens of one kind for one network would leave the verifier to guess
/// which one counts, so the ambiguity is refused.
fn check_tokens(tokens: &[PresentedToken], limits: &Limits) -> Result<(), ProtocolError> {
    if tokens.len() > limits.max_tokens_per_message {
        return Err(ProtocolError::TooManyTokens {
            count: tokens.len(),
            max: limits.max_tokens_per_message,
        });
    }
    let mut seen = BTreeSet::new();
    for presented in tokens {
        presented.validate(limits)?;
        if !seen.insert((&presented.network, presented.kind)) {
            return Err(ProtocolError::DuplicateToken {
                network: presented.network.clone(),
                kind: presented.kind,
            });
        }
    }
    Ok(())
}

impl Validate for NetworkResult {
    fn validate(&self, _limits: &Limits) -> Result<(), ProtocolError> {
        // The network name and reason code are valid by construction.
        Ok(())
    }
}

impl Validate for MembershipResponse {
    fn validate(&self, limits: &Limits) -> Result<(), ProtocolError> {
        if self.results.len() > limits.max_tokens_per_message {
            return Err(ProtocolError::TooManyResults {
                count: self.results.len(),
                max: limits.max_tokens_per_message,
            });
        }
        let mut seen = BTreeSet::new();
        for result in &self.results {
            result.validate(limits)?;
            if !seen.insert(&result.network) {
                return Err(ProtocolError::DuplicateResult {
                    network: result.network.clone(),
                });
            }
        }
        check_tokens(&self.tokens, limits)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::network::tests::network_name;
    use crate::reason::tests::reason_code;

    pub(crate) fn token_bytes(limits: &Limits) -> impl Strategy<Value = Vec<u8>> + use<> {
        proptest::collection::vec(any::<u8>(), 1..=limits.max_token_bytes)
    }

    fn token_kind() -> impl Strategy<Value = TokenKind> {
        proptest::sample::select(TokenKind::ALL)
    }

    pub(crate) fn presented_token() -> impl Strategy<Value = PresentedToken> {
        (
            network_name(),
            token_kind(),
            token_bytes(&Limits::default()),
        )
            .prop_map(|(network, kind, token)| PresentedToken {
                network,
                kind,
                token,
            })
    }

    pub(crate) fn membership_request() -> impl Strategy<Value = MembershipRequest> {
        proptest::collection::vec(
            presented_token(),
            0..=Limits::default().max_tokens_per_message,
        )
        .prop_map(|tokens| {
            let mut seen = BTreeSet::new();
            let tokens = tokens
                .into_iter()
                .filter(|t| seen.insert((t.network.clone(), t.kind)))
                .collect();
            MembershipRequest {
                want: Vec::new(),
                tokens,
            }
        })
    }

    pub(crate) fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::Accepted),
            reason_code().prop_map(|reason| Outcome::Rejected { reason }),
        ]
    }

    pub(crate) fn network_result() -> impl Strategy<Value = NetworkResult> {
        (network_name(), outcome())
            .prop_map(|(network, outcome)| NetworkResult { network, outcome })
    }

    pub(crate) fn membership_response() -> impl Strategy<Value = MembershipResponse> {
        (
            proptest::collection::vec(
                network_result(),
                0..=Limits::default().max_tokens_per_message,
            ),
            membership_request(),
        )
            .prop_map(|(results, presented)| {
                let mut seen = BTreeSet::new();
                let results = results
                    .into_iter()
                    .filter(|r| seen.insert(r.network.clone()))
                    .collect();
                MembershipResponse {
                    results,
                    tokens: presented.tokens,
                }
            })
    }

    fn net(name: &str) -> NetworkName {
        name.parse().unwrap()
    }

    fn token(network: &str, kind: TokenKind, len: usize) -> PresentedToken {
        PresentedToken {
            network: net(network),
            kind,
            token: vec![7; len],
        }
    }

    #[test]
    fn wanted_networks_are_bounded_and_unique() {
        let limits = Limits::default();
        let ask = |names: &[&str]| MembershipRequest {
            want: names.iter().map(|n| net(n)).collect(),
            tokens: Vec::new(),
        };
        assert_eq!(ask(&["mainnet", "testnet"]).validate(&limits), Ok(()));
        let nine: Vec<String> = (0..9).map(|i| format!("n{i}")).collect();
        let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
        assert_eq!(
            ask(&nine).validate(&limits),
            Err(ProtocolError::TooManyTokens { count: 9, max: 8 })
        );
        assert!(matches!(
            ask(&["mainnet", "mainnet"]).validate(&limits),
            Err(ProtocolError::DuplicateToken { .. })
        ));
        // An old peer's request (no `want` field) still decodes, and an empty `want` is not
        // sent at all.
        let encoded = crate::codec::encode(&ask(&[]), 1024).unwrap();
        let plain =
            crate::codec::encode(&MembershipRequestWithoutWant { tokens: Vec::new() }, 1024)
                .unwrap();
        assert_eq!(encoded, plain);
    }

    #[derive(serde::Serialize)]
    struct MembershipRequestWithoutWant {
        tokens: Vec<PresentedToken>,
    }

    #[test]
    fn request_limits() {
        let limits = Limits::default();
        let ok = MembershipRequest {
            want: Vec::new(),
            tokens: vec![
                token("a", TokenKind::Membership, 1),
                token("a", TokenKind::Delegation, 4096),
            ],
        };
        assert_eq!(ok.validate(&limits), Ok(()));

        let too_many = MembershipRequest {
            want: Vec::new(),
            tokens: (0..9)
                .map(|i| token(&format!("n{i}"), TokenKind::Membership, 1))
                .collect(),
        };
        assert_eq!(
            too_many.validate(&limits),
            Err(ProtocolError::TooManyTokens { count: 9, max: 8 })
        );

        for len in [0, 4097] {
            let bad = MembershipRequest {
                want: Vec::new(),
                tokens: vec![token("a", TokenKind::Membership, len)],
            };
            assert!(matches!(
                bad.validate(&limits),
                Err(ProtocolError::TokenSize { len: l, max: 4096, .. }) if l == len
            ));
        }

        let dup = MembershipRequest {
            want: Vec::new(),
            tokens: vec![
                token("a", TokenKind::Membership, 1),
                token("a", TokenKind::Membership, 2),
            ],
        };
        assert_eq!(
            dup.validate(&limits),
            Err(ProtocolError::DuplicateToken {
                network: net("a"),
                kind: TokenKind::Membership
            })
        );
    }

    #[test]
    fn response_limits() {
        let limits = Limits::default();
        let result = |n: &str| NetworkResult {
            network: net(n),
            outcome: Outcome::Accepted,
        };
        let too_many = MembershipResponse {
            results: (0..9).map(|i| result(&format!("n{i}"))).collect(),
            tokens: Vec::new(),
        };
        assert_eq!(
            too_many.validate(&limits),
            Err(ProtocolError::TooManyResults { count: 9, max: 8 })
        );
        let dup = MembershipResponse {
            results: vec![result("a"), result("a")],
            tokens: Vec::new(),
        };
        assert_eq!(
            dup.validate(&limits),
            Err(ProtocolError::DuplicateResult { network: net("a") })
        );
        // The answering side's own tokens have the request's bounds.
        let answered = |tokens| MembershipResponse {
            results: vec![result("a")],
            tokens,
        };
        assert_eq!(
            answered(vec![token("a", TokenKind::Membership, 4096)]).validate(&limits),
            Ok(())
        );
        assert!(matches!(
            answered(vec![token("a", TokenKind::Membership, 4097)]).validate(&limits),
            Err(ProtocolError::TokenSize { len: 4097, .. })
        ));
        assert_eq!(
            answered(vec![
                token("a", TokenKind::Membership, 1),
                token("a", TokenKind::Membership, 1)
            ])
            .validate(&limits),
            Err(ProtocolError::DuplicateToken {
                network: net("a"),
                kind: TokenKind::Membership
            })
        );
        assert_eq!(
            answered(
                (0..9)
                    .map(|i| token(&format!("n{i}"), TokenKind::Membership, 1))
                    .collect()
            )
            .validate(&limits),
            Err(ProtocolError::TooManyTokens { count: 9, max: 8 })
        );
    }
}
