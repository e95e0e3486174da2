//! Owned packet buffers and fixed-size bursts with explicit ownership transfer.
use std::ptr::NonNull;

/// Packets per burst everywhere in vnicd (DPDK's usual 32).
pub const BURST: usize = 32;

/// An owned mbuf: freed on drop. `Send` (it can move to another lcore), never `Sync`.
#[derive(Debug)]
pub struct Mbuf(NonNull<dpdk_sys::rte_mbuf>);

// SAFETY: an mbuf is a plain buffer owned by exactly one holder; moving it between threads is
// what rings do. It is not Sync: no shared access to its data.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Take ownership of a raw mbuf.
    ///
    /// # Safety
    /// `p` must be a valid mbuf that nobody else owns or will free.
    pub unsafe fn from_raw(p: NonNull<dpdk_sys::rte_mbuf>) -> Mbuf {
        Mbuf(p)
    }
    /// Give up ownership; the caller must free or hand on the pointer.
    pub fn into_raw(self) -> NonNull<dpdk_sys::rte_mbuf> {
        let p = self.0;
        std::mem::forget(self);
        p
    }
    /// The buffer's address (for zero-copy checks).
    pub fn addr(&self) -> usize {
        self.0.as_ptr() as usize
    }
    /// Packet length (all segments).
    pub fn len(&self) -> usize {
        // SAFETY: valid owned mbuf.
        unsafe { dpdk_sys::vnic_rte_pktmbuf_pkt_len(self.0.as_ptr()) as usize }
    }
    /// True for an empty packet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The first segment's data.
    pub fn data(&self) -> &[u8] {
        // SAFETY: mtod points at data_len initialised bytes of the first segment we own.
        unsafe {
            let p = dpdk_sys::vnic_rte_pktmbuf_mtod(self.0.as_ptr()) as *const u8;
            let n = dpdk_sys::vnic_rte_pktmbuf_data_len(self.0.as_ptr()) as usize;
            std::slice::from_raw_parts(p, n)
        }
    }
    /// The first segment's data, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in data(), and &mut self guarantees exclusive access.
        unsafe {
            let p = dpdk_sys::vnic_rte_pktmbuf_mtod(self.0.as_ptr()) as *mut u8;
            let n = dpdk_sys::vnic_rte_pktmbuf_data_len(self.0.as_ptr()) as usize;
            std::slice::from_raw_parts_mut(p, n)
        }
    }
    /// Grow the packet by `n` bytes without writing them and return the new tail (generators
    /// write only their headers). The bytes are whatever the buffer held: pool memory is zeroed
    /// when the pool is made, so they are always initialised. `None` if the tailroom is too
    /// small.
    pub fn extend(&mut self, n: u16) -> Option<&mut [u8]> {
        // SAFETY: append returns NULL or a pointer to n bytes inside our buffer, initialised as
        // said above; &mut self gives exclusive access for the slice's lifetime.
        unsafe {
            let p = dpdk_sys::vnic_rte_pktmbuf_append(self.0.as_ptr(), n) as *mut u8;
            if p.is_null() {
                return None;
            }
            Some(std::slice::from_raw_parts_mut(p, n as usize))
        }
    }
    /// Append `bytes` to the packet; `None` if the tailroom is too small.
    pub fn append(&mut self, bytes: &[u8]) -> Option<()> {
        let n = u16::try_from(bytes.len()).ok()?;
        // SAFETY: append returns NULL or a pointer to n writable bytes inside our buffer.
        unsafe {
            let p = dpdk_sys::vnic_rte_pktmbuf_append(self.0.as_ptr(), n) as *mut u8;
            if p.is_null() {
                return None;
            }
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        }
        Some(())
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; freeing returns it to its pool exactly once.
        unsafe { dpdk_sys::vnic_rte_pktmbuf_free(self.0.as_ptr()) }
    }
}

/// A stack array of up to [`BURST`] raw mbuf pointers, as the poll loop uses them. The burst owns
/// `ptrs[..len]`; helpers hand a prefix on and free the rest in bulk.
pub struct Burst {
    pub(crate) ptrs: [*mut dpdk_sys::rte_mbuf; BURST],
    pub(crate) len: usize,
}

impl Default for Burst {
    fn default() -> Self {
        Burst {
            ptrs: [std::ptr::null_mut(); BURST],
            len: 0,
        }
    }
}

impl Burst {
    /// Number of mbufs held.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Add an owned mbuf; gives it back if the burst is full.
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == BURST {
            return Err(m);
        }
        self.ptrs[self.len] = m.into_raw().as_ptr();
        self.len += 1;
        Ok(())
    }
    /// Look at every packet's first segment without taking ownership.
    pub fn for_each_data(&self, mut f: impl FnMut(&[u8])) {
        for &p in &self.ptrs[..self.len] {
            // SAFETY: ptrs[..len] are owned, valid mbufs; the slice lives no longer than `self`.
            let d = unsafe {
                let a = dpdk_sys::vnic_rte_pktmbuf_mtod(p) as *const u8;
                let n = dpdk_sys::vnic_rte_pktmbuf_data_len(p) as usize;
                std::slice::from_raw_parts(a, n)
            };
            f(d);
        }
    }
    /// Free every packet in one bulk call. Also the hot path after a copying transmit (vhost
    /// enqueue): the frames are the client's copy and the mbufs are still ours.
    #[inline(always)]
    pub fn free_all(&mut self) -> usize {
        let n = std::mem::take(&mut self.len);
        if n > 0 {
            // SAFETY: ptrs[..n] are mbufs this burst owns; nobody took them.
            unsafe { dpdk_sys::vnic_rte_pktmbuf_free_bulk(self.ptrs.as_mut_ptr(), n as u32) };
        }
        n
    }
    /// Take the mbufs out as owned values; those not taken when the iterator is dropped are
    /// freed.
    pub fn drain(&mut self) -> Drain<'_> {
        let n = std::mem::take(&mut self.len);
        Drain { b: self, i: 0, n }
    }
    /// Forget the first `sent` (now owned by whoever took them) and free the unsent tail in bulk.
    /// Returns how many were freed.
    #[inline(always)]
    pub(crate) fn consume(&mut self, sent: usize) -> usize {
        let n = self.len;
        self.len = 0;
        free_tail(&mut self.ptrs, sent, n)
    }
}

/// Iterator of [`Burst::drain`].
pub struct Drain<'a> {
    b: &'a mut Burst,
    i: usize,
    n: usize,
}

impl Iterator for Drain<'_> {
    type Item = Mbuf;
    fn next(&mut self) -> Option<Mbuf> {
        if self.i == self.n {
            return None;
        }
        let p = self.b.ptrs[self.i];
        self.i += 1;
        // SAFETY: ptrs[..n] were owned, non-null mbufs; each is handed out once.
        Some(unsafe { Mbuf::from_raw(NonNull::new_unchecked(p)) })
    }
}

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        free_tail(&mut self.b.ptrs, self.i, self.n);
    }
}

/// Free `ptrs[sent..n]` in one bulk call; returns the count freed.
#[inline(always)]
pub(crate) fn free_tail(
    ptrs: &mut [*mut dpdk_sys::rte_mbuf; BURST],
    sent: usize,
    n: usize,
) -> usize {
    if sent < n {
        drop_cold(ptrs, sent, n)
    } else {
        0
    }
}

#[cold]
#[inline(never)]
fn drop_cold(ptrs: &mut [*mut dpdk_sys::rte_mbuf; BURST], sent: usize, n: usize) -> usize {
    // SAFETY: ptrs[sent..n] are mbufs still owned by the caller (not taken by the ring/device).
    unsafe { free_at(ptrs.as_mut_ptr().add(sent), n - sent) };
    n - sent
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.consume(0);
    }
}

/// Bytes in a burst's frames.
#[inline(always)]
pub(crate) fn sum_bytes(b: &Burst) -> u64 {
    // SAFETY: b.ptrs[..len] are valid mbufs we own.
    unsafe { sum_bytes_at(b.ptrs.as_ptr(), b.len) }
}

/// Bytes in the frames of `slots[..n]` (a burst's array or entries in a ring).
///
/// # Safety
/// `slots[..n]` are readable and hold valid mbufs nobody else changes meanwhile.
#[inline(always)]
pub(crate) unsafe fn sum_bytes_at(slots: *const *mut dpdk_sys::rte_mbuf, n: usize) -> u64 {
    // Read pkt_len in Rust rather than through the shim: no call, and the loop unrolls. The PMD
    // or the client just wrote these mbuf headers, so the loads hit the cache.
    let mut sum = 0u64;
    for i in 0..n {
        // SAFETY: see the contract.
        sum += unsafe { (**slots.add(i)).pkt_len } as u64;
    }
    sum
}

/// Free the mbufs of `slots[..n]` in one bulk call (frames a ring holds that are being
/// dropped).
///
/// # Safety
/// `slots[..n]` are valid mbufs the caller owns and forgets.
#[cold]
#[inline(never)]
pub(crate) unsafe fn free_at(slots: *mut *mut dpdk_sys::rte_mbuf, n: usize) {
    // SAFETY: see the contract.
    unsafe { dpdk_sys::vnic_rte_pktmbuf_free_bulk(slots, n as u32) };
}
