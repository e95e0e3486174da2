//! Harness pieces shared by `vnic-bench`, `vnic-demo` and the peer integration tests: a
//! `dpdk-testpmd` process driven over its interactive prompt, and child-process hygiene.
pub mod procs;
pub mod testpmd;
pub mod vnicd;
