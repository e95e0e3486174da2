//! Data path on vdevs with the real EAL: net_ring ports made from our own rings play the wire,
//! so every packet in and out is counted exactly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
mod common;
use common::*;
use std::sync::Arc;
use std::time::Duration;
use vnic_dataplane::*;

struct Fixture {
    // Field order is drop order: worker (stops the loop) → port → rings → pool → EAL.
    worker: Worker,
    _port: Port,
    wire_in: Ring,
    wire_out: Ring,
    to_client: Arc<Ring>,
    from_client: Arc<Ring>,
    pool: Mempool,
    _eal: Eal,
}

fn fixture(client_depth: u32, pool_size: u32) -> Fixture {
    let eal = eal();
    let launch = Launch::Lcore(data_lcore(&eal));
    fixture_on(eal, launch, client_depth, pool_size)
}

fn fixture_on(eal: Eal, launch: Launch, client_depth: u32, pool_size: u32) -> Fixture {
    let sock = socket_id();
    let pool = Mempool::new("fwd_pool", pool_size, 0, mempool::DEFAULT_DATA_ROOM, sock).unwrap();
    let wire_in = Ring::new("wire_in", 4096, sock).unwrap();
    let wire_out = Ring::new("wire_out", 4096, sock).unwrap();
    let mut port = Port::from_rings("vf0", &[&wire_in], &[&wire_out]).unwrap();
    port.configure(
        &PortConfig {
            queues: 1,
            rx_desc: 512,
            tx_desc: 512,
            mtu: None,
            promiscuous: false,
        },
        &pool,
    )
    .unwrap();
    port.start().unwrap();
    let to_client = Arc::new(Ring::new("c_rx", client_depth, sock).unwrap());
    let from_client = Arc::new(Ring::new("c_tx", client_depth, sock).unwrap());
    let mut worker = Worker::launch(launch, 4, IdleBackoff::new(64, 50)).unwrap();
    let table = FwdTable::new(
        vec![QueueEntry::new(
            port.rx_queue(0).unwrap(),
            port.tx_queue(0).unwrap(),
            to_client.clone(),
            from_client.clone(),
            VnicSlot(0),
        )],
        vec![],
    );
    worker.publish(table).unwrap();
    Fixture {
        worker,
        _port: port,
        wire_in,
        wire_out,
        to_client,
        from_client,
        pool,
        _eal: eal,
    }
}

fn len_of(batch_start: u32) -> usize {
    60 + (batch_start as usize * 7 % 1400)
}

/// Inject frames `seqs` into the wire side (the VF's rx).
fn inject(f: &Fixture, seqs: std::ops::Range<u32>, len: usize) {
    for s in seqs {
        let m = f.pool.alloc_with(&frame(s, len)).expect("pool has room");
        let mut m = Some(m);
        while let Some(x) = m.take() {
            if let Err(back) = f.wire_in.enqueue_one(x) {
                m = Some(back);
                std::thread::yield_now();
            }
        }
    }
}

/// Client side: reflect everything from the client rx ring to its tx ring, untouched.
fn reflect_some(f: &Fixture) -> usize {
    let mut b = Burst::default();
    let n = f.to_client.dequeue(&mut b);
    if n > 0 {
        let (sent, dropped) = f.from_client.enqueue(&mut b);
        assert_eq!(dropped, 0, "client tx ring overflow in test");
        assert_eq!(sent, n);
    }
    n
}

fn collect_wire(f: &Fixture, out: &mut Vec<Vec<u8>>) {
    let mut b = Burst::default();
    while f.wire_out.dequeue(&mut b) > 0 {
        out.extend(b.drain().map(|m| m.data().to_vec()));
    }
}

#[test]
fn exactly_n_in_exactly_n_out_payload_intact_and_no_leak() {
    n_in_n_out(fixture(1024, 8191));
}

#[test]
fn same_on_a_registered_pinned_thread_instead_of_an_eal_lcore() {
    let eal = eal();
    let cpu = data_lcore(&eal);
    let f = fixture_on(eal, Launch::Thread(cpu), 1024, 8191);
    assert_eq!(f.worker.launch_kind(), Launch::Thread(cpu));
    n_in_n_out(f);
}

fn n_in_n_out(f: Fixture) {
    const N: u32 = 10_000;
    let full = f.pool.available();
    assert_eq!(full, 8191);
    let mut out = Vec::new();
    let mut sent = 0u32;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (out.len() as u32) < N {
        assert!(
            std::time::Instant::now() < deadline,
            "stuck: {} of {N} out, {:?}",
            out.len(),
            f.worker.vnic_stats(VnicSlot(0))
        );
        // Keep at most 512 in flight: less than the client ring holds, so no drop is legitimate.
        if sent < N && sent - (out.len() as u32) < 512 {
            let upto = (sent + 128).min(N);
            inject(&f, sent..upto, len_of(sent));
            sent = upto;
        }
        while reflect_some(&f) > 0 {}
        collect_wire(&f, &mut out);
    }
    // Nothing more arrives: in == out exactly.
    std::thread::sleep(Duration::from_millis(20));
    reflect_some(&f);
    collect_wire(&f, &mut out);
    assert_eq!(out.len() as u32, N);
    for (i, fr) in out.iter().enumerate() {
        let seq = seq_of(fr);
        assert_eq!(seq, i as u32, "order kept on one queue");
        assert_eq!(fr, &frame(seq, len_of(seq / 128 * 128)), "payload of {seq}");
    }
    let st = f.worker.vnic_stats(VnicSlot(0));
    assert_eq!(
        (st.rx_packets, st.tx_packets, st.rx_drops, st.tx_drops),
        (N as u64, N as u64, 0, 0)
    );
    let bytes: u64 = out.iter().map(|f| f.len() as u64).sum();
    assert_eq!(st.rx_bytes, bytes);
    assert_eq!(st.tx_bytes, bytes);
    drop(out);
    wait_until("mempool full", Duration::from_secs(2), || {
        f.pool.available() == full
    });
}

#[test]
fn a_full_client_ring_holds_frames_back_in_the_vf() {
    // Client rx ring of depth 64 holds 63; the client does not drain it. The data core takes
    // no more than fits, so the rest wait in the VF (a real VF drops them when its own queue
    // is full, counted by the device), and nothing is dropped or freed by vnicd.
    let f = fixture(64, 2047);
    inject(&f, 0..200, 64);
    wait_until("client ring full", Duration::from_secs(5), || {
        f.to_client.count() == 63
    });
    // The core keeps polling: nothing more may leave the VF while the ring is full.
    let loops = f.worker.core_stats().loops;
    wait_until("the core polled on", Duration::from_secs(5), || {
        f.worker.core_stats().loops > loops + 1_000
    });
    let s = f.worker.vnic_stats(VnicSlot(0));
    assert_eq!((s.rx_packets, s.rx_drops), (63, 0));
    assert_eq!(f.wire_in.count(), 137, "the rest wait in the VF");
    assert_eq!(f.to_client.count(), 63);
    // The client drains its ring: the next frames flow, in order.
    let mut seqs = Vec::new();
    while seqs.len() < 200 {
        let mut b = Burst::default();
        if f.to_client.dequeue(&mut b) == 0 {
            std::thread::yield_now();
            continue;
        }
        for m in b.drain() {
            seqs.push(seq_of(m.data()));
        }
    }
    assert_eq!(seqs, (0..200).collect::<Vec<u32>>());
    let s = f.worker.vnic_stats(VnicSlot(0));
    assert_eq!((s.rx_packets, s.rx_drops), (200, 0));
    wait_until("mempool full", Duration::from_secs(2), || {
        f.pool.in_use() == 0
    });
}

#[test]
fn frames_the_vf_refuses_wait_in_the_client_ring_and_none_is_lost() {
    // wire_out holds 4095 and nobody drains it until later; the client's tx ring holds 1023:
    // what the VF refuses stays in that ring (back-pressure, as a NIC's tx ring), never freed.
    let f = fixture(1024, 8191);
    let mut pushed = 0u32;
    while pushed < 5000 {
        let mut b = Burst::default();
        let n = (5000 - pushed).min(32);
        for s in pushed..pushed + n {
            b.push(f.pool.alloc_with(&frame(s, 64)).unwrap()).unwrap();
        }
        let room = f.from_client.free_count();
        if room < n {
            drop(b);
            std::thread::yield_now();
            continue;
        }
        let (sent, dropped) = f.from_client.enqueue(&mut b);
        assert_eq!((sent, dropped), (n as usize, 0));
        pushed += n;
    }
    wait_until(
        "the wire full and the rest held",
        Duration::from_secs(5),
        || f.worker.vnic_stats(VnicSlot(0)).tx_packets == 4095 && f.from_client.count() == 905,
    );
    let s = f.worker.vnic_stats(VnicSlot(0));
    assert_eq!(s.tx_drops, 0, "nothing dropped");
    assert_eq!(f.pool.in_use(), 5000, "nothing freed");
    // The wire drains: the held frames follow, in order.
    let mut b = Burst::default();
    let mut next = 0u32;
    let take = |b: &mut Burst, next: &mut u32| {
        while f.wire_out.dequeue(b) > 0 {
            for m in b.drain() {
                assert_eq!(seq_of(m.data()), *next, "frame out of order");
                *next += 1;
            }
        }
    };
    take(&mut b, &mut next);
    wait_until("every frame sent", Duration::from_secs(5), || {
        take(&mut b, &mut next);
        next == 5000
    });
    let s = f.worker.vnic_stats(VnicSlot(0));
    assert_eq!((s.tx_packets, s.tx_drops), (5000, 0));
    assert_eq!(f.from_client.count(), 0);
    wait_until("pool full", Duration::from_secs(5), || f.pool.is_full());
}

#[test]
fn spoofed_source_macs_are_dropped_and_counted_exactly() {
    let mut f = fixture(1024, 8191);
    let own = [0x02, 0, 0, 0, 0, 0xbb]; // the source MAC test frames carry
    let table = FwdTable::new(
        vec![QueueEntry::new(
            f._port.rx_queue(0).unwrap(),
            f._port.tx_queue(0).unwrap(),
            f.to_client.clone(),
            f.from_client.clone(),
            VnicSlot(0),
        )
        .with_spoof_check(own)],
        vec![],
    );
    f.worker.publish(table).unwrap();
    // Every third frame claims another source MAC; two are runts shorter than a MAC header.
    let mut good = 0u64;
    for s in 0..300u32 {
        let mut fr = frame(s, 64);
        if s % 3 == 0 {
            fr[11] = 0xcc;
        } else {
            good += 1;
        }
        let m = if s == 1 || s == 2 {
            good -= 1;
            f.pool.alloc_with(&fr[..10]).unwrap()
        } else {
            f.pool.alloc_with(&fr).unwrap()
        };
        f.from_client.enqueue_one(m).unwrap();
    }
    wait_until("all client frames handled", Duration::from_secs(5), || {
        let s = f.worker.vnic_stats(VnicSlot(0));
        s.tx_packets + s.spoof_drops == 300
    });
    let st = f.worker.vnic_stats(VnicSlot(0));
    assert_eq!(st.spoof_drops, 300 - good);
    assert_eq!(st.tx_packets, good);
    let mut out = Vec::new();
    collect_wire(&f, &mut out);
    assert_eq!(out.len() as u64, good);
    assert!(out.iter().all(|fr| fr[6..12] == own));
    drop(out);
    assert_eq!(f.pool.in_use(), 0, "spoofed frames were freed");
}

/// A client process can die at any instant of an in-place rx → tx move; recovery must find
/// every mbuf in exactly one ring (no leak, no double free).
#[test]
fn a_client_killed_mid_move_leaves_every_mbuf_recoverable() {
    let f = fixture(64, 2047);
    let rx = Ring::new("zc_rx", 64, socket_id()).unwrap();
    let tx = Ring::new("zc_tx", 64, socket_id()).unwrap();
    let fill = |n: u32| {
        for s in 0..n {
            rx.enqueue_one(f.pool.alloc_with(&frame(s, 64)).unwrap())
                .unwrap();
        }
    };
    // A normal move, editing frames on the way.
    fill(40);
    let moved = rx.forward_to(&tx, |d| d[0] = 0x77);
    assert_eq!((moved, rx.count(), tx.count()), (32, 8, 32));
    assert_eq!(ring::recover_client(&rx, &tx), ring::Recovery::Clean);
    assert_eq!(rx.drain() + tx.drain(), 40);
    assert_eq!(f.pool.in_use(), 0);
    // Death after rx start (and tx start): everything is still in rx.
    fill(10);
    let (mut p1, mut n1, mut p2) = (std::ptr::null_mut(), 0u32, std::ptr::null_mut());
    // SAFETY: live rings, this thread is their only user; simulates a client dying mid-move.
    unsafe {
        assert_eq!(
            dpdk_sys::vnic_ring_dequeue_zc_start(rx_ptr(&rx), 32, &mut p1, &mut n1, &mut p2),
            10
        );
        assert_eq!(
            dpdk_sys::vnic_ring_enqueue_zc_start(rx_ptr(&tx), 10, &mut p1, &mut n1, &mut p2),
            10
        );
    }
    assert_eq!(ring::recover_client(&rx, &tx), ring::Recovery::RolledBack);
    assert_eq!((rx.count(), tx.count()), (10, 0));
    assert_eq!(rx.drain() + tx.drain(), 10);
    assert_eq!(f.pool.in_use(), 0);
    // Death after rx finish, before tx finish: the pointers are in tx's slots; roll forward.
    fill(10);
    let (mut r1, mut rn1, mut r2) = (std::ptr::null_mut(), 0u32, std::ptr::null_mut());
    let (mut t1, mut tn1, mut t2) = (std::ptr::null_mut(), 0u32, std::ptr::null_mut());
    // SAFETY: as above; copies the 10 reserved pointers from rx slots to tx slots, then finishes
    // rx only.
    unsafe {
        assert_eq!(
            dpdk_sys::vnic_ring_dequeue_zc_start(rx_ptr(&rx), 32, &mut r1, &mut rn1, &mut r2),
            10
        );
        assert_eq!(
            dpdk_sys::vnic_ring_enqueue_zc_start(rx_ptr(&tx), 10, &mut t1, &mut tn1, &mut t2),
            10
        );
        for i in 0..10usize {
            let src = if i < rn1 as usize {
                r1.add(i)
            } else {
                r2.add(i - rn1 as usize)
            };
            let dst = if i < tn1 as usize {
                t1.add(i)
            } else {
                t2.add(i - tn1 as usize)
            };
            *dst = *src;
        }
        dpdk_sys::vnic_ring_dequeue_zc_finish(rx_ptr(&rx), 10);
    }
    assert_eq!(
        ring::recover_client(&rx, &tx),
        ring::Recovery::RolledForward
    );
    assert_eq!((rx.count(), tx.count()), (0, 10));
    assert_eq!(rx.drain() + tx.drain(), 10);
    assert_eq!(f.pool.in_use(), 0);
}

fn rx_ptr(r: &Ring) -> *mut dpdk_sys::rte_ring {
    r.raw_ptr()
}

/// The idle back-off of a core that shares its CPU: while its client has frames waiting it
/// offers the CPU at every pass and never sleeps (a sleep would be the frames' latency); once
/// nothing has moved for 1 ms it sleeps.
#[test]
fn a_backing_off_core_yields_while_its_client_has_frames_waiting_and_sleeps_only_when_quiet() {
    let f = fixture(1024, 8191);
    wait_until("a quiet core to sleep", Duration::from_secs(5), || {
        f.worker.core_stats().sleeps > 0
    });
    inject(&f, 0..10, 100);
    wait_until(
        "10 frames in the client's ring",
        Duration::from_secs(5),
        || f.to_client.count() == 10,
    );
    let s0 = f.worker.core_stats();
    wait_until("1000 yields", Duration::from_secs(10), || {
        f.worker.core_stats().yields >= s0.yields + 1000
    });
    let s1 = f.worker.core_stats();
    assert_eq!(
        s1.sleeps, s0.sleeps,
        "the core slept while its client had frames waiting"
    );
    // The client takes them: they leave on the wire, and the quiet core sleeps again.
    assert_eq!(reflect_some(&f), 10);
    let mut out = Vec::new();
    wait_until("10 frames on the wire", Duration::from_secs(5), || {
        collect_wire(&f, &mut out);
        out.len() == 10
    });
    assert_eq!(
        out.iter().map(|d| seq_of(d)).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    wait_until(
        "the quiet core to sleep again",
        Duration::from_secs(5),
        || f.worker.core_stats().sleeps > s1.sleeps,
    );
    wait_until("pool full", Duration::from_secs(5), || f.pool.is_full());
}
