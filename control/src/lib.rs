//! `vnic-control`: vnicd's control plane. It never touches packets: it validates config, brings
//! up backing devices and client rings, builds forwarding tables for the data cores, and reports.
#![forbid(unsafe_code)]

pub mod appliance;
pub mod client;
pub mod config;
pub mod failover;
pub mod proto;
pub mod reload;
pub mod runner;
pub mod server;
