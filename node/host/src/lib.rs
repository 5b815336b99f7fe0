//! What a Cordon daemon keeps on its host, shared by `node` and `seednode`: the data directory
//! (identity key, tokens, join state, address book), the hash-chained audit log, the owner-only
//! control socket and its codec, the network descriptor file, config-file loading, and the
//! clock the daemons read time from.
//!
//! Invariants:
//! - Everything private is created owner-only (files 0600, directories 0700) and a file or
//!   directory that others can read is refused with the `chmod` that fixes it.
//! - Errors name the file (and for config files the key and line) and say how to fix it; they
//!   never echo secret material.
//! - Nothing here knows about libp2p swarms or tokens beyond their types: it is plumbing the
//!   daemons' logic sits on.

#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod aggregate;
pub mod audit;
pub mod clock;
pub mod config;
pub mod control;
pub mod datadir;
pub mod descriptor;
