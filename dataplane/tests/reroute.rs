//! Fast reroute in the data core, on net_ring ports the test drains itself: a device marked
//! down (as the link or removal interrupt does) loses its traffic to the entry's backup at the
//! next burst, without a new table; a tx queue that refuses everything for the refuse window is
//! marked down by the data core itself, unless it has no backup; a congested queue that still
//! drains is not; and no frame is lost or leaked on the way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
mod common;
use common::*;
use std::sync::Arc;
use std::time::Duration;
use vnic_dataplane::*;

struct Rig {
    // Field order is drop order.
    worker: Worker,
    a: Port,
    b: Port,
    _a_in: Ring,
    _b_in: Ring,
    a_out: Arc<Ring>,
    b_out: Ring,
    from_client: Arc<Ring>,
    _to_client: Arc<Ring>,
    pool: Mempool,
    _eal: Eal,
}

fn port(name: &str, rx: &Ring, tx: &Ring, pool: &Mempool) -> Port {
    let mut p = Port::from_rings(name, &[rx], &[tx]).unwrap();
    let cfg = PortConfig {
        queues: 1,
        rx_desc: 512,
        tx_desc: 512,
        mtu: None,
        promiscuous: false,
    };
    p.configure(&cfg, pool).unwrap();
    p.start().unwrap();
    p
}

/// `a_depth`: the active device's wire (what it accepts before refusing); `refuse_us`: the
/// entry's refuse window.
fn rig(a_depth: u32, refuse_us: u32) -> Rig {
    rig_with(a_depth, refuse_us, true)
}

/// [`rig`], with b as a's backup or not (b is then only received from).
fn rig_with(a_depth: u32, refuse_us: u32, backup: bool) -> Rig {
    let eal = eal();
    let lcore = data_lcore(&eal);
    let sock = socket_id();
    let pool = Mempool::new("rr_pool", 16383, 0, mempool::DEFAULT_DATA_ROOM, sock).unwrap();
    let (a_in, b_in) = (
        Ring::new("a_in", 64, sock).unwrap(),
        Ring::new("b_in", 64, sock).unwrap(),
    );
    let a_out = Arc::new(Ring::new("a_out", a_depth, sock).unwrap());
    let b_out = Ring::new("b_out", 16384, sock).unwrap();
    let a = port("vfa", &a_in, &a_out, &pool);
    let b = port("vfb", &b_in, &b_out, &pool);
    let to_client = Arc::new(Ring::new("c_rx", 1024, sock).unwrap());
    let from_client = Arc::new(Ring::new("c_tx", 1024, sock).unwrap());
    let mut worker = Worker::launch(Launch::Lcore(lcore), 4, IdleBackoff::OFF).unwrap();
    let entry = QueueEntry::new(
        a.rx_queue(0).unwrap(),
        a.tx_queue(0).unwrap(),
        to_client.clone(),
        from_client.clone(),
        VnicSlot(0),
    )
    .also_rx(b.rx_queue(0).unwrap())
    .with_reroute(
        a.health().clone(),
        backup.then(|| Backup::new(b.tx_queue(0).unwrap(), b.health().clone())),
        refuse_us,
    );
    worker.publish(FwdTable::new(vec![entry], vec![])).unwrap();
    Rig {
        worker,
        a,
        b,
        _a_in: a_in,
        _b_in: b_in,
        a_out,
        b_out,
        from_client,
        _to_client: to_client,
        pool,
        _eal: eal,
    }
}

/// The client sends frames `seqs` (waiting for room: a full ring is back-pressure, not loss).
fn send(r: &Rig, seqs: std::ops::Range<u32>) {
    let mut s = seqs.start;
    while s < seqs.end {
        let n = (seqs.end - s).min(32);
        if r.from_client.free_count() < n {
            std::thread::yield_now();
            continue;
        }
        let mut b = Burst::default();
        for q in s..s + n {
            b.push(r.pool.alloc_with(&frame(q, 64)).unwrap()).unwrap();
        }
        assert_eq!(r.from_client.enqueue(&mut b), (n as usize, 0));
        s += n;
    }
}

/// Sequence numbers that reached a wire, freeing the frames.
fn collect(out: &Ring, seen: &mut Vec<u32>) {
    let mut b = Burst::default();
    while out.dequeue(&mut b) > 0 {
        seen.extend(b.drain().map(|m| seq_of(m.data())));
    }
}

fn finish(r: &Rig, a_seen: &mut Vec<u32>, b_seen: &mut Vec<u32>, total: usize) {
    wait_until("every frame on a wire", Duration::from_secs(10), || {
        collect(&r.a_out, a_seen);
        collect(&r.b_out, b_seen);
        a_seen.len() + b_seen.len() >= total
    });
    // Each wire in order, and together exactly what was sent.
    assert!(a_seen.windows(2).all(|w| w[0] < w[1]), "a out of order");
    assert!(b_seen.windows(2).all(|w| w[0] < w[1]), "b out of order");
    let mut all: Vec<u32> = a_seen.iter().chain(b_seen.iter()).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..total as u32).collect::<Vec<_>>(),
        "lost or duplicated"
    );
    let s = r.worker.vnic_stats(VnicSlot(0));
    assert_eq!((s.tx_packets, s.tx_drops), (total as u64, 0));
    wait_until("pool full", Duration::from_secs(5), || r.pool.is_full());
}

#[test]
fn a_device_marked_down_loses_its_traffic_to_the_backup_at_once_without_a_new_table() {
    let r = rig(16384, 0);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    send(&r, 0..1000);
    wait_until("first half on a", Duration::from_secs(5), || {
        collect(&r.a_out, &mut a);
        a.len() == 1000
    });
    let gen = r.worker.adopted_generation();
    // What the link-state interrupt callback does.
    assert!(r.a.health().mark_down(Detector::LinkEvent));
    assert!(
        !r.a.health().mark_down(Detector::HealthCheck),
        "first detector wins"
    );
    send(&r, 1000..2000);
    finish(&r, &mut a, &mut b, 2000);
    assert_eq!((a.len(), b.len()), (1000, 1000));
    assert_eq!(r.worker.adopted_generation(), gen, "no table was published");
    let (ev, dropped) = r.worker.take_events();
    assert_eq!(
        ev,
        vec![DpEvent::Rerouted {
            from: r.a.id(),
            to: r.b.id(),
            at: match ev.first() {
                Some(DpEvent::Rerouted { at, .. }) => *at,
                _ => 0,
            }
        }],
        "one event per failure"
    );
    assert_eq!(dropped, 0);
    let h = r.a.health().snapshot();
    assert_eq!(h.by, Some(Detector::LinkEvent));
    assert!(h.rerouted_at >= h.down_at && h.first_tx_at >= h.rerouted_at);
}

#[test]
fn a_tx_queue_that_refuses_everything_is_failed_by_the_data_core_and_nothing_is_lost() {
    // a's wire takes 63 frames and is never drained: a queue that stopped draining, link up.
    let r = rig(64, 200);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    send(&r, 0..3000);
    finish(&r, &mut a, &mut b, 3000);
    assert_eq!(a, (0..63).collect::<Vec<_>>(), "a took what its queue held");
    assert_eq!(b.len(), 3000 - 63);
    let h = r.a.health().snapshot();
    assert_eq!(h.by, Some(Detector::DataCore));
    assert_eq!(r.worker.take_events().0.len(), 1);
    assert!(!r.b.health().is_down());
}

#[test]
fn a_sole_device_that_refuses_everything_is_not_failed_by_the_data_core() {
    // The same stalled wire, but nothing to reroute to: failing it would only cut the path of a
    // peer that may just be slow. Frames wait in the client ring until the wire drains again.
    let r = rig_with(64, 200, false);
    let mut a = Vec::new();
    send(&r, 0..1000);
    // Far past the window: 20 ms of refused bursts.
    wait_until("a refusing for 20 ms", Duration::from_secs(10), || {
        r.a.health().snapshot().refused_for() >= vnic_dataplane::eal::tsc_hz() / 50
    });
    assert!(!r.a.health().is_down(), "the only device was failed");
    assert!(r.worker.take_events().0.is_empty());
    // The peer drains again: everything goes out on a, in order, nothing lost.
    let mut b = Vec::new();
    finish(&r, &mut a, &mut b, 1000);
    assert_eq!((a.len(), b.len()), (1000, 0));
    assert!(!r.a.health().is_down());
}

#[test]
fn a_congested_device_that_still_drains_is_not_failed() {
    // a's wire holds 63 and a slow peer takes 8 frames every 100 µs (about 80 k/s, slower than
    // the client offers): most bursts are refused, but some frames go in every window.
    let r = rig(64, 50_000);
    let total = 20_000usize;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let peer = {
        let (out, stop) = (r.a_out.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut b = Burst::default();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n = out.sc_dequeue_upto(&mut b, 8);
                seen.extend(b.drain().map(|m| seq_of(m.data())));
                if n > 0 {
                    std::thread::sleep(Duration::from_micros(100));
                } else {
                    std::thread::yield_now();
                }
            }
            seen
        })
    };
    send(&r, 0..total as u32);
    wait_until("the client ring empty", Duration::from_secs(60), || {
        r.from_client.count() == 0
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut a = peer.join().unwrap();
    let mut b = Vec::new();
    finish(&r, &mut a, &mut b, total);
    assert_eq!((a.len(), b.len()), (total, 0), "everything went out on a");
    assert!(!r.a.health().is_down(), "a congested device was failed");
    assert!(r.worker.take_events().0.is_empty());
}
