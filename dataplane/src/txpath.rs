//! The client → VF direction of the poll loop: which tx queue (the active device's, or its
//! backup's once the device reads down or its consumer is seen stopped: fast reroute), shm
//! frames held in the client's ring when the device refuses them, the spoof check, and the data
//! core's refuse-window bookkeeping.
use crate::counters::{bump, VnicCounters};
use crate::mbuf::{sum_bytes, sum_bytes_at, Burst};
use crate::port::TxQueue;
use crate::reroute::{Backup, DeviceHealth, DpEvent, Events};
use crate::table::{ClientSide, QueueEntry};
use crate::txwatch::Verdict;
use crate::vhost::VhostQueue;

/// Which device a burst goes to.
#[derive(Clone, Copy)]
enum Via<'a> {
    /// The active device (with its flag, if the entry has one).
    Active(Option<&'a DeviceHealth>),
    /// The backup, because the active device (this flag) is down or its consumer stopped.
    Backup(&'a DeviceHealth),
}

/// The queue to transmit on: the active device's, or the backup's from the burst on which the
/// active one reads down or its consumer is seen stopped (the first such burst tells the
/// control thread).
#[inline(always)]
fn pick_tx<'a>(q: &'a QueueEntry, ev: &Events, now: u64) -> (TxQueue, Via<'a>) {
    let Some(h) = q.health.as_deref() else {
        return (q.tx, Via::Active(None));
    };
    let stalled = match q.watch.as_deref().map(|w| w.look(now, q.refuse_window)) {
        Some(Verdict::Stalled) => true,
        Some(Verdict::Resumed) => {
            h.reroute_ended();
            false
        }
        Some(Verdict::Moving) | None => false,
    };
    if stalled || h.is_down() {
        if let Some(b) = q.backup.as_ref().filter(|b| !b.health.is_down()) {
            return rerouted(h, b, ev, now);
        }
    }
    (q.tx, Via::Active(Some(h)))
}

#[cold]
#[inline(never)]
fn rerouted<'a>(h: &'a DeviceHealth, b: &'a Backup, ev: &Events, now: u64) -> (TxQueue, Via<'a>) {
    // The first burst of a reroute takes a fresh stamp: `now` is the end of the previous pass,
    // which can precede the moment the device was marked down, and the reroute would seem to
    // come first. Later bursts (a tentative reroute can last until `tx_stall_ms`) do not pay
    // for another `rdtsc`.
    if !h.is_rerouted() {
        let at = crate::eal::rdtsc().max(now);
        if h.note_rerouted(at, 0) {
            let (from, to) = (h.port(), b.health.port());
            ev.push(if h.is_down() {
                DpEvent::Rerouted { from, to, at }
            } else {
                DpEvent::Stalled { from, to, at }
            });
        }
    }
    (b.tx, Via::Backup(h))
}

/// Client tx side → VF tx burst; returns frames taken from the client. Frames a shm client's
/// ring holds stay there when the device refuses them (back-pressure, as a NIC's tx ring gives
/// its driver); the other sides cannot give frames back, so what the device refuses is dropped
/// and counted.
#[inline(always)]
pub(crate) fn forward_tx(
    q: &QueueEntry,
    c: &VnicCounters,
    b: &mut Burst,
    ev: &Events,
    now: u64,
) -> u64 {
    let (tx, via) = pick_tx(q, ev, now);
    let n = match &q.client {
        ClientSide::Rings(r) => return tx_from_ring(q, r.from_client_raw, tx, via, c, b, now),
        ClientSide::Vhost(v) => vhost_dequeue(v, b),
        ClientSide::Ethdev(e) => e.rx.rx_burst(b),
    };
    if n == 0 {
        return 0;
    }
    if let Some(mac) = q.spoof_mac {
        let bad = drop_spoofed(b, &mac);
        if bad > 0 {
            bump(&c.spoof_drops, bad as u64);
            if b.len == 0 {
                return n as u64;
            }
        }
    }
    let bytes = sum_bytes(b);
    let len = b.len;
    let (sent, dropped) = tx.tx_burst(b);
    note_tx(q, via, len, sent, now);
    bump(&c.tx_packets, sent as u64);
    bump(&c.tx_bytes, bytes);
    if dropped > 0 {
        bump(&c.tx_drops, dropped as u64);
    }
    n as u64
}

/// Health bookkeeping after a burst of `n` met `sent` accepted on the device `via` names.
#[inline(always)]
fn note_tx(q: &QueueEntry, via: Via, n: usize, sent: usize, now: u64) {
    match via {
        Via::Backup(h) => {
            h.note_rerouted(now, sent);
        }
        Via::Active(Some(h)) if !h.is_down() => h.note_tx(n, sent, now, q.refuse_window),
        Via::Active(_) => {}
    }
}

/// A shm client's tx ring → the VF: peek, send, and consume only what was sent or dropped as
/// spoofed; the rest waits in the ring for the next pass (or the backup device). The device
/// reads the frames straight from the ring's slots (no copy through a burst array); where they
/// wrap at the array's end this burst is shorter, the rest goes next pass.
#[inline(always)]
fn tx_from_ring(
    q: &QueueEntry,
    ring: *mut dpdk_sys::rte_ring,
    tx: TxQueue,
    via: Via,
    c: &VnicCounters,
    b: &mut Burst,
    now: u64,
) -> u64 {
    // SAFETY: a live SC ring (kept alive by the table); this core is its only consumer. The
    // peeked mbufs stay the ring's until committed.
    let (slots, n) = unsafe { crate::spsc::peek_in_place(ring, crate::mbuf::BURST as u32) };
    if n == 0 {
        return 0;
    }
    let n = n as usize;
    if let Some(mac) = q.spoof_mac {
        // SAFETY: slots[..n] are peeked entries: valid mbufs the producer no longer touches.
        if (0..n).any(|i| !frame_from(unsafe { *slots.add(i) }, &mac)) {
            // SAFETY: as above; the burst only borrows them (its length is reset before it
            // could free anything).
            unsafe { std::ptr::copy_nonoverlapping(slots, b.ptrs.as_mut_ptr(), n) };
            b.len = n;
            return tx_from_ring_spoofed(q, ring, tx, via, c, b, now, &mac);
        }
    }
    // SAFETY: as above.
    let sent = unsafe { send_held(tx, slots, n, c) };
    // SAFETY: sent <= n peeked entries; the device owns those now.
    unsafe { crate::spsc::commit(ring, sent as u32) };
    note_tx(q, via, n, sent, now);
    sent as u64
}

/// Send frames a client's ring still holds (`slots[..n]`; the unsent tail stays there) and
/// count what went: packets and bytes of the sent prefix only. Returns how many were sent.
///
/// # Safety
/// `slots[..n]` are valid mbufs the caller may hand to the device.
#[inline(always)]
unsafe fn send_held(
    tx: TxQueue,
    slots: *mut *mut dpdk_sys::rte_mbuf,
    n: usize,
    c: &VnicCounters,
) -> usize {
    if n == 0 {
        return 0;
    }
    // SAFETY: see the contract.
    let bytes = unsafe { sum_bytes_at(slots, n) };
    // SAFETY: see the contract; the device takes the first `sent`.
    let sent = unsafe { tx.tx_from(slots, n as u16) } as usize;
    if sent > 0 {
        bump(&c.tx_packets, sent as u64);
        bump(
            &c.tx_bytes,
            bytes
                - if sent < n {
                    // SAFETY: the unsent tail is still valid (the ring holds it).
                    unsafe { sum_bytes_at(slots.add(sent), n - sent) }
                } else {
                    0
                },
        );
    }
    sent
}

/// [`tx_from_ring`] for a burst with a spoofed frame: send the good ones, then consume the ring
/// up to the first good frame the device refused; spoofed frames before that point are freed
/// and counted, those after it stay (and are looked at again next pass).
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn tx_from_ring_spoofed(
    q: &QueueEntry,
    ring: *mut dpdk_sys::rte_ring,
    tx: TxQueue,
    via: Via,
    c: &VnicCounters,
    b: &mut Burst,
    now: u64,
    mac: &[u8; 6],
) -> u64 {
    // The burst only borrows these frames (the ring holds them until committed): it must not
    // free any.
    let n = std::mem::take(&mut b.len);
    let all = b.ptrs;
    let mut at = [0usize; crate::mbuf::BURST];
    let mut good = 0;
    for (i, &p) in all[..n].iter().enumerate() {
        if frame_from(p, mac) {
            b.ptrs[good] = p;
            at[good] = i;
            good += 1;
        }
    }
    // SAFETY: b.ptrs[..good] are peeked frames the device may take.
    let sent = unsafe { send_held(tx, b.ptrs.as_mut_ptr(), good, c) };
    let upto = if sent == good { n } else { at[sent] };
    let mut bad = [std::ptr::null_mut(); crate::mbuf::BURST];
    let mut nbad = 0;
    for &p in &all[..upto] {
        if !frame_from(p, mac) {
            bad[nbad] = p;
            nbad += 1;
        }
    }
    // SAFETY: every entry before `upto` was sent (now the device's) or is spoofed (freed below).
    unsafe { crate::spsc::commit(ring, upto as u32) };
    if nbad > 0 {
        crate::mbuf::free_tail(&mut bad, 0, nbad);
        bump(&c.spoof_drops, nbad as u64);
    }
    note_tx(q, via, good, sent, now);
    upto as u64
}

/// Whether frame `p` carries source MAC `mac` (frames shorter than a MAC header do not).
#[inline(always)]
fn frame_from(p: *mut dpdk_sys::rte_mbuf, mac: &[u8; 6]) -> bool {
    // SAFETY: p is a valid mbuf (ours or peeked from a ring we consume); its first segment holds
    // data_len bytes at buf_addr + data_off (what rte_pktmbuf_mtod computes).
    unsafe {
        (*p).data_len >= 12
            && *(((*p).buf_addr as *const u8).add((*p).data_off as usize + 6) as *const [u8; 6])
                == *mac
    }
}

/// Frames from the guest's tx vring, copied into mbufs of the vNIC's pool.
#[inline(always)]
fn vhost_dequeue(v: &VhostQueue, b: &mut Burst) -> usize {
    let Some(vring) = v.from_guest else {
        return 0;
    };
    if !v.gate.is_open() {
        return 0;
    }
    // SAFETY: gate open (see rx_vhost); the pool is kept alive by the entry; ptrs has room for
    // BURST mbufs, which become ours.
    let n = unsafe {
        dpdk_sys::rte_vhost_dequeue_burst(
            v.vid,
            vring,
            v.pool,
            b.ptrs.as_mut_ptr(),
            crate::mbuf::BURST as u16,
        )
    } as usize;
    b.len = n;
    n
}

/// Keep only frames whose source MAC is `mac` (compacting the burst in place) and free the rest
/// in one bulk call. Returns how many were dropped.
#[inline(always)]
fn drop_spoofed(b: &mut Burst, mac: &[u8; 6]) -> usize {
    let n = b.len;
    let mut bad = [std::ptr::null_mut(); crate::mbuf::BURST];
    let (mut keep, mut nbad) = (0, 0);
    for i in 0..n {
        let p = b.ptrs[i];
        if frame_from(p, mac) {
            b.ptrs[keep] = p;
            keep += 1;
        } else {
            bad[nbad] = p;
            nbad += 1;
        }
    }
    b.len = keep;
    if nbad > 0 {
        crate::mbuf::free_tail(&mut bad, 0, nbad);
    }
    nbad
}
