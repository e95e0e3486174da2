//! Single-producer/single-consumer operations on DPDK's `rte_ring`, written in Rust so that the
//! poll loop's four ring operations per burst inline instead of calling into the C shim.
//!
//! They follow DPDK 22.11's own protocol (`rte_ring_c11_pvt.h`, the `RTE_RING_SYNC_ST` case):
//! the producer owns `prod.head`/`prod.tail`, the consumer `cons.head`/`cons.tail`; each side
//! reads the other's tail with acquire ordering, copies the slots (`&r[1]`, indexed by
//! `head & mask`), then publishes its new tail with release ordering. So a DPDK process on the
//! other end of the same ring (a secondary using `rte_ring_*_burst`) interoperates: the ring
//! tests move 10 M frames between the two implementations in both directions.
//!
//! Every function requires a live ring created with `RING_F_SP_ENQ | RING_F_SC_DEQ` and that the
//! caller is its only producer (enqueue) or only consumer (dequeue, peek, commit).
use dpdk_sys::{rte_mbuf, rte_ring};
use std::ptr::addr_of_mut;
use std::sync::atomic::{AtomicU32, Ordering};

type Slot = *mut rte_mbuf;

#[inline(always)]
unsafe fn atomic<'a>(p: *mut u32) -> &'a AtomicU32 {
    // SAFETY: the caller passes a field of a live ring; u32 and AtomicU32 share size and
    // alignment, and every access to these fields (ours and DPDK's) is atomic or single-writer.
    unsafe { AtomicU32::from_ptr(p) }
}

#[inline(always)]
unsafe fn slots(r: *mut rte_ring) -> *mut Slot {
    // SAFETY: DPDK lays the slot array out right after the header (`&r[1]` in rte_ring_elem).
    unsafe { r.add(1) as *mut Slot }
}

/// Free slots, as the producer sees them.
///
/// # Safety
/// `r` is a live ring.
#[inline(always)]
pub unsafe fn free_count(r: *mut rte_ring) -> u32 {
    // SAFETY: see the contract.
    unsafe { room(r).1 }
}

/// The producer's head and how many slots are free past it (the consumer's tail read with
/// acquire ordering, so the slots it handed back are no longer read): the producer's
/// counterpart of [`published`].
///
/// # Safety
/// `r` is a live ring.
#[inline(always)]
unsafe fn room(r: *mut rte_ring) -> (u32, u32) {
    // SAFETY: fields of a live ring; capacity is written once at creation.
    unsafe {
        let head = atomic(addr_of_mut!((*r).__bindgen_anon_1.prod.head)).load(Ordering::Relaxed);
        let cons = atomic(addr_of_mut!((*r).__bindgen_anon_2.cons.tail)).load(Ordering::Acquire);
        (head, (*r).capacity.wrapping_add(cons).wrapping_sub(head))
    }
}

/// Enqueue up to `n` pointers from `objs`; returns how many the ring took (the first ones).
///
/// # Safety
/// `r` is a live SP ring, the caller its only producer; `objs` holds `n` readable slots.
#[inline(always)]
pub unsafe fn enqueue(r: *mut rte_ring, objs: *const Slot, n: u32) -> u32 {
    // SAFETY: see the function's contract; slots [head, head + n) are free (room read the
    // consumer's tail with acquire ordering) and ours until publish's release store of prod.tail.
    unsafe {
        let (head, free) = room(r);
        let n = n.min(free);
        if n == 0 {
            return 0;
        }
        copy_in(r, head, objs, n);
        publish(r, n);
        n
    }
}

/// In place (no copy): the producer's free slots from its head up to the array's end, at most
/// `max`, as (first slot, how many, all free slots). The caller writes pointers there (a PMD's
/// rx burst, say) and [`publish`]es a prefix; until then the consumer cannot see them. DPDK's
/// own zero-copy API (`rte_ring_enqueue_zc_burst_start`) hands out the same slots.
///
/// # Safety
/// As [`enqueue`].
#[inline(always)]
pub unsafe fn reserve(r: *mut rte_ring, max: u32) -> (*mut Slot, u32, u32) {
    // SAFETY: see the contract; [head, head + free) are free slots only we may write.
    unsafe {
        let (head, free) = room(r);
        let idx = head & (*r).mask;
        let n = max.min(free).min((*r).size - idx);
        (slots(r).add(idx as usize), n, free)
    }
}

/// Hand the first `n` slots of the last [`reserve`] to the consumer.
///
/// # Safety
/// As [`enqueue`], `n` is no more than reserved, and those slots hold valid pointers.
#[inline(always)]
pub unsafe fn publish(r: *mut rte_ring, n: u32) {
    if n == 0 {
        return;
    }
    // SAFETY: single producer: the producer's head and tail are ours; the release store makes
    // the slots written before it visible to a consumer that loads the tail with acquire ordering.
    unsafe {
        advance(
            addr_of_mut!((*r).__bindgen_anon_1.prod.head),
            addr_of_mut!((*r).__bindgen_anon_1.prod.tail),
            n,
        )
    }
}

/// Move one side's head and tail together by `n` (single producer or single consumer: no
/// reservation is ever left open), publishing with release ordering.
///
/// # Safety
/// `head`/`tail` are that side's fields of a live ring, and the caller is that side's only user.
#[inline(always)]
unsafe fn advance(head: *mut u32, tail: *mut u32, n: u32) {
    // SAFETY: see the contract.
    unsafe {
        let new = atomic(head).load(Ordering::Relaxed).wrapping_add(n);
        atomic(head).store(new, Ordering::Relaxed);
        atomic(tail).store(new, Ordering::Release);
    }
}

/// The consumer's head and how many entries the producer has published past it (its tail read
/// with acquire ordering, so the slots it wrote before are visible).
///
/// # Safety
/// `r` is a live ring and the caller its only consumer.
#[inline(always)]
unsafe fn published(r: *mut rte_ring) -> (u32, u32) {
    // SAFETY: fields of a live ring; the consumer's head is ours.
    unsafe {
        let head = atomic(addr_of_mut!((*r).__bindgen_anon_2.cons.head)).load(Ordering::Relaxed);
        let prod = atomic(addr_of_mut!((*r).__bindgen_anon_1.prod.tail)).load(Ordering::Acquire);
        (head, prod.wrapping_sub(head))
    }
}

/// In place (no copy): the published entries from the consumer's head up to the array's end,
/// at most `max`, as (first slot, how many). They stay the ring's until [`commit`]ted (DPDK:
/// `rte_ring_dequeue_zc_burst_start`).
///
/// # Safety
/// As [`peek`].
#[inline(always)]
pub unsafe fn peek_in_place(r: *mut rte_ring, max: u32) -> (*mut Slot, u32) {
    // SAFETY: see the contract; entries [head, prod.tail) were published with release ordering
    // and stay put until we move cons.tail.
    unsafe {
        let (head, avail) = published(r);
        let idx = head & (*r).mask;
        let n = max.min(avail).min((*r).size - idx);
        (slots(r).add(idx as usize), n)
    }
}

/// Copy up to `n` pointers out of the ring without consuming them; returns how many.
/// [`commit`] then consumes a prefix of what was peeked.
///
/// # Safety
/// `r` is a live SC ring, the caller its only consumer; `objs` has room for `n` slots.
#[inline(always)]
pub unsafe fn peek(r: *mut rte_ring, objs: *mut Slot, n: u32) -> u32 {
    // SAFETY: see the contract; entries [head, prod.tail) were published with release ordering
    // and stay put until we move cons.tail.
    unsafe {
        let (head, avail) = published(r);
        let n = n.min(avail);
        if n > 0 {
            copy_out(r, head, objs, n);
        }
        n
    }
}

/// Consume `n` entries (at most what the last [`peek`] returned): their slots go back to the
/// producer.
///
/// # Safety
/// As [`peek`], and `n` is no more than the entries peeked.
#[inline(always)]
pub unsafe fn commit(r: *mut rte_ring, n: u32) {
    if n == 0 {
        return;
    }
    // SAFETY: single consumer: the consumer's head and tail are ours; the release store hands
    // the slots back to the producer.
    unsafe {
        advance(
            addr_of_mut!((*r).__bindgen_anon_2.cons.head),
            addr_of_mut!((*r).__bindgen_anon_2.cons.tail),
            n,
        )
    }
}

/// Dequeue up to `n` pointers into `objs`; returns how many.
///
/// # Safety
/// As [`peek`].
#[inline(always)]
pub unsafe fn dequeue(r: *mut rte_ring, objs: *mut Slot, n: u32) -> u32 {
    // SAFETY: forwarded contract.
    unsafe {
        let got = peek(r, objs, n);
        commit(r, got);
        got
    }
}

#[inline(always)]
unsafe fn copy_in(r: *mut rte_ring, head: u32, objs: *const Slot, n: u32) {
    // SAFETY: caller reserved [head, head + n); the array has `size` slots and wraps at `mask`.
    unsafe {
        let (size, idx) = ((*r).size, head & (*r).mask);
        let ring = slots(r);
        let first = n.min(size - idx) as usize;
        std::ptr::copy_nonoverlapping(objs, ring.add(idx as usize), first);
        std::ptr::copy_nonoverlapping(objs.add(first), ring, n as usize - first);
    }
}

#[inline(always)]
unsafe fn copy_out(r: *mut rte_ring, head: u32, objs: *mut Slot, n: u32) {
    // SAFETY: as copy_in, for published entries [head, head + n).
    unsafe {
        let (size, idx) = ((*r).size, head & (*r).mask);
        let ring = slots(r);
        let first = n.min(size - idx) as usize;
        std::ptr::copy_nonoverlapping(ring.add(idx as usize), objs, first);
        std::ptr::copy_nonoverlapping(ring, objs.add(first), n as usize - first);
    }
}
