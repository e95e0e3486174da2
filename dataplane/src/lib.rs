//! `vnic-dataplane`: the safe DPDK layer of vnicd and its pinned poll loop.
//!
//! All `unsafe` of the data path lives here, each block with a `// SAFETY:` comment. Ownership
//! rules: an [`Mbuf`] is owned by exactly one holder; a [`Burst`] hands its sent prefix to a ring or
//! device and frees the unsent tail in bulk; pools are freed only when full; tables are freed
//! only after the data core acknowledged a newer one.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod counters;
pub mod eal;
pub mod error;
pub mod mbuf;
pub mod mempool;
pub mod port;
pub mod reroute;
pub mod ring;
pub mod spsc;
pub mod table;
pub mod telemetry;
mod txpath;
pub mod txwatch;
pub mod vhost;
pub mod worker;

pub use counters::{CoreStats, VnicStats};
pub use eal::{eal_args, Eal, EalOptions, Memory};
pub use error::{Error, Result};
pub use mbuf::{Burst, Mbuf, BURST};
pub use mempool::Mempool;
pub use port::{Link, Port, PortConfig, PortId, PortStats, RxQueue, TxQueue};
pub use reroute::{Backup, Detector, DeviceHealth, DpEvent, HealthSnapshot};
pub use ring::Ring;
pub use table::{
    Announce, ClientRings, ClientSide, EthdevClient, FwdTable, InlineClient, InlineMode,
    QueueEntry, VnicSlot,
};
pub use txwatch::TxWatch;
pub use vhost::{VhostEvent, VhostMode, VhostQueue, VhostSocket, VidGate};
pub use worker::{IdleBackoff, Launch, Worker};

/// Most ethdev ports this DPDK build supports (Debian's 22.11 is built with 32): every backing
/// device is one port.
pub const MAX_PORTS: u32 = dpdk_sys::RTE_MAX_ETHPORTS;
/// The library directory of the DPDK vnicd was built against (its PMD plugins live below it).
pub const DPDK_LIBDIR: &str = dpdk_sys::DPDK_LIBDIR;

/// The socket id for allocations on the caller's NUMA node.
pub fn socket_id() -> i32 {
    // SAFETY: plain query.
    unsafe { dpdk_sys::rte_socket_id() as i32 }
}
