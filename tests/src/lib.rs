//! Harness for black-box tests that drive the real `node` and `seednode` binaries.
//!
//! Binaries are found by path: `$CORDON_BIN_DIR` (set by `scripts/test`) or the workspace's
//! `target/debug`. Never through `PATH`, where `node` is Node.js.

#![deny(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Path of a Cordon binary (`node` or `seednode`). Panics with the fix if it is not built.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("CORDON_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
                .join("debug")
        });
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built; run `scripts/test` (or `cargo build --workspace --bins`) first",
        path.display()
    );
    path
}

/// Result of running a command to completion.
#[derive(Debug)]
pub struct Run {
    /// Exit status success.
    pub ok: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Parses stdout as JSON, panicking with both streams if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Panics with both streams unless the command succeeded.
    pub fn success(self) -> Self {
        assert!(
            self.ok,
            "command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the command failed; returns it for inspecting stderr.
    pub fn failure(self) -> Self {
        assert!(
            !self.ok,
            "command unexpectedly succeeded\nstdout:\n{}",
            self.stdout
        );
        self
    }
}

/// Runs a binary with arguments, killing it after `timeout`.
pub fn run_with_timeout(name: &str, args: &[&str], timeout: Duration) -> Run {
    let mut child = Command::new(bin(name))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{name} {args:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("output");
    Run {
        ok: status.success(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs a binary with a 60 s timeout.
pub fn run(name: &str, args: &[&str]) -> Run {
    run_with_timeout(name, args, Duration::from_secs(60))
}
