//! `vnic-proto`: the protocol between vnicd and its clients and administrators, with no DPDK
//! dependency, so that `vnicctl` and any external client link only this crate.
//!
//! - [`wire`]: versions, the message size limit, error codes, request parsing, reply framing.
//! - [`msg`]: every reply body and push as a typed struct (the server serializes them, the
//!   client deserializes them).
//! - [`status`]: the status vocabulary (vNICs, backing devices, data cores, counters).
//! - [`mobility`]: moving a live vNIC between appliances (messages and phase records).
//! - [`client`]: the client library (control and admin sockets).
#![forbid(unsafe_code)]

pub mod client;
pub mod mobility;
pub mod msg;
pub mod status;
pub mod wire;

pub use wire::{Code, Op, ProtoError, Request, MAX_MESSAGE, VERSIONS};
