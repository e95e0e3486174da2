//! The data core's Rust ring operations against DPDK's own, on real `rte_ring`s: 10 M frames
//! go round a pair of rings (stamped frames one way, the empty mbufs back), each ring with one
//! implementation producing and the other consuming; every frame arrives in order exactly once
//! and the pool is full again at the end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
mod common;
use common::*;
use std::sync::Arc;
use vnic_dataplane::*;

const FRAMES: u64 = 10_000_000;
/// In flight: fewer than either ring holds, so no enqueue can be refused (a refused frame is
/// freed, and the test counts every one).
const MBUFS: usize = 1000;

/// Whose code produces into a ring and whose consumes from it.
#[derive(Clone, Copy)]
enum Impl {
    /// vnicd's Rust `sp_enqueue` / `sc_dequeue`.
    Rust,
    /// DPDK's `rte_ring_enqueue_burst` / `rte_ring_dequeue_burst` (through the shim).
    Dpdk,
    /// Rust, consuming a varying prefix of each peeked burst (the data core's held frames).
    RustPartial,
    /// Rust in place, as the data core runs: producing straight into reserved slots, consuming
    /// a varying prefix of the entries where they lie.
    RustInPlace,
}

fn put(r: &Ring, by: Impl, b: &mut Burst) {
    let n = b.len();
    let got = match by {
        Impl::Rust | Impl::RustPartial => r.sp_enqueue(b),
        Impl::RustInPlace => r.sp_enqueue_in_place(b),
        Impl::Dpdk => r.enqueue(b),
    };
    assert_eq!(got, (n, 0), "the ring refused frames it had room for");
}

fn take(r: &Ring, by: Impl, b: &mut Burst, turn: &mut usize) -> usize {
    match by {
        Impl::Rust => r.sc_dequeue(b),
        Impl::Dpdk => r.dequeue(b),
        Impl::RustPartial => {
            *turn += 1;
            r.sc_dequeue_upto(b, *turn % (BURST + 1))
        }
        Impl::RustInPlace => {
            *turn += 1;
            r.sc_dequeue_in_place_upto(b, *turn % (BURST + 1))
        }
    }
}

/// `forward` = (producer, consumer) of the stamped frames' ring; the return ring swaps them.
fn round_trip(prod: Impl, cons: Impl) {
    let _eal = eal();
    let pool = Mempool::new("spsc_pool", 1023, 0, 256, socket_id()).unwrap();
    let fwd = Arc::new(Ring::new("spsc_fwd", 1024, socket_id()).unwrap());
    let back = Arc::new(Ring::new("spsc_back", 1024, socket_id()).unwrap());
    let mut b = Burst::default();
    let mut left = MBUFS;
    while left > 0 {
        let n = pool.alloc_burst(&mut b, left.min(BURST), |_, m| {
            m.append(&[0; 8]).unwrap();
        });
        assert!(n > 0, "pool too small");
        left -= n;
        put(&back, cons, &mut b);
    }
    let (f2, b2) = (fwd.clone(), back.clone());
    let producer = std::thread::spawn(move || {
        let (mut seq, mut turn) = (0u64, 0usize);
        let (mut empty, mut out) = (Burst::default(), Burst::default());
        while seq < FRAMES {
            if take(&b2, prod, &mut empty, &mut turn) == 0 {
                std::thread::yield_now();
                continue;
            }
            for mut m in empty.drain() {
                if seq < FRAMES {
                    m.data_mut()[..8].copy_from_slice(&seq.to_le_bytes());
                    seq += 1;
                }
                out.push(m).unwrap();
            }
            put(&f2, prod, &mut out);
        }
    });
    let (mut expect, mut turn) = (0u64, 0usize);
    let (mut got, mut ret) = (Burst::default(), Burst::default());
    while expect < FRAMES {
        if take(&fwd, cons, &mut got, &mut turn) == 0 {
            std::thread::yield_now();
            continue;
        }
        for m in got.drain() {
            let seq = u64::from_le_bytes(m.data()[..8].try_into().unwrap());
            if expect < FRAMES {
                assert_eq!(seq, expect, "frame out of order, lost or duplicated");
                expect += 1;
            }
            ret.push(m).unwrap();
        }
        put(&back, cons, &mut ret);
    }
    producer.join().unwrap();
    // Whatever is still in flight comes back, then the rings are emptied into the pool.
    let inflight = fwd.drain() + back.drain();
    assert_eq!(inflight, MBUFS, "mbufs lost or duplicated");
    assert!(pool.is_full(), "pool not full: {} in use", pool.in_use());
}

#[test]
fn rust_producer_and_dpdk_consumer_move_10m_frames_exactly() {
    // The return ring runs the other way round: DPDK produces, Rust consumes.
    round_trip(Impl::Rust, Impl::Dpdk);
}

#[test]
fn dpdk_producer_and_rust_consumer_move_10m_frames_exactly() {
    round_trip(Impl::Dpdk, Impl::Rust);
}

#[test]
fn in_place_rust_producer_and_dpdk_consumer_move_10m_frames_exactly() {
    round_trip(Impl::RustInPlace, Impl::Dpdk);
}

#[test]
fn dpdk_producer_and_in_place_rust_consumer_move_10m_frames_exactly() {
    round_trip(Impl::Dpdk, Impl::RustInPlace);
}

#[test]
fn rust_partial_commits_keep_every_frame_in_order() {
    round_trip(Impl::Dpdk, Impl::RustPartial);
}
