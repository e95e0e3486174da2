//! `dpdk-sys`: raw bindings to the system DPDK (22.11 LTS), generated at build time, plus the
//! `vnic_rte_*` shim exporting DPDK's `static inline` functions. Everything here is `unsafe`;
//! the safe layer is `vnic-dataplane`.
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code
)]
#![allow(clippy::all)]
#![allow(improper_ctypes)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// The DPDK version the bindings were generated from (`pkg-config --modversion libdpdk`).
pub const DPDK_VERSION: &str = env!("VNIC_DPDK_VERSION");
/// The library directory of the DPDK this was built against (its PMD plugins live below it).
pub const DPDK_LIBDIR: &str = env!("VNIC_DPDK_LIBDIR");
