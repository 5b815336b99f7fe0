//! The Cordon node (work in progress).

#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;
pub mod control;
pub mod datadir;
pub mod descriptor;
pub mod event_loop;
pub mod gate;
pub mod service;
// The derived behaviour event enum has undocumented variants.
#[allow(missing_docs)]
pub mod swarm;

pub use config::{NodeConfig, NodeLimits};
pub use event_loop::run;
