//! The `Validate` trait and the text rules shared by message fields.

use crate::{Limits, ProtocolError};

/// A wire message that can check itself against [`Limits`].
///
/// [`decode`](crate::decode) runs this on every message before returning it,
/// and [`CborCodec`](crate::CborCodec) also runs it before sending.
pub trait Validate {
    /// Checks counts, lengths and contents against `limits`.
    fn validate(&self, limits: &Limits) -> Result<(), ProtocolError>;
}

/// Allowed contents of human-readable text fields.
const PRINTABLE: &str = "printable text without control or invisible formatting characters";

/// Allowed contents of invite codes.
const INVITE: &str = "printable ASCII without spaces";

/// Characters that render as nothing or reorder text. They let a label shown
/// to an operator look like something it is not (e.g. a right-to-left
/// override making "exe.txt" read as "txt.exe").
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

/// Checks human-readable text: at most `max` bytes, no control or invisible
/// formatting characters, and if `required`, not blank.
pub(crate) fn check_text(
    field: &'static str,
    text: &str,
    max: usize,
    required: bool,
) -> Result<(), ProtocolError> {
    if text.len() > max {
        return Err(ProtocolError::TooLong {
            field,
            len: text.len(),
            max,
        });
    }
    if let Some((position, c)) = text
        .char_indices()
        .find(|&(_, c)| c.is_control() || is_invisible_format(c))
    {
        return Err(ProtocolError::DisallowedCharacter {
            field,
            position,
            code: u32::from(c),
            allowed: PRINTABLE,
        });
    }
    if required && text.trim().is_empty() {
        return Err(ProtocolError::Empty { field });
    }
    Ok(())
}

/// Checks an invite code: 1..=`max` bytes of printable ASCII, no spaces.
pub(crate) fn check_invite(invite: &str, max: usize) -> Result<(), ProtocolError> {
    const FIELD: &str = "invite";
    if invite.len() > max {
        return Err(ProtocolError::TooLong {
            field: FIELD,
            len: invite.len(),
            max,
        });
    }
    if invite.is_empty() {
        return Err(ProtocolError::Empty { field: FIELD });
    }
    if let Some((position, c)) = invite.char_indices().find(|&(_, c)| !c.is_ascii_graphic()) {
        return Err(ProtocolError::DisallowedCharacter {
            field: FIELD,
            position,
            code: u32::from(c),
            allowed: INVITE,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rules() {
        assert!(check_text("label", "laptop of Zoë 🚀", 64, true).is_ok());
        assert!(check_text("message", "", 64, false).is_ok());
        assert_eq!(
            check_text("label", " \t", 64, true).unwrap_err(),
            ProtocolError::DisallowedCharacter {
                field: "label",
                position: 1,
                code: 9,
                allowed: PRINTABLE
            }
        );
        assert_eq!(
            check_text("label", "   ", 64, true).unwrap_err(),
            ProtocolError::Empty { field: "label" }
        );
        for bad in [
            "a\nb",
            "a\u{1b}[2J",
            "a\u{7f}",
            "a\u{85}",
            "a\u{202E}b",
            "\u{200B}",
            "a\u{FEFF}",
        ] {
            assert!(
                matches!(
                    check_text("label", bad, 64, true),
                    Err(ProtocolError::DisallowedCharacter { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            check_text("label", &"é".repeat(33), 64, true),
            Err(ProtocolError::TooLong {
                len: 66,
                max: 64,
                ..
            })
        ));
    }

    #[test]
    fn invite_rules() {
        assert!(check_invite("AbC-123_xyz", 64).is_ok());
        assert_eq!(
            check_invite("", 64).unwrap_err(),
            ProtocolError::Empty { field: "invite" }
        );
        assert!(matches!(
            check_invite("ab cd", 64),
            Err(ProtocolError::DisallowedCharacter { position: 2, .. })
        ));
        assert!(matches!(
            check_invite("é", 64),
            Err(ProtocolError::DisallowedCharacter { .. })
        ));
        assert!(matches!(
            check_invite(&"a".repeat(65), 64),
            Err(ProtocolError::TooLong { .. })
        ));
    }
}
