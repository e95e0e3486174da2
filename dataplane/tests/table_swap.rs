//! The forwarding table is swapped thousands of times under traffic, between two backing
//! devices of one vNIC: not one packet may be lost, and the pool must come back full.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vnic_dataplane::*;

const N: u32 = 10_000;

#[test]
fn swapping_the_active_backing_device_under_traffic_loses_nothing() {
    let eal = eal();
    let sock = socket_id();
    let pool =
        Arc::new(Mempool::new("swap_pool", 4 * N, 0, mempool::DEFAULT_DATA_ROOM, sock).unwrap());
    let full = pool.available();
    let wire_in: Vec<Arc<Ring>> = (0..2)
        .map(|i| Arc::new(Ring::new(&format!("in{i}"), 16384, sock).unwrap()))
        .collect();
    let wire_out: Vec<Ring> = (0..2)
        .map(|i| Ring::new(&format!("out{i}"), 16384, sock).unwrap())
        .collect();
    let cfg = PortConfig {
        queues: 1,
        rx_desc: 512,
        tx_desc: 512,
        mtu: None,
        promiscuous: false,
    };
    let mut ports: Vec<Port> = (0..2)
        .map(|i| {
            let mut p =
                Port::from_rings(&format!("vf{i}"), &[&wire_in[i]], &[&wire_out[i]]).unwrap();
            p.configure(&cfg, &pool).unwrap();
            p.start().unwrap();
            p
        })
        .collect();
    let to_client = Arc::new(Ring::new("c_rx", 32768, sock).unwrap());
    let from_client = Arc::new(Ring::new("c_tx", 32768, sock).unwrap());
    let table_for = |i: usize| {
        FwdTable::new(
            vec![QueueEntry::new(
                ports[i].rx_queue(0).unwrap(),
                ports[i].tx_queue(0).unwrap(),
                to_client.clone(),
                from_client.clone(),
                VnicSlot(0),
            )],
            vec![],
        )
    };
    // Busy poll (no back-off): this test wants the core to be inside bursts when tables swap.
    let mut worker = Worker::launch(Launch::Lcore(data_lcore(&eal)), 1, IdleBackoff::OFF).unwrap();
    worker.publish(table_for(0)).unwrap();

    // Traffic source: N frames into the client tx ring and N frames on the wires (alternating).
    let done = Arc::new(AtomicBool::new(false));
    let src = {
        let (pool, from_client, wire_in, done) = (
            pool.clone(),
            from_client.clone(),
            wire_in.clone(),
            done.clone(),
        );
        std::thread::spawn(move || {
            for s in 0..N {
                let mut m = pool.alloc_with(&frame(s, 64)).unwrap();
                while let Err(back) = from_client.enqueue_one(m) {
                    m = back;
                    std::thread::yield_now();
                }
                let mut m = pool.alloc_with(&frame(s, 64)).unwrap();
                while let Err(back) = wire_in[(s % 2) as usize].enqueue_one(m) {
                    m = back;
                    std::thread::yield_now();
                }
                if s % 64 == 0 {
                    std::thread::yield_now();
                }
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut swaps = 0u64;
    while !done.load(Ordering::Acquire) {
        worker.publish(table_for((swaps % 2) as usize)).unwrap();
        swaps += 1;
    }
    src.join().unwrap();
    // Drain: visit both devices until both wires are empty.
    for i in [0usize, 1, 0, 1] {
        worker.publish(table_for(i)).unwrap();
        wait_until("wire rx drained", Duration::from_secs(5), || {
            wire_in[i].count() == 0
        });
    }
    wait_until("client tx drained", Duration::from_secs(5), || {
        from_client.count() == 0
    });
    let st = worker.vnic_stats(VnicSlot(0));
    assert!(swaps >= 100, "only {swaps} swaps happened under traffic");
    assert!(worker.core_stats().table_swaps >= swaps);
    assert_eq!((st.rx_drops, st.tx_drops), (0, 0));
    assert_eq!(st.tx_packets, N as u64);
    assert_eq!(st.rx_packets, N as u64);
    assert_eq!(wire_out[0].count() + wire_out[1].count(), N);
    assert_eq!(to_client.count(), N);
    // Every sequence number arrived exactly once in each direction.
    let mut seen_tx = vec![0u8; N as usize];
    for r in &wire_out {
        let mut b = Burst::default();
        while r.dequeue(&mut b) > 0 {
            for m in b.drain() {
                seen_tx[seq_of(m.data()) as usize] += 1;
            }
        }
    }
    assert!(seen_tx.iter().all(|&c| c == 1));
    let mut seen_rx = vec![0u8; N as usize];
    let mut b = Burst::default();
    while to_client.dequeue(&mut b) > 0 {
        for m in b.drain() {
            seen_rx[seq_of(m.data()) as usize] += 1;
        }
    }
    assert!(seen_rx.iter().all(|&c| c == 1));
    worker.stop();
    for p in &mut ports {
        p.stop().unwrap();
    }
    drop(ports);
    assert_eq!(pool.available(), full, "mempool back to full");
    eprintln!("{swaps} table swaps under traffic");
}
