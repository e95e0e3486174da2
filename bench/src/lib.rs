//! Harness pieces shared by `vnic-bench`, `vnic-demo` and the peer integration tests: a
//! `dpdk-testpmd` process driven over its interactive prompt, the `vnic-gen` paced generator,
//! Open vSwitch with DPDK as a baseline, the NDR/PDR search, and child-process hygiene.
pub mod faults;
pub mod gen;
pub mod mobility;
pub mod ovs;
pub mod procs;
pub mod qemu;
pub mod search;
pub mod testpmd;
pub mod vnicd;
