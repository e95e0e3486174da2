//! Test fixture: one real EAL per test process (nextest runs each test in its own process).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
#![allow(dead_code)]
use std::time::{Duration, Instant};
use vnic_dataplane::{eal, Eal, EalOptions, Memory};

/// Start the EAL on cores 0 (main) and 1 (data core): hugepages in memory when the host has them,
/// otherwise `--no-huge`.
pub fn eal() -> Eal {
    let memory = if eal::host_hugepages_usable() {
        Memory::HugeInMemory
    } else {
        Memory::NoHuge
    };
    let cores = if std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        > 1
    {
        vec![0, 1]
    } else {
        vec![0]
    };
    let opts = EalOptions {
        program: "vnic-test".into(),
        cores,
        main_core: 0,
        memory_mb: 256,
        memory,
        log_level: 4,
        ..Default::default()
    };
    Eal::init(&eal::eal_args(&opts)).expect("EAL init")
}

/// The data core for tests: lcore 1 when there are two CPUs.
pub fn data_lcore(e: &Eal) -> u32 {
    if e.lcore_enabled(1) {
        1
    } else {
        0
    }
}

/// Poll `f` until it returns true or the deadline passes.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A test frame: Ethernet header (dst, src, type 0x88b5 local experimental) + sequence + filler.
pub fn frame(seq: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(64)];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xaa]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xbb]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f[18..].iter_mut().enumerate() {
        *b = (seq as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
    f
}

/// Sequence number of a test frame.
pub fn seq_of(f: &[u8]) -> u32 {
    u32::from_be_bytes(f[14..18].try_into().unwrap())
}
