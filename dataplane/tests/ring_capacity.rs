//! A queue entry built while the data core (here: a thread) moves frames through the client's
//! ring must still see the ring's whole capacity. Reading it as `count() + free_count()` raced
//! with the producer and came out short, and the poll loop's `capacity - room` then underflowed
//! (a data-core abort in debug builds, a "far behind" client in release builds).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use vnic_dataplane::*;

#[test]
fn a_queue_entry_sees_the_fixed_capacity_of_a_ring_in_use() {
    let _eal = eal();
    let sock = socket_id();
    let pool =
        Arc::new(Mempool::new("cap_pool", 4095, 0, mempool::DEFAULT_DATA_ROOM, sock).unwrap());
    let full = pool.available();
    let wire_in = Ring::new("cap_in", 64, sock).unwrap();
    let wire_out = Ring::new("cap_out", 64, sock).unwrap();
    let mut port = Port::from_rings("cap_vf", &[&wire_in], &[&wire_out]).unwrap();
    port.configure(
        &PortConfig {
            queues: 1,
            rx_desc: 64,
            tx_desc: 64,
            mtu: None,
            promiscuous: false,
        },
        &pool,
    )
    .unwrap();
    port.start().unwrap();
    let to_client = Arc::new(Ring::new("cap_rx", 1024, sock).unwrap());
    let from_client = Arc::new(Ring::new("cap_tx", 1024, sock).unwrap());
    assert_eq!(to_client.capacity(), 1023);
    let stop = Arc::new(AtomicBool::new(false));
    // The ring's only producer and consumer: fill it with bursts of every size and empty it
    // again, so its count changes between any two reads of the main thread.
    let churn = {
        let (pool, ring, stop) = (pool.clone(), to_client.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            let mut b = Burst::default();
            while !stop.load(Ordering::Acquire) {
                for n in 1..=BURST {
                    for _ in 0..n {
                        if let Some(m) = pool.alloc() {
                            let _ = b.push(m);
                        }
                    }
                    ring.enqueue(&mut b);
                }
                while ring.dequeue(&mut b) > 0 {
                    b.free_all();
                }
                rounds += 1;
            }
            rounds
        })
    };
    let mut short = 0u32;
    for _ in 0..200_000 {
        let q = QueueEntry::new(
            port.rx_queue(0).unwrap(),
            port.tx_queue(0).unwrap(),
            to_client.clone(),
            from_client.clone(),
            VnicSlot(0),
        );
        short += (q.to_client_capacity() != Some(1023)) as u32;
    }
    stop.store(true, Ordering::Release);
    let rounds = churn.join().unwrap();
    assert!(rounds > 0, "the ring was never in use");
    assert_eq!(
        short, 0,
        "{short} of 200000 queue entries saw less than the ring's capacity"
    );
    to_client.drain();
    port.stop().unwrap();
    drop(port);
    assert_eq!(pool.available(), full, "mempool back to full");
}
