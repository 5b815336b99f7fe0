//! The Cordon node: swarm assembly, the gate, one Kademlia per network, the event loop that owns
//! the swarm, the data directory and the owner-only control socket.
//!
//! Invariants:
//! - No Kademlia (or later rpc) stream is negotiated on a connection until the remote peer's
//!   membership of that network verified on that very connection ([`gate`]).
//! - A peer enters a network's routing table only once proven, and leaves it when the
//!   membership expires; a node presents a network's token only to peers it dialed for that
//!   network or that proved that network first, so memberships do not leak across networks.
//! - Everything held for remote peers is bounded ([`NodeLimits`]).
//!
//! The `node` binary only parses arguments and calls [`run`]; the seednode plugs its join
//! service in through [`service::JoinService`].

#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod audit;
pub mod config;
pub mod control;
pub mod datadir;
pub mod descriptor;
pub mod event_loop;
pub mod filter;
pub mod gate;
pub mod metrics;
pub mod ratelimit;
pub mod rpc;
pub mod service;
// The derived behaviour event enum has undocumented variants.
#[allow(missing_docs)]
pub mod swarm;

pub use config::{NodeConfig, NodeLimits};
pub use event_loop::run;
