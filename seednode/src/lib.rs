//! The Cordon seednode: trust-anchor tooling, the join-request queue, operator approval and
//! token issuing and delivery.
//!
//! The binary only parses arguments; everything it does lives here so tests can drive it.

#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod anchor;
pub mod any_store;
pub mod daemon;
pub mod decide;
pub mod fault;
pub mod migrate;
mod notify;
pub mod operator;
pub mod passphrase;
#[cfg(any(test, feature = "pg-testing"))]
pub mod pg_testing;
pub mod pg_tls;
pub mod postgres;
pub mod service;
pub mod sqlite;
pub mod store;
