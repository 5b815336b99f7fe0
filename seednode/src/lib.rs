//! The Cordon seednode library (work in progress).

pub mod store;
