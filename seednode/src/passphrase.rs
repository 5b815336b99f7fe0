//! Where an anchor key's passphrase comes from: a file, the environment, or the terminal.
//!
//! Never from a command-line argument (other users see those in `ps`). In order of preference:
//! `--passphrase-file FILE` (its first line; the file must be owner-only), the environment
//! variable [`PASSPHRASE_ENV`], or a prompt with echo off when standard input is a terminal
//! (twice for a new key). With none of them, the error names all three. A passphrase is never
//! printed, logged or put in an error.

use std::fmt;
use std::fs;
use std::io::{IsTerminal, Read};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cordon_membership::Passphrase;
use zeroize::Zeroizing;

/// The environment variable holding an anchor key's passphrase.
pub const PASSPHRASE_ENV: &str = "CORDON_ANCHOR_PASSPHRASE";

/// Largest passphrase file read; a passphrase is its first line.
const MAX_PASSPHRASE_FILE: u64 = 4096;

/// The passphrase sources available to one command.
pub struct PassphraseSource {
    /// `--passphrase-file`, if given.
    pub file: Option<PathBuf>,
    /// The value of [`PASSPHRASE_ENV`], if set.
    pub env: Option<Zeroizing<Vec<u8>>>,
    /// Whether standard input is a terminal to prompt on.
    pub terminal: bool,
}

impl fmt::Debug for PassphraseSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassphraseSource")
            .field("file", &self.file)
            .field("env", &self.env.as_ref().map(|_| ".."))
            .field("terminal", &self.terminal)
            .finish()
    }
}

/// What the three sources are, for errors and help.
const SOURCES: &str = "pass --passphrase-file FILE (an owner-only file whose first line is the \
     passphrase), set the environment variable CORDON_ANCHOR_PASSPHRASE, or run the command on a \
     terminal to be prompted";

impl PassphraseSource {
    /// The sources of this process: `file` from the command line, the environment variable, and
    /// whether standard input is a terminal.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        Self {
            file,
            env: std::env::var_os(PASSPHRASE_ENV).map(|v| Zeroizing::new(v.into_vec())),
            terminal: std::io::stdin().is_terminal(),
        }
    }

    /// The passphrase that opens the encrypted anchor key `key_file` (prompted once).
    pub fn passphrase_for(&self, key_file: &Path) -> anyhow::Result<Passphrase> {
        if let Some(p) = self.file_or_env()? {
            return Ok(p);
        }
        if !self.terminal {
            bail!(
                "anchor key {} is encrypted and no passphrase was given: {SOURCES}",
                key_file.display()
            );
        }
        let p = prompt(&format!(
            "Passphrase for anchor key {}: ",
            key_file.display()
        ))?;
        if p.is_empty() {
            bail!("empty passphrase; nothing was done");
        }
        Ok(p)
    }

    /// A passphrase for a new anchor key `key_file` (prompted twice, the two must match).
    pub fn new_passphrase(&self, key_file: &Path) -> anyhow::Result<Passphrase> {
        if let Some(p) = self.file_or_env()? {
            return Ok(p);
        }
        if !self.terminal {
            bail!(
                "no passphrase for the new anchor key {}: {SOURCES}; or, for tests and demos \
                 only, pass --insecure-plaintext to write it unencrypted",
                key_file.display()
            );
        }
        let first = prompt(&format!(
            "New passphrase for anchor key {}: ",
            key_file.display()
        ))?;
        if first.is_empty() {
            bail!("empty passphrase; no key was written");
        }
        let second = prompt("Repeat the passphrase: ")?;
        if !first.matches(&second) {
            bail!("the two passphrases differ; no key was written");
        }
        Ok(first)
    }

    fn file_or_env(&self) -> anyhow::Result<Option<Passphrase>> {
        if let Some(file) = &self.file {
            return read_passphrase_file(file).map(Some);
        }
        if let Some(value) = &self.env {
            if value.is_empty() {
                bail!("{PASSPHRASE_ENV} is set but empty; set it to the passphrase or unset it");
            }
            return Ok(Some(Passphrase::new(value.to_vec())));
        }
        Ok(None)
    }
}

/// Prompts on the terminal with echo off.
fn prompt(text: &str) -> anyhow::Result<Passphrase> {
    let typed = Zeroizing::new(
        rpassword::prompt_password(text).context("reading the passphrase from the terminal")?,
    );
    Ok(Passphrase::new(typed.as_bytes().to_vec()))
}

/// Reads the first line of an owner-only passphrase file, without its line ending.
pub fn read_passphrase_file(path: &Path) -> anyhow::Result<Passphrase> {
    let meta = fs::metadata(path)
        .with_context(|| format!("cannot read passphrase file {}", path.display()))?;
    if !meta.is_file() {
        bail!("passphrase file {} is not a regular file", path.display());
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "passphrase file {} has mode {mode:03o} and is readable by other users; run \
             `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let mut bytes = Zeroizing::new(Vec::new());
    fs::File::open(path)
        .and_then(|f| f.take(MAX_PASSPHRASE_FILE).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read passphrase file {}", path.display()))?;
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        bail!(
            "passphrase file {} is empty (its first line is the passphrase)",
            path.display()
        );
    }
    Ok(Passphrase::new(line.to_vec()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    use super::*;

    fn file_with(dir: &Path, mode: u32, content: &[u8]) -> PathBuf {
        let path = dir.join("pass");
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .unwrap()
            .write_all(content)
            .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn none() -> PassphraseSource {
        PassphraseSource {
            file: None,
            env: None,
            terminal: false,
        }
    }

    #[test]
    fn file_gives_its_first_line_without_line_ending() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with(dir.path(), 0o600, b"s3cret phrase\r\nsecond line\n");
        let got = read_passphrase_file(&path).unwrap();
        assert!(got.matches(&Passphrase::new(b"s3cret phrase".to_vec())));
    }

    #[test]
    fn group_readable_file_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with(dir.path(), 0o640, b"s3cret\n");
        let err = read_passphrase_file(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600") && err.contains("640"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn empty_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with(dir.path(), 0o600, b"\nnot the first line\n");
        let err = read_passphrase_file(&path).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn file_wins_over_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with(dir.path(), 0o600, b"from-file\n");
        let source = PassphraseSource {
            file: Some(path),
            env: Some(Zeroizing::new(b"from-env".to_vec())),
            terminal: false,
        };
        let got = source.passphrase_for(Path::new("k")).unwrap();
        assert!(got.matches(&Passphrase::new(b"from-file".to_vec())));
    }

    #[test]
    fn environment_is_used_and_an_empty_one_refused() {
        let source = PassphraseSource {
            env: Some(Zeroizing::new(b"from-env".to_vec())),
            ..none()
        };
        let got = source.new_passphrase(Path::new("k")).unwrap();
        assert!(got.matches(&Passphrase::new(b"from-env".to_vec())));
        let source = PassphraseSource {
            env: Some(Zeroizing::new(Vec::new())),
            ..none()
        };
        let err = source
            .passphrase_for(Path::new("k"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CORDON_ANCHOR_PASSPHRASE") && err.contains("empty"),
            "{err}"
        );
    }

    #[test]
    fn no_source_names_all_three() {
        for err in [
            none().passphrase_for(Path::new("anchor.key")).unwrap_err(),
            none().new_passphrase(Path::new("anchor.key")).unwrap_err(),
        ] {
            let err = err.to_string();
            for source in ["--passphrase-file", "CORDON_ANCHOR_PASSPHRASE", "terminal"] {
                assert!(err.contains(source), "{source} missing from: {err}");
            }
            assert!(err.contains("anchor.key"), "{err}");
        }
        let err = none()
            .new_passphrase(Path::new("k"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--insecure-plaintext"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_environment_value() {
        let source = PassphraseSource {
            env: Some(Zeroizing::new(b"hunter2".to_vec())),
            ..none()
        };
        assert!(!format!("{source:?}").contains("hunter2"));
    }
}
