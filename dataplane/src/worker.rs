//! The data core: a pinned poll loop over an immutable forwarding table that the control thread
//! replaces by an atomic pointer swap. The loop adopts a new table at a burst boundary and
//! acknowledges its generation (a quiescent point); only then does the control side free the old
//! table. The loop itself allocates nothing, takes no lock and makes no syscall (the optional idle
//! back-off sleeps only when there was nothing to do).
use crate::counters::{bump, CoreCounters, CoreStats, VnicCounters, VnicStats};
use crate::eal::rdtsc;
use crate::error::{Error, Result};
use crate::mbuf::{free_at, sum_bytes, sum_bytes_at, Burst, BURST};
use crate::port::RxQueue;
use crate::reroute::{DpEvent, Events};
use crate::table::{
    ClientRings, ClientSide, EthdevClient, FwdTable, InlineClient, InlineMode, QueueEntry, VnicSlot,
};
use crate::txpath::forward_tx;
use crate::vhost::VhostQueue;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Idle back-off, so a poller can share a CPU: it yields the CPU (`sched_yield`: whoever shares
/// it, a client say, runs at once) at every pass in which a client has frames waiting and at
/// every empty loop after `spin` of them, and once nothing has moved for 1 ms
/// (`SLEEP_AFTER_US`) it sleeps 1, 2, 4 … up to `max_sleep_us` µs per empty loop.
/// `max_sleep_us == 0` disables it (production default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleBackoff {
    pub spin: u32,
    pub max_sleep_us: u32,
}

impl IdleBackoff {
    /// Pure busy polling.
    pub const OFF: IdleBackoff = IdleBackoff {
        spin: 0,
        max_sleep_us: 0,
    };
    /// Sleep after `spin` empty loops, up to `max_sleep_us`.
    pub fn new(spin: u32, max_sleep_us: u32) -> Self {
        IdleBackoff { spin, max_sleep_us }
    }
}

/// How the poll loop's thread is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// On an EAL worker lcore (`rte_eal_remote_launch`); the EAL pinned it to its CPU.
    Lcore(u32),
    /// On a new thread pinned to this CPU and registered with `rte_thread_register` (so it gets a
    /// mempool cache).
    Thread(u32),
}

impl Launch {
    /// The CPU/lcore number.
    pub fn core(&self) -> u32 {
        match *self {
            Launch::Lcore(c) | Launch::Thread(c) => c,
        }
    }
}

/// Shared between the control thread and one data core. Each field says who writes it.
struct Shared {
    /// control: wo (publish), data: ro.
    table: AtomicPtr<FwdTable>,
    /// data: wo (generation adopted; u64::MAX once exited), control: ro.
    adopted: AtomicU64,
    /// control: wo, data: ro.
    stop: AtomicBool,
    /// data: wo, control: ro.
    core: CoreCounters,
    /// data: wo, control: ro; indexed by VnicSlot.
    vnics: Box<[VnicCounters]>,
    /// Set before launch, read-only after.
    idle: IdleBackoff,
    /// data: wo (+1 at the end of every pass, u64::MAX once exited), vhost callbacks: ro (a
    /// device's memory may go once every core passed after its gate closed).
    passes: Arc<AtomicU64>,
    /// data: push, control: pop.
    events: Events,
}

enum Handle {
    Lcore(u32),
    Thread(std::thread::JoinHandle<()>),
    Done,
}

/// A running data core. Dropping it stops and joins the loop.
pub struct Worker {
    shared: Arc<Shared>,
    handle: Handle,
    launch: Launch,
    current: *mut FwdTable,
    /// Tables unpublished but not yet acknowledged (freed at the next successful publish/stop).
    retired: Vec<*mut FwdTable>,
    next_generation: u64,
    /// Bound on how long publish waits for the quiescent point.
    pub grace_timeout: Duration,
}

// SAFETY: the raw table pointers are owned boxes; Worker is used from the control thread only.
unsafe impl Send for Worker {}

extern "C" fn lcore_main(arg: *mut c_void) -> c_int {
    // SAFETY: arg is the Arc<Shared> leaked by Worker::launch for this call.
    let shared = unsafe { Arc::from_raw(arg as *const Shared) };
    run(&shared);
    0
}

impl Worker {
    /// Start a poll loop on `launch` with an empty table and `max_vnics` counter slots.
    pub fn launch(launch: Launch, max_vnics: u32, idle: IdleBackoff) -> Result<Worker> {
        let first = Box::into_raw(Box::new(FwdTable::default()));
        let vnics: Box<[VnicCounters]> = (0..max_vnics).map(|_| VnicCounters::default()).collect();
        let shared = Arc::new(Shared {
            table: AtomicPtr::new(first),
            adopted: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            core: CoreCounters::default(),
            vnics,
            idle,
            passes: Arc::new(AtomicU64::new(0)),
            events: Events::new(),
        });
        crate::vhost::register_core(&shared.passes);
        let handle = match launch {
            Launch::Lcore(lcore) => {
                let arg = Arc::into_raw(shared.clone()) as *mut c_void;
                // SAFETY: lcore_main takes back the Arc; the lcore must be an idle worker lcore.
                let ret = unsafe { dpdk_sys::rte_eal_remote_launch(Some(lcore_main), arg, lcore) };
                if ret < 0 {
                    // SAFETY: not launched, so the leaked Arc is still ours to reclaim.
                    drop(unsafe { Arc::from_raw(arg as *const Shared) });
                    // SAFETY: the table was never seen by a data core.
                    drop(unsafe { Box::from_raw(first) });
                    return Err(Error::from_ret(
                        "rte_eal_remote_launch",
                        format!("lcore {lcore}"),
                        ret,
                    ));
                }
                Handle::Lcore(lcore)
            }
            Launch::Thread(cpu) => {
                let s = shared.clone();
                let (tx, rx) = std::sync::mpsc::channel::<Result<()>>();
                let h = std::thread::Builder::new()
                    .name(format!("vnic-dp{cpu}"))
                    .spawn(move || {
                        if !core_affinity::set_for_current(core_affinity::CoreId {
                            id: cpu as usize,
                        }) {
                            let _ = tx.send(Err(Error::Invalid {
                                op: "sched_setaffinity",
                                why: format!("cannot pin data core thread to cpu {cpu}"),
                            }));
                            return;
                        }
                        // SAFETY: registers this thread as an EAL non-EAL lcore (gets an lcore id
                        // and mempool cache); unregistered below before the thread exits.
                        if unsafe { dpdk_sys::rte_thread_register() } < 0 {
                            let _ = tx.send(Err(Error::from_errno(
                                "rte_thread_register",
                                format!("cpu {cpu}"),
                            )));
                            return;
                        }
                        let _ = tx.send(Ok(()));
                        run(&s);
                        // SAFETY: registered above.
                        unsafe { dpdk_sys::rte_thread_unregister() };
                    })
                    .map_err(|e| Error::Invalid {
                        op: "thread spawn",
                        why: e.to_string(),
                    })?;
                match rx.recv() {
                    Ok(Ok(())) => Handle::Thread(h),
                    Ok(Err(e)) => {
                        let _ = h.join();
                        // SAFETY: the thread never ran the loop.
                        drop(unsafe { Box::from_raw(first) });
                        return Err(e);
                    }
                    Err(_) => {
                        let _ = h.join();
                        return Err(Error::Invalid {
                            op: "thread spawn",
                            why: "data core thread died at start".into(),
                        });
                    }
                }
            }
        };
        Ok(Worker {
            shared,
            handle,
            launch,
            current: first,
            retired: Vec::new(),
            next_generation: 1,
            grace_timeout: Duration::from_secs(2),
        })
    }

    /// Where this worker runs.
    pub fn launch_kind(&self) -> Launch {
        self.launch
    }

    /// Publish a new table and wait for the data core to adopt it; the old table is then freed
    /// here, on the control thread. Returns the new generation.
    pub fn publish(&mut self, mut table: FwdTable) -> Result<u64> {
        if matches!(self.handle, Handle::Done) {
            // No loop will ever adopt it: refuse rather than report a table nobody runs.
            return Err(Error::Invalid {
                op: "publish",
                why: format!("the data core on {} has stopped", self.launch.core()),
            });
        }
        let gen = self.next_generation;
        self.next_generation += 1;
        table.generation = gen;
        if let Some(c) = table
            .slots()
            .find(|s| s.0 as usize >= self.shared.vnics.len())
        {
            return Err(Error::Invalid {
                op: "publish",
                why: format!(
                    "vNIC slot {} beyond the {} counter slots",
                    c.0,
                    self.shared.vnics.len()
                ),
            });
        }
        let new = Box::into_raw(Box::new(table));
        let old = self.shared.table.swap(new, Ordering::AcqRel);
        debug_assert_eq!(old, self.current);
        self.current = new;
        self.retired.push(old);
        self.wait_adopted(gen)?;
        self.reclaim();
        Ok(gen)
    }

    fn wait_adopted(&self, gen: u64) -> Result<()> {
        let start = Instant::now();
        let mut spins = 0u32;
        while self.shared.adopted.load(Ordering::Acquire) < gen {
            if start.elapsed() > self.grace_timeout {
                return Err(Error::Timeout {
                    what: "the data core to adopt a new forwarding table",
                    ms: self.grace_timeout.as_millis() as u64,
                });
            }
            spins += 1;
            if spins < 1000 {
                std::hint::spin_loop();
            } else {
                // The core may be in an idle back-off sleep or sharing our CPU: yield.
                std::thread::sleep(Duration::from_micros(20));
            }
        }
        Ok(())
    }

    fn reclaim(&mut self) {
        for t in self.retired.drain(..) {
            // SAFETY: every retired table is older than the generation the core acknowledged,
            // and the core never goes back to an older pointer.
            drop(unsafe { Box::from_raw(t) });
        }
    }

    /// The generation the data core currently runs (u64::MAX once it exited).
    pub fn adopted_generation(&self) -> u64 {
        self.shared.adopted.load(Ordering::Acquire)
    }

    /// Counters of a vNIC slot on this core.
    pub fn vnic_stats(&self, slot: VnicSlot) -> VnicStats {
        self.shared
            .vnics
            .get(slot.0 as usize)
            .map(VnicCounters::snapshot)
            .unwrap_or_default()
    }

    /// Events the data core queued since the last call, oldest first, and how many did not fit
    /// since the start.
    pub fn take_events(&self) -> (Vec<DpEvent>, u64) {
        let mut v = Vec::new();
        while let Some(e) = self.shared.events.q.pop() {
            v.push(e);
        }
        (v, self.shared.events.dropped.load(Ordering::Relaxed))
    }

    /// The core's own counters.
    pub fn core_stats(&self) -> CoreStats {
        self.shared.core.snapshot()
    }

    /// Stop the loop and join it, then free the tables.
    pub fn stop(&mut self) {
        if matches!(self.handle, Handle::Done) {
            return;
        }
        self.shared.stop.store(true, Ordering::Release);
        match std::mem::replace(&mut self.handle, Handle::Done) {
            Handle::Lcore(l) => {
                // SAFETY: waits for the function launched on lcore l to return.
                unsafe { dpdk_sys::rte_eal_wait_lcore(l) };
            }
            Handle::Thread(h) => {
                let _ = h.join();
            }
            Handle::Done => {}
        }
        self.reclaim();
        // SAFETY: the loop exited, so nothing reads the current table any more.
        drop(unsafe { Box::from_raw(self.current) });
        self.current = std::ptr::null_mut();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

#[inline(always)]
fn ring_dequeue(r: *mut dpdk_sys::rte_ring, b: &mut Burst) -> usize {
    // SAFETY: r is a live SC ring; this core is its only consumer; we own what we dequeue.
    let n =
        unsafe { crate::spsc::dequeue(r, b.ptrs.as_mut_ptr(), crate::mbuf::BURST as u32) } as usize;
    b.len = n;
    n
}

/// VF rx burst → client side; returns packets moved. Sets `behind` when the client has frames
/// waiting that it has not taken yet (a guest: fewer rx buffers posted than a burst), i.e. when
/// the client may be waiting for this core's CPU.
#[inline(always)]
fn forward_rx(q: &QueueEntry, c: &VnicCounters, b: &mut Burst, behind: &mut bool) -> u64 {
    let mut m = rx_to_client(q, q.rx, c, b, behind);
    for &rx in &q.also_rx {
        m += rx_to_client(q, rx, c, b, behind);
    }
    m
}

/// One VF rx queue → the entry's client side (matched once per burst).
#[inline(always)]
fn rx_to_client(
    q: &QueueEntry,
    rx: RxQueue,
    c: &VnicCounters,
    b: &mut Burst,
    behind: &mut bool,
) -> u64 {
    match &q.client {
        ClientSide::Rings(r) => rx_one(r, rx, c, behind),
        ClientSide::Vhost(v) => rx_vhost(v, rx, c, b, behind),
        ClientSide::Ethdev(e) => rx_ethdev(e, rx, c, b),
    }
}

/// Counters of one burst handed to the client: `sent` taken, `dropped` not.
#[inline(always)]
fn count_rx(c: &VnicCounters, sent: usize, dropped: usize, bytes: u64) {
    bump(&c.rx_packets, sent as u64);
    bump(&c.rx_bytes, bytes);
    if dropped > 0 {
        bump(&c.rx_drops, dropped as u64);
    }
}

/// VF rx → the guest's rx vring (copied into guest memory; the mbufs go back to the pool).
/// Back-pressure: take from the VF only as many frames as the guest has buffers posted.
#[inline(always)]
fn rx_vhost(
    v: &VhostQueue,
    rx: RxQueue,
    c: &VnicCounters,
    b: &mut Burst,
    behind: &mut bool,
) -> u64 {
    if !v.gate.is_open() {
        return 0;
    }
    // SAFETY: the gate is open, so the device and its memory are mapped until this pass ends
    // (destroy_device waits for it); this core is the vring's only user.
    let room = unsafe { dpdk_sys::rte_vhost_avail_entries(v.vid, v.to_guest) } as usize;
    *behind |= room < crate::mbuf::BURST;
    if room == 0 {
        return 0;
    }
    let n = rx.rx_burst_max(b, room);
    if n == 0 {
        return 0;
    }
    let bytes = sum_bytes(b);
    // SAFETY: as above; ptrs[..n] are our mbufs, which the library only reads (copies).
    let sent = unsafe {
        dpdk_sys::rte_vhost_enqueue_burst(v.vid, v.to_guest, b.ptrs.as_mut_ptr(), n as u16)
    } as usize;
    b.free_all();
    count_rx(c, sent, n - sent, bytes);
    n as u64
}

/// VF rx → the client port's tx queue. net_memif cannot report its room in advance: what its
/// ring does not take is dropped and counted (`rx_drops`).
#[inline(always)]
fn rx_ethdev(e: &EthdevClient, rx: RxQueue, c: &VnicCounters, b: &mut Burst) -> u64 {
    let n = rx.rx_burst(b);
    if n == 0 {
        return 0;
    }
    let bytes = sum_bytes(b);
    let (sent, dropped) = e.tx.tx_burst(b);
    count_rx(c, sent, dropped, bytes);
    n as u64
}

#[inline(always)]
fn rx_one(q: &ClientRings, rx: RxQueue, c: &VnicCounters, behind: &mut bool) -> u64 {
    // Back-pressure: take from the VF only what the client's ring can hold. Frames for a client
    // that does not keep up stay in the VF's queue and the device drops them when it is full
    // (its rx-missed counter), at no cost to this core or to the other vNICs it serves; and a
    // core whose clients are all full counts as idle, so one that shares a CPU with its clients
    // yields to them. This core is the ring's only producer, so the room can only grow.
    // The device writes straight into the ring's free slots (no copy through a burst array);
    // where the slots wrap at the array's end this burst is shorter, the rest comes next pass.
    // SAFETY: the ring is live (kept alive by the table); this core is its only producer.
    let (slots, n, room) = unsafe { crate::spsc::reserve(q.to_client_raw, BURST as u32) };
    // Less room than the ring holds: frames wait for the client.
    *behind |= room < q.to_client_cap;
    if n == 0 {
        return 0;
    }
    // SAFETY: the n slots are reserved for us until published: the device may write them all.
    let got = unsafe { rx.rx_into(slots, n as u16) } as usize;
    if got == 0 {
        return 0;
    }
    // SAFETY: the device filled slots[..got] with mbufs that are ours until published.
    let bytes = unsafe { sum_bytes_at(slots, got) };
    // SAFETY: got ≤ reserved, and those slots hold valid mbufs.
    unsafe { crate::spsc::publish(q.to_client_raw, got as u32) };
    count_rx(c, got, 0, bytes);
    got as u64
}

/// An in-core client's pass: its rx ring straight into its tx ring (one copy of the pointers,
/// none through a burst array). What the tx ring does not take is dropped (`client_drops`).
#[inline(always)]
fn serve_client(cl: &InlineClient, c: &VnicCounters) -> u64 {
    // SAFETY: live SC ring; this core is its only consumer; the entries stay ours until
    // committed below.
    let (slots, n) = unsafe { crate::spsc::peek_in_place(cl.rx_raw, BURST as u32) };
    if n == 0 {
        return 0;
    }
    if cl.mode == InlineMode::Reflect {
        for i in 0..n as usize {
            // SAFETY: slots[..n] are mbufs we own (data at buf_addr + data_off); a frame
            // shorter than 12 bytes is left alone.
            unsafe {
                let p = *slots.add(i);
                if (*p).data_len >= 12 {
                    let d = ((*p).buf_addr as *mut u8).add((*p).data_off as usize) as *mut [u8; 6];
                    *d = *d.add(1);
                    *d.add(1) = cl.mac;
                }
            }
        }
    }
    // SAFETY: live SP ring, this core its only producer; slots[..n] are readable.
    let sent = unsafe { crate::spsc::enqueue(cl.tx_raw, slots, n) };
    if sent < n {
        // SAFETY: slots[sent..n] are still ours (the tx ring did not take them); we drop them.
        unsafe { free_at(slots.add(sent as usize), (n - sent) as usize) };
        bump(&c.client_drops, (n - sent) as u64);
    }
    // SAFETY: all n peeked entries were handed on or freed.
    unsafe { crate::spsc::commit(cl.rx_raw, n) };
    n as u64
}

#[cold]
fn idle_yield(c: &CoreCounters) {
    bump(&c.yields, 1);
    std::thread::yield_now();
}

/// A backing-off core's sleeps are its clients' latency: Linux stretches every sleep of a
/// normal thread by up to its timer slack (50 µs by default), so a 1 µs back-off would cost a
/// frame arriving meanwhile 50 µs. One nanosecond of slack makes the sleep what was asked.
fn exact_sleeps() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer and changes only the calling thread's slack.
    let r = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    if r != 0 {
        tracing::warn!("data core: PR_SET_TIMERSLACK failed: idle sleeps keep the default slack");
    }
}

#[cold]
fn idle_sleep(c: &CoreCounters, us: u32) {
    bump(&c.sleeps, 1);
    std::thread::sleep(Duration::from_micros(us as u64));
}

/// With idle back-off, how long nothing must have moved before the core sleeps rather than
/// yields. A frame arriving during a sleep waits out the rest of it (p50 25 µs at 20–50 kpps
/// with a 50 µs ceiling), while yielding costs nothing that the clients sharing the CPU would
/// not spin away anyway; a sleep only pays off when the vNICs are really quiet.
const SLEEP_AFTER_US: u64 = 1000;

fn run(s: &Shared) {
    if s.idle.max_sleep_us > 0 {
        exact_sleeps();
    }
    let sleep_after = crate::eal::tsc_hz() * SLEEP_AFTER_US / 1_000_000;
    let mut last_busy = rdtsc();
    let mut cur: *mut FwdTable = std::ptr::null_mut();
    let mut b = Burst::default();
    let mut idle_streak: u32 = 0;
    let mut sleep_us: u32 = 1;
    let mut last = rdtsc();
    let vnics = &s.vnics[..];
    loop {
        // Burst boundary: adopt a new table if one was published, and acknowledge it.
        let p = s.table.load(Ordering::Acquire);
        if p != cur {
            cur = p;
            // SAFETY: the control thread keeps a published table alive until we acknowledge a
            // later generation.
            let gen = unsafe { (*cur).generation };
            s.adopted.store(gen, Ordering::Release);
            bump(&s.core.table_swaps, 1);
        }
        if s.stop.load(Ordering::Relaxed) {
            break;
        }
        // SAFETY: as above; `cur` stays valid for this whole iteration.
        let t = unsafe { &*cur };
        let mut moved = 0u64;
        let mut bursts = 0u64;
        let mut behind = false;
        // Receive for every queue, let in-core clients run, then transmit: a frame an in-core
        // client answers leaves in the same pass. Slots were bounds-checked at publish.
        for q in &t.queues {
            let m = forward_rx(q, &vnics[q.slot.0 as usize], &mut b, &mut behind);
            bursts += (m > 0) as u64;
            moved += m;
        }
        for cl in &t.clients {
            serve_client(cl, &vnics[cl.slot.0 as usize]);
        }
        for q in &t.queues {
            let m = forward_tx(q, &vnics[q.slot.0 as usize], &mut b, &s.events, last);
            bursts += (m > 0) as u64;
            moved += m;
        }
        for q in &t.drain {
            let m = forward_tx(q, &vnics[q.slot.0 as usize], &mut b, &s.events, last);
            bursts += (m > 0) as u64;
            moved += m;
        }
        for a in &t.announce {
            if ring_dequeue(a.ring_raw, &mut b) > 0 {
                a.tx.tx_burst(&mut b);
            }
        }
        let now = rdtsc();
        bump(&s.core.loops, 1);
        if moved > 0 {
            bump(&s.core.busy_loops, 1);
            bump(&s.core.packets, moved);
            bump(&s.core.bursts, bursts);
            bump(&s.core.busy_cycles, now.wrapping_sub(last));
        } else {
            bump(&s.core.idle_cycles, now.wrapping_sub(last));
        }
        if s.idle.max_sleep_us > 0 {
            if moved > 0 {
                idle_streak = 0;
                sleep_us = 1;
                last_busy = now;
            } else {
                idle_streak = idle_streak.saturating_add(1);
            }
            if behind {
                // A core that backs off shares its CPU (with its clients, on small hosts): a
                // client with frames waiting may be waiting for this CPU, so offer it at the
                // end of every such pass, busy or not, rather than when the scheduler's slice
                // runs out or after an idle spin. Measured p50 on pvp at 0.25 Mpps: 143 µs when
                // it waited for a burst to queue first, 27 µs when it yielded at most every
                // 20 µs, 7 µs at every busy pass; at 20 kpps 23 µs until idle passes yielded
                // at once too.
                idle_yield(&s.core);
            } else if idle_streak > s.idle.spin {
                if now.wrapping_sub(last_busy) > sleep_after {
                    idle_sleep(&s.core, sleep_us);
                    sleep_us = (sleep_us * 2).min(s.idle.max_sleep_us);
                } else {
                    idle_yield(&s.core);
                }
            }
        }
        last = now;
        // Single writer: a plain store, not a locked read-modify-write, every pass.
        s.passes.store(
            s.passes.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Release,
        );
    }
    s.adopted.store(u64::MAX, Ordering::Release);
    s.passes.store(u64::MAX, Ordering::Release);
}
