//! Config files: reading TOML with errors that name the file, the line and the key, durations
//! as humantime strings, and the range checks every limit goes through.
//!
//! Every daemon config type is a serde struct with `deny_unknown_fields` and `default`, so a
//! file only names what it changes, a misspelt key is refused (with the keys it could have
//! meant), and a value of the wrong type is refused at its line. Range checks run after
//! parsing ([`Invalid`]) and name the full key (`limits.max_connections`).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

/// Largest config file read, in bytes (1 MiB).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// A config file that cannot be used. The message names the file, where in it, and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {}: {reason}", .file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not valid TOML for this config: syntax, an unknown key, a wrong type.
    #[error(
        "{}: line {line}{}: {message}",
        .file.display(),
        .key.as_ref().map(|k| format!(", key `{k}`")).unwrap_or_default()
    )]
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// The key being set there, if one can be named.
        key: Option<String>,
        /// What is wrong (the parser's words, without echoing the file's text).
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("{}: {invalid}", .file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Which key and why.
        invalid: Invalid,
    },
}

impl ConfigError {
    /// The key the error is about, when it names one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Syntax { key, .. } => key.as_deref(),
            Self::Invalid { invalid, .. } => Some(&invalid.key),
            Self::Read { .. } => None,
        }
    }
}

/// A value a config type refuses after parsing: its full key and what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} {reason}")]
pub struct Invalid {
    /// The full key, e.g. `limits.max_connections`.
    pub key: String,
    /// What is wrong and what is accepted, e.g. `must be between 1 and 65536, got 0`.
    pub reason: String,
}

impl Invalid {
    /// An invalid value of `key`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The same error under a section prefix (`limits` + `max_connections`).
    pub fn within(self, section: &str) -> Self {
        Self {
            key: format!("{section}.{}", self.key),
            reason: self.reason,
        }
    }

    /// Ties the error to a file.
    pub fn in_file(self, file: &Path) -> ConfigError {
        ConfigError::Invalid {
            file: file.to_owned(),
            invalid: self,
        }
    }
}

/// Checks `min <= value <= max` for `key`.
pub fn in_range<T: PartialOrd + fmt::Display>(
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), Invalid> {
    if value < min || value > max {
        return Err(Invalid::new(
            key,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
    Ok(())
}

/// Checks `min <= value <= max` for a duration `key`.
pub fn duration_in_range(
    key: &str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), Invalid> {
    if value < min || value > max {
        return Err(Invalid::new(
            key,
            format!(
                "must be between {} and {}, got {}",
                humantime::format_duration(min),
                humantime::format_duration(max),
                humantime::format_duration(value)
            ),
        ));
    }
    Ok(())
}

/// Reads a TOML config file (at most [`MAX_CONFIG_BYTES`]) into `T`.
pub fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let read_error = |reason: String| ConfigError::Read {
        file: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| {
        read_error(match e.kind() {
            std::io::ErrorKind::NotFound => "no such file; check the path".to_owned(),
            _ => e.to_string(),
        })
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| read_error(e.to_string()))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(read_error(format!(
            "larger than {MAX_CONFIG_BYTES} bytes; is it the right file?"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| read_error("not UTF-8 text".to_owned()))?;
    parse_toml(path, &text)
}

/// Parses `text` (the contents of `path`) into `T`.
pub fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|error| {
        let (line, key) = locate(text, &error);
        ConfigError::Syntax {
            file: path.to_owned(),
            line,
            key,
            message: error.message().trim().to_owned(),
        }
    })
}

/// The 1-based line of a TOML error and the key set there, as a dotted path from its table
/// (`limits.max_connections`), without echoing the file's contents.
pub fn locate(text: &str, error: &toml::de::Error) -> (usize, Option<String>) {
    let mut offset = error.span().map_or(0, |span| span.start.min(text.len()));
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let line = text[..offset].matches('\n').count() + 1;
    (line, key_at(text, line))
}

/// The key being set at `line` (1-based): the nearest `key = ...` at or above it, prefixed with
/// its `[table]`. A table header names the table itself.
fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().take(line).collect();
    let is_key = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    };
    let mut key = None;
    for candidate in lines.iter().rev() {
        let candidate = candidate.trim();
        if let Some(table) = candidate
            .strip_prefix('[')
            .map(|t| t.trim_start_matches('[').trim_end_matches(']').trim())
        {
            if !is_key(table) {
                return key;
            }
            return Some(match key {
                Some(k) => format!("{table}.{k}"),
                None => table.to_owned(),
            });
        }
        if key.is_none()
            && let Some((k, _)) = candidate.split_once('=')
            && is_key(k.trim())
        {
            key = Some(k.trim().to_owned());
        }
    }
    key
}

/// Keys of `defaults` (a config type serialized with its defaults) that `example` (an example
/// config file's text) does not set: what an example file fails to document. Dotted paths.
pub fn undocumented_keys<T: serde::Serialize>(
    defaults: &T,
    example: &str,
) -> Result<Vec<String>, String> {
    fn paths(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (k, v) in table {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) => paths(t, &path, out),
                _ => out.push(path),
            }
        }
    }
    let defaults = toml::Table::try_from(defaults).map_err(|e| e.to_string())?;
    let example: toml::Table = example
        .parse()
        .map_err(|e: toml::de::Error| e.to_string())?;
    let (mut want, mut have) = (Vec::new(), Vec::new());
    paths(&defaults, "", &mut want);
    paths(&example, "", &mut have);
    want.retain(|k| !have.contains(k));
    Ok(want)
}

/// `path` as written in a config file: relative paths are relative to the file's directory.
pub fn resolve(config_file: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_owned();
    }
    match config_file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(path),
        _ => path.to_owned(),
    }
}

/// Serde for `Duration` as a humantime string (`"10s"`, `"30d"`), for `#[serde(with = ...)]`.
pub mod duration {
    use std::time::Duration;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `duration` as humantime text.
    pub fn serialize<S: Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*duration))
    }

    /// Reads humantime text (`"90s"`, `"12h"`, `"30d"`).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            D::Error::custom(format!(
                "invalid duration {:?} ({e}); write e.g. \"30d\", \"12h\", \"90s\" or \"500ms\"",
                text.chars().take(64).collect::<String>()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Limits {
        max_connections: u32,
        #[serde(with = "duration")]
        auth_timeout: Duration,
    }

    impl Default for Limits {
        fn default() -> Self {
            Self {
                max_connections: 512,
                auth_timeout: Duration::from_secs(10),
            }
        }
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct File {
        data: String,
        limits: Limits,
    }

    impl Default for File {
        fn default() -> Self {
            Self {
                data: "d".into(),
                limits: Limits::default(),
            }
        }
    }

    fn err(text: &str) -> ConfigError {
        parse_toml::<File>(Path::new("node.toml"), text).unwrap_err()
    }

    #[test]
    fn a_partial_file_keeps_the_defaults() {
        let f: File = parse_toml(Path::new("x"), "[limits]\nauth_timeout = \"3s\"\n").unwrap();
        assert_eq!(f.limits.auth_timeout, Duration::from_secs(3));
        assert_eq!(f.limits.max_connections, 512);
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_their_line_and_key() {
        let e = err("data = \"x\"\n\n[limits]\nmax_conections = 5\n");
        assert!(
            matches!(&e, ConfigError::Syntax { line: 4, key: Some(k), .. } if k == "limits.max_conections"),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("unknown field `max_conections`"),
            "{e}"
        );
        assert!(e.to_string().contains("max_connections"), "{e}");
        let e = err("[limits]\nmax_connections = \"many\"\n");
        assert!(
            matches!(&e, ConfigError::Syntax { line: 2, key: Some(k), .. } if k == "limits.max_connections"),
            "{e:?}"
        );
        assert!(e.to_string().contains("invalid type"), "{e}");
        let e = err("[limits]\nauth_timeout = \"soon\"\n");
        assert!(e.to_string().contains("invalid duration"), "{e}");
        assert_eq!(e.key(), Some("limits.auth_timeout"));
        let e = err("data = \n");
        assert!(matches!(e, ConfigError::Syntax { line: 1, .. }), "{e:?}");
    }

    #[test]
    fn ranges_name_the_full_key() {
        let e = in_range("max_connections", 0u32, 1, 65_536)
            .unwrap_err()
            .within("limits")
            .in_file(Path::new("node.toml"));
        assert_eq!(
            e.to_string(),
            "node.toml: limits.max_connections must be between 1 and 65536, got 0"
        );
        assert!(
            duration_in_range(
                "t",
                Duration::ZERO,
                Duration::from_secs(1),
                Duration::from_secs(60)
            )
            .is_err()
        );
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        assert_eq!(
            resolve(
                Path::new("/etc/cordon/node.toml"),
                Path::new("networks.toml")
            ),
            PathBuf::from("/etc/cordon/networks.toml")
        );
        assert_eq!(
            resolve(Path::new("/etc/cordon/node.toml"), Path::new("/abs/x")),
            PathBuf::from("/abs/x")
        );
        assert_eq!(
            resolve(Path::new("node.toml"), Path::new("x")),
            PathBuf::from("x")
        );
    }
}
