//! The validated network name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest allowed network name, in bytes. Chosen so the name fits in one
/// DNS label and keeps `/cordon/<network>/kad/1.0.0` short.
pub const MAX_NETWORK_NAME_BYTES: usize = 63;

/// What a network name may look like; appended to every error.
const ALLOWED: &str = "allowed: 1 to 63 bytes of lowercase ASCII letters, digits, '-' and '.', \
                       starting and ending with a letter or digit, without \"..\"";

/// Every [`NetworkNameError`] message starts with this, which lets the codec
/// recognise the error after serde has turned it into a string.
pub(crate) const ERROR_PREFIX: &str = "invalid network name: ";

/// The name of a Cordon network, e.g. `acme` or `lab.acme-2`.
///
/// Valid by construction: 1..=63 bytes of `a-z`, `0-9`, `-` and `.`,
/// starting and ending with a letter or digit, with no `..`. It appears in
/// protocol names, so it can never contain `/`. Serialized as a plain string
/// and validated again on deserialization.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NetworkName(String);

/// Why a string is not a valid [`NetworkName`]. Messages name the offending
/// position and character code but never repeat the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkNameError {
    /// The name is empty.
    #[error("invalid network name: it is empty; {}", ALLOWED)]
    Empty,
    /// The name is longer than [`MAX_NETWORK_NAME_BYTES`].
    #[error("invalid network name: it is {len} bytes long; {}", ALLOWED)]
    TooLong {
        /// Length of the rejected name in bytes.
        len: usize,
    },
    /// A character outside `a-z`, `0-9`, `-`, `.`.
    #[error(
        "invalid network name: character U+{code:04X} at byte {position}; {}",
        ALLOWED
    )]
    InvalidCharacter {
        /// Byte offset of the character.
        position: usize,
        /// Unicode scalar value of the character.
        code: u32,
    },
    /// The first or last character is `-` or `.`.
    #[error(
        "invalid network name: byte {position} is '-' or '.' at an edge; {}",
        ALLOWED
    )]
    BadEdge {
        /// Byte offset of the offending character.
        position: usize,
    },
    /// Two consecutive dots.
    #[error("invalid network name: \"..\" at byte {position}; {}", ALLOWED)]
    ConsecutiveDots {
        /// Byte offset of the first dot.
        position: usize,
    },
}

impl NetworkName {
    /// Validates `name` and wraps it.
    pub fn new(name: impl Into<String>) -> Result<Self, NetworkNameError> {
        let name = name.into();
        validate(&name)?;
        Ok(Self(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Unwraps the name.
    pub fn into_string(self) -> String {
        self.0
    }
}

fn validate(name: &str) -> Result<(), NetworkNameError> {
    if name.is_empty() {
        return Err(NetworkNameError::Empty);
    }
    if name.len() > MAX_NETWORK_NAME_BYTES {
        return Err(NetworkNameError::TooLong { len: name.len() });
    }
    if let Some((position, c)) = name
        .char_indices()
        .find(|&(_, c)| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '.'))
    {
        return Err(NetworkNameError::InvalidCharacter {
            position,
            code: u32::from(c),
        });
    }
    // From here on the name is ASCII, so bytes and chars coincide.
    let bytes = name.as_bytes();
    let edge = |b: u8| b == b'-' || b == b'.';
    if edge(bytes[0]) {
        return Err(NetworkNameError::BadEdge { position: 0 });
    }
    if edge(bytes[bytes.len() - 1]) {
        return Err(NetworkNameError::BadEdge {
            position: bytes.len() - 1,
        });
    }
    if let Some(position) = name.find("..") {
        return Err(NetworkNameError::ConsecutiveDots { position });
    }
    Ok(())
}

impl TryFrom<String> for NetworkName {
    type Error = NetworkNameError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::new(name)
    }
}

impl TryFrom<&str> for NetworkName {
    type Error = NetworkNameError;

    fn try_from(name: &str) -> Result<Self, Self::Error> {
        Self::new(name)
    }
}

impl FromStr for NetworkName {
    type Err = NetworkNameError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::new(name)
    }
}

impl From<NetworkName> for String {
    fn from(name: NetworkName) -> Self {
        name.0
    }
}

impl AsRef<str> for NetworkName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NetworkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Valid network names, including dots and dashes inside.
    pub(crate) fn network_name() -> impl Strategy<Value = NetworkName> {
        "[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?"
            .prop_filter("no ..", |s| !s.contains(".."))
            .prop_map(|s| NetworkName::new(s).unwrap())
    }

    #[test]
    fn accepts_valid_names() {
        for name in ["a", "0", "acme", "lab.acme-2", "a-b.c-d", &"x".repeat(63)] {
            assert_eq!(NetworkName::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn rejects_invalid_names() {
        use NetworkNameError::*;
        let cases: &[(&str, NetworkNameError)] = &[
            ("", Empty),
            (&"x".repeat(64), TooLong { len: 64 }),
            (
                "Acme",
                InvalidCharacter {
                    position: 0,
                    code: 'A' as u32,
                },
            ),
            (
                "ac me",
                InvalidCharacter {
                    position: 2,
                    code: ' ' as u32,
                },
            ),
            (
                "a/b",
                InvalidCharacter {
                    position: 1,
                    code: '/' as u32,
                },
            ),
            (
                "a_b",
                InvalidCharacter {
                    position: 1,
                    code: '_' as u32,
                },
            ),
            (
                "né",
                InvalidCharacter {
                    position: 1,
                    code: 'é' as u32,
                },
            ),
            ("-a", BadEdge { position: 0 }),
            (".a", BadEdge { position: 0 }),
            ("a-", BadEdge { position: 1 }),
            ("a.", BadEdge { position: 1 }),
            ("a..b", ConsecutiveDots { position: 1 }),
        ];
        for (input, expected) in cases {
            assert_eq!(
                &NetworkName::new(*input).unwrap_err(),
                expected,
                "{input:?}"
            );
        }
    }

    #[test]
    fn error_says_what_is_allowed_without_echoing_input() {
        let err = NetworkName::new("EVIL\u{1b}[31m").unwrap_err().to_string();
        assert!(err.starts_with(ERROR_PREFIX), "{err}");
        assert!(err.contains("lowercase ASCII letters"), "{err}");
        assert!(!err.contains("EVIL"), "{err}");
    }

    proptest! {
        #[test]
        fn parse_display_round_trip(name in network_name()) {
            let parsed: NetworkName = name.to_string().parse().unwrap();
            prop_assert_eq!(parsed, name);
        }

        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC{0,80}") {
            if let Ok(name) = NetworkName::new(s.clone()) {
                prop_assert!(name.as_str().len() <= MAX_NETWORK_NAME_BYTES);
                prop_assert!(!name.as_str().contains('/'));
            }
        }
    }
}
