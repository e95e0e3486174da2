//! Single-producer/single-consumer rings of mbuf pointers: a client's rx and tx queue.
use crate::error::{c_name, Error, Result};
use crate::mbuf::{Burst, Mbuf, BURST};
use std::ptr::NonNull;

/// An `rte_ring` carrying mbufs. Owned rings are drained (mbufs freed) and freed on drop.
#[derive(Debug)]
pub struct Ring {
    raw: NonNull<dpdk_sys::rte_ring>,
    name: String,
    owned: bool,
}

// SAFETY: the ring lives in DPDK shared memory until rte_ring_free; enqueue/dequeue are called
// by exactly one producer and one consumer thread, which the forwarding table arranges.
unsafe impl Send for Ring {}
// SAFETY: &self methods are either single-producer/consumer operations documented as such, or
// read-only counts.
unsafe impl Sync for Ring {}

impl Ring {
    /// Create an SP/SC ring holding up to `depth - 1` mbufs (`depth` a power of two).
    pub fn new(name: &str, depth: u32, socket: i32) -> Result<Ring> {
        let cname = c_name("ring", name, 26)?;
        if !depth.is_power_of_two() || depth < 2 {
            return Err(Error::Invalid {
                op: "rte_ring_create",
                why: format!("depth {depth} must be a power of two >= 2"),
            });
        }
        let flags = dpdk_sys::RING_F_SP_ENQ | dpdk_sys::RING_F_SC_DEQ;
        // SAFETY: valid name and checked depth.
        let raw = unsafe { dpdk_sys::rte_ring_create(cname.as_ptr(), depth, socket, flags) };
        let raw = NonNull::new(raw).ok_or_else(|| Error::from_errno("rte_ring_create", name))?;
        Ok(Ring {
            raw,
            name: name.into(),
            owned: true,
        })
    }

    /// Look up a ring by name (e.g. a client process attaching). Not freed on drop.
    pub fn lookup(name: &str) -> Result<Ring> {
        let cname = c_name("ring", name, 26)?;
        // SAFETY: valid name.
        let raw = unsafe { dpdk_sys::rte_ring_lookup(cname.as_ptr()) };
        let raw = NonNull::new(raw).ok_or_else(|| Error::from_errno("rte_ring_lookup", name))?;
        Ok(Ring {
            raw,
            name: name.into(),
            owned: false,
        })
    }

    /// The ring's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Entries in the ring.
    pub fn count(&self) -> u32 {
        // SAFETY: read-only on a live ring.
        unsafe { dpdk_sys::vnic_rte_ring_count(self.raw.as_ptr()) }
    }
    /// How many mbufs it can hold: fixed at creation (`depth - 1`), unlike `count() +
    /// free_count()`, two reads that race with a producer or consumer working on the ring.
    pub fn capacity(&self) -> u32 {
        // SAFETY: `capacity` is written once by rte_ring_create and only read afterwards.
        unsafe { (*self.raw.as_ptr()).capacity }
    }
    /// Free slots.
    pub fn free_count(&self) -> u32 {
        // SAFETY: read-only on a live ring.
        unsafe { dpdk_sys::vnic_rte_ring_free_count(self.raw.as_ptr()) }
    }
    pub(crate) fn as_ptr(&self) -> *mut dpdk_sys::rte_ring {
        self.raw.as_ptr()
    }
    /// The raw ring, for tests that drive DPDK's ring API directly.
    pub fn raw_ptr(&self) -> *mut dpdk_sys::rte_ring {
        self.raw.as_ptr()
    }

    /// Enqueue as many of `burst` as fit; the rest are freed. Returns (enqueued, dropped).
    /// The caller must be this ring's only producer.
    pub fn enqueue(&self, burst: &mut Burst) -> (usize, usize) {
        let n = burst.len;
        // SAFETY: ptrs[..n] are owned mbufs; the ring takes ownership of the first `sent`.
        let sent = unsafe {
            dpdk_sys::vnic_rte_ring_enqueue_burst(self.as_ptr(), burst.ptrs.as_ptr() as _, n as u32)
        } as usize;
        let dropped = burst.consume(sent);
        (sent, dropped)
    }

    /// [`Ring::enqueue`] in Rust ([`crate::spsc`], what the data core runs): the same ring
    /// protocol, so either end may be DPDK's code. The caller must be the only producer.
    pub fn sp_enqueue(&self, burst: &mut Burst) -> (usize, usize) {
        // SAFETY: an SP ring (Ring::new) and its only producer; ptrs[..len] are owned mbufs and
        // the ring takes the first `sent`.
        let sent =
            unsafe { crate::spsc::enqueue(self.as_ptr(), burst.ptrs.as_ptr(), burst.len as u32) }
                as usize;
        let dropped = burst.consume(sent);
        (sent, dropped)
    }

    /// [`Ring::dequeue`] in Rust. The caller must be the only consumer.
    pub fn sc_dequeue(&self, burst: &mut Burst) -> usize {
        debug_assert!(burst.is_empty());
        // SAFETY: an SC ring and its only consumer; we own what we dequeue.
        let n =
            unsafe { crate::spsc::dequeue(self.as_ptr(), burst.ptrs.as_mut_ptr(), BURST as u32) }
                as usize;
        burst.len = n;
        n
    }

    /// Take at most `max` of the next burst the way the data core sends a client's frames: peek
    /// a burst, consume only the first `max` ([`crate::spsc::commit`]); the rest stay in the
    /// ring for the next call. The caller must be the only consumer.
    pub fn sc_dequeue_upto(&self, burst: &mut Burst, max: usize) -> usize {
        debug_assert!(burst.is_empty());
        // SAFETY: an SC ring and its only consumer; the first `take` peeked mbufs become ours
        // when committed, the rest are forgotten here and stay the ring's.
        let take = unsafe {
            let n = crate::spsc::peek(self.as_ptr(), burst.ptrs.as_mut_ptr(), BURST as u32);
            let take = n.min(max as u32);
            crate::spsc::commit(self.as_ptr(), take);
            take
        } as usize;
        burst.len = take;
        take
    }

    /// [`Ring::sp_enqueue`] the way the data core fills a client's ring from a device: the
    /// frames are written straight into the slots [`crate::spsc::reserve`] hands out (up to the
    /// array's end, then again from its start) and published. The caller must be the only
    /// producer. Returns (enqueued, dropped) as [`Ring::enqueue`].
    pub fn sp_enqueue_in_place(&self, burst: &mut Burst) -> (usize, usize) {
        let n = burst.len;
        let mut done = 0;
        while done < n {
            // SAFETY: an SP ring and its only producer; the reserved slots are ours to write
            // until published, and each gets an owned mbuf of the burst before it is.
            let got = unsafe {
                let (slots, room, _) = crate::spsc::reserve(self.as_ptr(), (n - done) as u32);
                for i in 0..room as usize {
                    *slots.add(i) = burst.ptrs[done + i];
                }
                crate::spsc::publish(self.as_ptr(), room);
                room as usize
            };
            if got == 0 {
                break;
            }
            done += got;
        }
        burst.ptrs.copy_within(done..n, 0);
        burst.len = n - done;
        (done, burst.consume(0))
    }

    /// [`Ring::sc_dequeue_upto`] the way the data core sends a client's frames: the entries are
    /// read where they lie ([`crate::spsc::peek_in_place`], up to the array's end) and only the
    /// first `max` consumed. The caller must be the only consumer.
    pub fn sc_dequeue_in_place_upto(&self, burst: &mut Burst, max: usize) -> usize {
        debug_assert!(burst.is_empty());
        // SAFETY: an SC ring and its only consumer; the first `take` entries become ours when
        // committed, the rest stay the ring's.
        let take = unsafe {
            let (slots, n) = crate::spsc::peek_in_place(self.as_ptr(), BURST as u32);
            let take = n.min(max as u32);
            for i in 0..take as usize {
                burst.ptrs[i] = *slots.add(i);
            }
            crate::spsc::commit(self.as_ptr(), take);
            take
        } as usize;
        burst.len = take;
        take
    }

    /// Enqueue one owned mbuf; gives it back if the ring is full. Single producer only.
    pub fn enqueue_one(&self, m: Mbuf) -> Result<(), Mbuf> {
        let mut p = [m.into_raw().as_ptr()];
        // SAFETY: p[0] is an owned mbuf; on success the ring owns it.
        let sent =
            unsafe { dpdk_sys::vnic_rte_ring_enqueue_burst(self.as_ptr(), p.as_mut_ptr() as _, 1) };
        if sent == 1 {
            Ok(())
        } else {
            // SAFETY: not enqueued, so still ours.
            Err(unsafe { Mbuf::from_raw(NonNull::new_unchecked(p[0])) })
        }
    }

    /// Dequeue up to a burst into `burst` (which must be empty). Single consumer only.
    pub fn dequeue(&self, burst: &mut Burst) -> usize {
        debug_assert!(burst.is_empty());
        // SAFETY: the ring hands us ownership of up to BURST mbufs written into ptrs.
        let n = unsafe {
            dpdk_sys::vnic_rte_ring_dequeue_burst(
                self.as_ptr(),
                burst.ptrs.as_mut_ptr() as _,
                BURST as u32,
            )
        } as usize;
        burst.len = n;
        n
    }

    /// Dequeue and free everything in the ring; returns the count. Only when no producer or
    /// consumer runs (the data core has left the ring).
    pub fn drain(&self) -> usize {
        let mut total = 0;
        let mut b = Burst::default();
        loop {
            let n = self.dequeue(&mut b);
            if n == 0 {
                return total;
            }
            total += b.consume(0);
        }
    }
}

/// How [`recover_client`] left a client's ring pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// The client was between operations.
    Clean,
    /// It died mid-move: the move was undone (mbufs still in its rx ring).
    RolledBack,
    /// It died after taking from rx: the move was completed (mbufs in its tx ring).
    RolledForward,
}

/// Repair a dead client's ring pair before draining it. Only when neither the client nor the
/// data core uses the rings any more.
pub fn recover_client(rx: &Ring, tx: &Ring) -> Recovery {
    // SAFETY: both rings are live; the caller guarantees no producer or consumer runs.
    match unsafe { dpdk_sys::vnic_ring_recover_client(rx.as_ptr(), tx.as_ptr()) } {
        1 => Recovery::RolledBack,
        2 => Recovery::RolledForward,
        _ => Recovery::Clean,
    }
}

impl Ring {
    /// Client side: move up to a burst from this (client rx) ring to `tx` in place, letting `f`
    /// edit each frame's first segment on the way. Crash-safe: if the process dies at any
    /// instant, [`recover_client`] finds every mbuf in one of the two rings. Returns the count.
    /// The caller must be this ring's only consumer and `tx`'s only producer.
    pub fn forward_to(&self, tx: &Ring, mut f: impl FnMut(&mut [u8])) -> usize {
        type Slot = *mut *mut dpdk_sys::rte_mbuf;
        let (mut r1, mut rn1, mut r2): (
            *mut *mut std::ffi::c_void,
            u32,
            *mut *mut std::ffi::c_void,
        ) = (std::ptr::null_mut(), 0, std::ptr::null_mut());
        // SAFETY: live SC ring; reserves up to BURST entries in place (head moves, tail does not).
        let n = unsafe {
            dpdk_sys::vnic_ring_dequeue_zc_start(
                self.as_ptr(),
                BURST as u32,
                &mut r1,
                &mut rn1,
                &mut r2,
            )
        };
        if n == 0 {
            return 0;
        }
        let (mut t1, mut tn1, mut t2): (
            *mut *mut std::ffi::c_void,
            u32,
            *mut *mut std::ffi::c_void,
        ) = (std::ptr::null_mut(), 0, std::ptr::null_mut());
        // SAFETY: live SP ring; reserves up to n slots in place.
        let m = unsafe {
            dpdk_sys::vnic_ring_enqueue_zc_start(tx.as_ptr(), n, &mut t1, &mut tn1, &mut t2)
        };
        let at = |p1: Slot, n1: u32, p2: Slot, i: u32| -> Slot {
            // SAFETY: i < reserved count, split over the two segments the ring reported.
            unsafe {
                if i < n1 {
                    p1.add(i as usize)
                } else {
                    p2.add((i - n1) as usize)
                }
            }
        };
        for i in 0..m {
            // SAFETY: slot i of the rx reservation holds an mbuf we may use until finish; slot
            // i of the tx reservation is ours to write.
            unsafe {
                let p = *at(r1 as Slot, rn1, r2 as Slot, i);
                let len = (*p).data_len as usize;
                let data = ((*p).buf_addr as *mut u8).add((*p).data_off as usize);
                f(std::slice::from_raw_parts_mut(data, len));
                *at(t1 as Slot, tn1, t2 as Slot, i) = p;
            }
        }
        // SAFETY: finish rx first, then tx: the order recover_client relies on. m <= n.
        unsafe {
            dpdk_sys::vnic_ring_dequeue_zc_finish(self.as_ptr(), m);
            dpdk_sys::vnic_ring_enqueue_zc_finish(tx.as_ptr(), m);
        }
        m as usize
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        self.drain();
        // SAFETY: owned ring, drained, no longer referenced by any published table.
        unsafe { dpdk_sys::rte_ring_free(self.raw.as_ptr()) }
    }
}
