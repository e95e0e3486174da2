//! `vnic-control`: vnicd's control plane. It never touches packets: it validates config, brings
//! up backing devices and client rings, builds forwarding tables for the data cores, and reports.
//!
//! One feature, one room, over one model (`vnic`): frontends turn input into calls on the
//! [`appliance::Appliance`]; `publish` is the only place that turns the model into forwarding
//! tables; events go back out through the appliance's one event queue.
#![forbid(unsafe_code)]

/// The protocol crate's client library and wire format, under their names in this crate.
pub use vnic_proto::{client, wire as proto};

pub mod appliance;
pub mod arbiter;
pub mod config;
pub mod eal_options;
pub mod frontend;
mod health;
pub mod mainloop;
pub mod metrics;
pub mod mobility;
pub mod preflight;
mod publish;
pub mod reload;
#[cfg(feature = "testing")]
pub mod runner;
pub mod service;
/// The socket frontend under its old name.
pub use frontend::socket as server;
pub mod status;
pub mod switch;
pub mod transport;
pub mod vnic;

/// The pure arbiter under its old name (kept for callers of `vnic_control::failover`).
pub use arbiter as failover;
