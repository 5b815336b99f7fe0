//! The Cordon node: swarm assembly, the membership session behaviour and its gates, one
//! Kademlia per network, the event loop that owns the swarm, the data directory and the
//! owner-only control socket.
//!
//! Invariants:
//! - No Kademlia or rpc stream is negotiated on a connection until the remote peer's membership
//!   of a network verified on that very connection ([`session`], [`gate`]).
//! - A peer enters a network's routing table only once proven, and leaves it when the
//!   membership expires, is revoked, or breaks a strict network's rule; a node presents a
//!   network's token only to peers it dialed for that network or that proved that network
//!   first, so memberships do not leak across networks.
//! - Everything held for remote peers is bounded ([`NodeLimits`]).
//!
//! Layout: [`daemon`] assembles a node and runs it; [`event_loop`] owns the swarm and only
//! dispatches, to [`session`] (inside the swarm), [`join`] with the pure [`join_client`],
//! [`rpc_server`] and [`calls`], [`routing`], [`control_handler`], [`bans`] and [`report`].
//! The `node` binary only parses arguments and calls [`run`]; the seednode plugs its join
//! service in through [`service::JoinService`].

#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod addresses;
pub mod api;
pub mod bans;
pub mod budget;
pub mod calls;
pub mod config;
pub mod control_handler;
pub mod daemon;
mod event_loop;
pub mod filter;
pub mod gate;
pub mod invite;
pub mod join;
pub mod join_client;
pub mod keyed;
pub mod metrics;
pub mod ratelimit;
mod reload;
pub mod report;
pub mod revocations;
pub mod routing;
pub mod rpc;
pub mod rpc_server;
pub mod service;
// The derived behaviour event enums have undocumented variants.
#[allow(missing_docs)]
pub mod session;
#[allow(missing_docs)]
pub mod swarm;
pub mod verify_pool;

pub use config::{NodeConfig, NodeLimits};
pub use daemon::{Node, NodeHandle, run, run_with};
