//! Packet-buffer pools. A pool is freed only when every mbuf is back (DESIGN §6.9): dropping a
//! pool with mbufs still out leaks it on purpose and logs, rather than freeing memory in use.
use crate::error::{c_name, Error, Result};
use crate::mbuf::{Burst, Mbuf, BURST};
use std::ptr::NonNull;

/// Default data room: 2048 bytes of packet data plus the standard headroom.
pub const DEFAULT_DATA_ROOM: u16 = 2048 + 128;

/// An mbuf pool (`rte_pktmbuf_pool_create`), owned.
#[derive(Debug)]
pub struct Mempool {
    raw: NonNull<dpdk_sys::rte_mempool>,
    name: String,
    size: u32,
    owned: bool,
}

// SAFETY: rte_mempool get/put are multi-producer/multi-consumer safe (default ring ops); the
// handle is a pointer into shared DPDK memory valid until rte_mempool_free.
unsafe impl Send for Mempool {}
// SAFETY: every method takes &self and calls thread-safe mempool functions.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Create a pool of `size` mbufs with a per-lcore cache of `cache` and `data_room` bytes each.
    pub fn new(name: &str, size: u32, cache: u32, data_room: u16, socket: i32) -> Result<Mempool> {
        let cname = c_name("mempool", name, 25)?;
        if cache > 512 || (cache > 0 && cache * 3 / 2 > size) {
            return Err(Error::Invalid {
                op: "rte_pktmbuf_pool_create",
                why: format!("cache {cache} too large for a pool of {size} (max 512 and size/1.5)"),
            });
        }
        // SAFETY: cname is a valid C string; arguments are checked above.
        let raw = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(cname.as_ptr(), size, cache, 0, data_room, socket)
        };
        let raw =
            NonNull::new(raw).ok_or_else(|| Error::from_errno("rte_pktmbuf_pool_create", name))?;
        Ok(Mempool {
            raw,
            name: name.into(),
            size,
            owned: true,
        })
    }

    /// Look up a pool created by this or another (primary) process. Not freed on drop.
    pub fn lookup(name: &str) -> Result<Mempool> {
        let cname = c_name("mempool", name, 25)?;
        // SAFETY: cname is a valid C string.
        let raw = unsafe { dpdk_sys::rte_mempool_lookup(cname.as_ptr()) };
        let raw = NonNull::new(raw).ok_or_else(|| Error::from_errno("rte_mempool_lookup", name))?;
        // SAFETY: raw is a live mempool.
        let size = unsafe { raw.as_ref().size };
        Ok(Mempool {
            raw,
            name: name.into(),
            size,
            owned: false,
        })
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Total mbufs in the pool.
    pub fn size(&self) -> u32 {
        self.size
    }
    /// Mbufs available (in the ring and the lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: read-only query on a live pool.
        unsafe { dpdk_sys::vnic_rte_mempool_avail_count(self.raw.as_ptr()) }
    }
    /// Mbufs currently handed out.
    pub fn in_use(&self) -> u32 {
        // SAFETY: read-only query on a live pool.
        unsafe { dpdk_sys::vnic_rte_mempool_in_use_count(self.raw.as_ptr()) }
    }
    /// True when every mbuf is back in the pool.
    pub fn is_full(&self) -> bool {
        self.available() == self.size
    }
    /// Raw pointer for queue setup.
    pub(crate) fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.raw.as_ptr()
    }

    /// Allocate one mbuf (control path and tests; the poll loop never allocates).
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: pool is live; a non-null result is a fresh mbuf we now own.
        let m = unsafe { dpdk_sys::vnic_rte_pktmbuf_alloc(self.raw.as_ptr()) };
        NonNull::new(m).map(|p| unsafe {
            // SAFETY: freshly allocated, owned by nobody else.
            Mbuf::from_raw(p)
        })
    }

    /// Allocate an mbuf holding `data`.
    pub fn alloc_with(&self, data: &[u8]) -> Option<Mbuf> {
        let mut m = self.alloc()?;
        m.append(data)?;
        Some(m)
    }

    /// Allocate up to `n` mbufs in one bulk call (all or none) onto the end of `burst`, each
    /// initialised by `init(i, mbuf)`. Traffic generators use this; the poll loop never
    /// allocates. Returns how many were added.
    pub fn alloc_burst(
        &self,
        burst: &mut Burst,
        n: usize,
        mut init: impl FnMut(usize, &mut Mbuf),
    ) -> usize {
        let n = n.min(BURST - burst.len);
        if n == 0 {
            return 0;
        }
        // SAFETY: pool is live; ptrs[len..len + n] is room inside the burst's array.
        let ret = unsafe {
            dpdk_sys::vnic_rte_pktmbuf_alloc_bulk(
                self.raw.as_ptr(),
                burst.ptrs.as_mut_ptr().add(burst.len),
                n as u32,
            )
        };
        if ret != 0 {
            return 0;
        }
        for i in 0..n {
            // SAFETY: freshly allocated and non-null on success; lent to `init` and given back
            // to the burst, which owns it from here on.
            let mut m =
                unsafe { Mbuf::from_raw(NonNull::new_unchecked(burst.ptrs[burst.len + i])) };
            init(i, &mut m);
            let _ = m.into_raw();
        }
        burst.len += n;
        n
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let out = self.in_use();
        if out != 0 {
            tracing::error!(
                pool = %self.name,
                in_use = out,
                "mempool not full at teardown: leaking it rather than freeing mbufs still in use"
            );
            return;
        }
        // SAFETY: every mbuf is back, so nothing references the pool's memory.
        unsafe { dpdk_sys::rte_mempool_free(self.raw.as_ptr()) };
    }
}
