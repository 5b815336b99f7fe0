//! Stable reason codes sent over the wire.
//!
//! Each code is a fixed snake_case string. Peers match on these strings, so
//! a code is never renamed or reused; a new code needs a new protocol
//! version, because an older peer refuses a message carrying a code it does
//! not know.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A string that is not one of the known codes of a code family.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {family}; allowed: {allowed}")]
#[non_exhaustive]
pub struct UnknownCodeError {
    /// The code family, e.g. "reason code".
    pub family: &'static str,
    /// The allowed codes, comma separated.
    pub allowed: &'static str,
}

/// Defines a fieldless enum that travels as one of a fixed set of strings.
macro_rules! wire_code {
    (
        $(#[$meta:meta])*
        $name:ident, $family:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $wire:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every code, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable wire string.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $wire, )+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownCodeError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $wire => Ok($name::$variant), )+
                    _ => Err(UnknownCodeError {
                        family: $family,
                        allowed: concat!($($wire, ", "),+).trim_end_matches(", "),
                    }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownCodeError;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl From<$name> for &'static str {
            fn from(code: $name) -> Self {
                code.as_str()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use wire_code;

wire_code! {
    /// Why a peer refused something: a membership token, a request, an RPC.
    ReasonCode, "reason code" {
        /// The token's validity period has ended.
        Expired => "expired",
        /// The token (or its issuer) is on the revocation list.
        Revoked => "revoked",
        /// The token was issued to a different peer id.
        WrongSubject => "wrong_subject",
        /// The receiver does not know or serve this network.
        UnknownNetwork => "unknown_network",
        /// The token's signature chain does not verify against the anchor.
        BadSignature => "bad_signature",
        /// The token or message could not be parsed.
        Malformed => "malformed",
        /// Local policy refuses the peer or the action.
        Policy => "policy",
        /// The network is strict and the peer is not allowed on it.
        StrictNetwork => "strict_network",
        /// No token was presented for a network the request needs, or (in the membership
        /// exchange) the presented token did not verify: undecodable, a failing signature, an
        /// unknown anchor or network all get this one code, so a refusal does not tell a
        /// stranger which networks the receiver is in.
        NotMember => "not_member",
        /// The peer sends too many requests.
        RateLimited => "rate_limited",
        /// The receiver failed internally; details stay in its logs.
        Internal => "internal",
        /// The receiver's revocation heads for the network are older than its
        /// `max_revocation_staleness`: it admits no new peers until it syncs.
        StaleRevocations => "stale_revocations",
        /// The receiver cannot serve the request for now (a seednode whose database is
        /// unreachable); nothing was applied, and asking again later may succeed.
        Unavailable => "unavailable",
    }
}

wire_code! {
    /// Why a seednode denied a join request.
    DenyReason, "deny reason" {
        /// An operator looked at the request and said no.
        DeniedByOperator => "denied_by_operator",
        /// The invite code is unknown, used up or expired.
        InvalidInvite => "invalid_invite",
        /// The seednode's queue of pending requests is full.
        QueueFull => "queue_full",
        /// The seednode does not know this network.
        UnknownNetwork => "unknown_network",
        /// The seednode knows the network but does not take join requests.
        NotServing => "not_serving",
        /// The requester sends too many requests.
        RateLimited => "rate_limited",
        /// The request could not be parsed or failed validation.
        Malformed => "malformed",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    pub(crate) fn reason_code() -> impl Strategy<Value = ReasonCode> {
        proptest::sample::select(ReasonCode::ALL)
    }

    pub(crate) fn deny_reason() -> impl Strategy<Value = DenyReason> {
        proptest::sample::select(DenyReason::ALL)
    }

    #[test]
    fn reason_codes_are_stable() {
        let wire: Vec<&str> = ReasonCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            wire,
            [
                "expired",
                "revoked",
                "wrong_subject",
                "unknown_network",
                "bad_signature",
                "malformed",
                "policy",
                "strict_network",
                "not_member",
                "rate_limited",
                "internal",
                "stale_revocations",
                "unavailable",
            ]
        );
    }

    #[test]
    fn deny_reasons_are_stable() {
        let wire: Vec<&str> = DenyReason::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            wire,
            [
                "denied_by_operator",
                "invalid_invite",
                "queue_full",
                "unknown_network",
                "not_serving",
                "rate_limited",
                "malformed",
            ]
        );
    }

    #[test]
    fn parse_display_and_serde_agree() {
        for &code in ReasonCode::ALL {
            assert_eq!(code.as_str().parse::<ReasonCode>().unwrap(), code);
            assert_eq!(code.to_string(), code.as_str());
            let bytes = cbor4ii::serde::to_vec(Vec::new(), &code).unwrap();
            let text = cbor4ii::serde::to_vec(Vec::new(), &code.as_str()).unwrap();
            assert_eq!(bytes, text, "{code} travels as a plain string");
        }
        for &code in DenyReason::ALL {
            assert_eq!(code.as_str().parse::<DenyReason>().unwrap(), code);
        }
    }

    #[test]
    fn unknown_code_is_refused() {
        let err = "Expired".parse::<ReasonCode>().unwrap_err();
        assert_eq!(err.family, "reason code");
        assert!(err.allowed.contains("strict_network"));
        assert!("".parse::<DenyReason>().is_err());
    }
}
