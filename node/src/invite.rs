//! Invite codes a node sends with its first join request to a network whose join policy is
//! `invite`. A code is bound to one network: it goes to that network's seednodes only, and
//! only while the node holds no token of it (never with a renewal), so no other network's
//! operators and no later request ever see it.
//!
//! Codes come from the command line (`--invite NETWORK=CODE`, or `CORDON_INVITE`), from a file
//! (`--invite-file NETWORK=PATH`, `[invite_files]`), or from the config (`[invites]`). A code is
//! a credential: its `Debug` is redacted and no error quotes it.

use std::fmt;
use std::path::{Path, PathBuf};

use cordon_protocol::NetworkName;
use serde::{Deserialize, Serialize};

/// One network's invite code. Printable ASCII without spaces, 1 to `max_invite_bytes` long.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InviteCode(String);

impl InviteCode {
    /// Checks `code`'s form; the error never quotes it.
    pub fn new(code: &str, max_bytes: usize) -> Result<Self, String> {
        if code.is_empty() || code.len() > max_bytes {
            return Err(format!(
                "an invite code is 1 to {max_bytes} characters, this one has {}",
                code.len()
            ));
        }
        if !code.chars().all(|c| c.is_ascii_graphic()) {
            return Err(
                "an invite code is printable ASCII without spaces (as `seednode invite` prints it)"
                    .to_owned(),
            );
        }
        Ok(Self(code.to_owned()))
    }

    /// The code, for the join request.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a code from `path`: the file's content with surrounding whitespace trimmed. The
    /// file must not be readable or writable by other users.
    pub fn read(path: &Path, max_bytes: usize) -> Result<Self, String> {
        let show = path.display();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path).map_err(|e| format!("{show}: {e}"))?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(format!(
                    "{show} is open to other users (mode {mode:o}); an invite code is a \
                     credential: chmod 600 {show}"
                ));
            }
            cordon_membership::ownership::check_owner(path, &meta).map_err(|e| e.to_string())?;
        }
        // At most a little more than a code: a huge file is refused unread.
        let bytes = std::fs::read(path).map_err(|e| format!("{show}: {e}"))?;
        if bytes.len() > max_bytes + 64 {
            return Err(format!(
                "{show} holds {} bytes; an invite file holds one code",
                bytes.len()
            ));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| format!("{show} is not UTF-8 text"))?;
        Self::new(text.trim(), max_bytes).map_err(|e| format!("{show}: {e}"))
    }
}

impl fmt::Debug for InviteCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InviteCode(<redacted>)")
    }
}

/// Splits a `NETWORK=VALUE` argument (`--invite`, `--invite-file`).
fn split(arg: &str, what: &str) -> Result<(NetworkName, String), String> {
    let Some((network, value)) = arg.split_once('=') else {
        return Err(format!(
            "expected NETWORK={what} (an invite is bound to one network), e.g. mainnet={what}"
        ));
    };
    let network = network
        .parse::<NetworkName>()
        .map_err(|e| format!("before '=': {e}"))?;
    Ok((network, value.to_owned()))
}

/// Parses `--invite NETWORK=CODE` (the code's form is checked with the config's limit later).
pub fn parse_code_arg(arg: &str) -> Result<(NetworkName, InviteCode), String> {
    let (network, code) = split(arg, "CODE")?;
    // The protocol's hard ceiling; the configured `max_invite_bytes` is checked on load.
    let code = InviteCode::new(&code, 1024)?;
    Ok((network, code))
}

/// Parses `--invite-file NETWORK=PATH`.
pub fn parse_file_arg(arg: &str) -> Result<(NetworkName, PathBuf), String> {
    let (network, path) = split(arg, "PATH")?;
    if path.is_empty() {
        return Err("empty path after '='".to_owned());
    }
    Ok((network, PathBuf::from(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_argument_names_its_network() {
        let (network, code) = parse_code_arg("mainnet=abc123").unwrap();
        assert_eq!(network.as_str(), "mainnet");
        assert_eq!(code.expose(), "abc123");
        let err = parse_code_arg("abc123").unwrap_err();
        assert!(err.contains("NETWORK=CODE"), "{err}");
        assert!(!err.contains("abc123"), "the error quotes the code: {err}");
        assert!(parse_code_arg("mainnet=").is_err());
        assert!(parse_code_arg("mainnet=a b").is_err());
        assert!(parse_code_arg("Main Net=abc").is_err());
        let (network, path) = parse_file_arg("testnet=/run/secrets/invite").unwrap();
        assert_eq!(network.as_str(), "testnet");
        assert_eq!(path, PathBuf::from("/run/secrets/invite"));
    }

    #[test]
    fn debug_never_shows_the_code() {
        let code = InviteCode::new("s3cr3t", 64).unwrap();
        assert!(!format!("{code:?}").contains("s3cr3t"));
    }

    #[cfg(unix)]
    #[test]
    fn a_file_open_to_others_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("invite");
        std::fs::write(&path, "c0ffee\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = InviteCode::read(&path, 64).unwrap_err();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!err.contains("c0ffee"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(InviteCode::read(&path, 64).unwrap().expose(), "c0ffee");
        std::fs::write(&path, "x".repeat(4096)).unwrap();
        assert!(InviteCode::read(&path, 64).is_err());
    }
}
