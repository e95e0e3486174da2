//! Fast reroute: a backing device's "down" flag, written by whoever sees the failure first (the
//! link-state or removal interrupt callback on DPDK's interrupt thread, the data core when the
//! device's tx queue refuses everything, the control thread's health check), and read by the
//! data core at every burst, which then transmits on the queue entry's pre-computed backup at
//! once and tells the control thread through its event ring. The control thread makes the
//! switch official afterwards (arbiter state, new table, announcements, client push), so the
//! outage does not wait for it.
use crate::eal::rdtsc;
use crate::port::PortId;
use crossbeam::utils::CachePadded;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// Who saw a device fail first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Detector {
    /// The PMD's link-state-change interrupt (`RTE_ETH_EVENT_INTR_LSC`).
    LinkEvent = 1,
    /// The device-removal interrupt (`RTE_ETH_EVENT_INTR_RMV`).
    Removal = 2,
    /// The data core: the tx queue refused every frame for the refuse window.
    DataCore = 3,
    /// The control thread's health check (link polling, tx stall).
    HealthCheck = 4,
    /// The data core: the tx queue's consumer stopped taking frames ([`crate::TxWatch`]).
    PeerStalled = 5,
}

impl Detector {
    fn from_u8(v: u8) -> Option<Detector> {
        Some(match v {
            1 => Detector::LinkEvent,
            2 => Detector::Removal,
            3 => Detector::DataCore,
            4 => Detector::HealthCheck,
            5 => Detector::PeerStalled,
            _ => return None,
        })
    }
    /// The name status and logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::LinkEvent => "link interrupt",
            Detector::Removal => "removal interrupt",
            Detector::DataCore => "data core (tx refused)",
            Detector::HealthCheck => "health check",
            Detector::PeerStalled => "data core (peer stopped draining)",
        }
    }
}

/// Written once per failure (by the first detector) and once per recovery (by the control
/// thread): the line the data core reads at every burst.
#[derive(Debug, Default)]
struct Down {
    /// TSC when the device was marked down; 0 while up.
    at: AtomicU64,
    by: AtomicU8,
}

/// The data core's own bookkeeping for the device (it alone writes it; the control thread reads).
#[derive(Debug, Default)]
struct Watch {
    /// TSC of the first burst of the current run of fully refused bursts; 0 when the last
    /// attempt was accepted.
    refusing_since: AtomicU64,
    /// TSC of the latest fully refused burst (a stall is a run of them, not a stale start).
    last_refused: AtomicU64,
    /// TSC when the data core first turned a burst to the backup instead; 0 if it has not.
    rerouted_at: AtomicU64,
    /// TSC when the backup first accepted a frame after that; 0 until it has.
    first_tx_at: AtomicU64,
}

/// A backing device's health as the data path sees it. Shared by the port's interrupt
/// callbacks, the tables that name the device and the control thread.
#[derive(Debug)]
pub struct DeviceHealth {
    port: PortId,
    down: CachePadded<Down>,
    watch: CachePadded<Watch>,
    removed: AtomicBool,
    /// TSC ticks between two refused bursts after which they belong to different runs (see
    /// [`STALE_RUN_MS`]); set at creation, read-only after.
    stale_gap: u64,
}

/// Two refused bursts more than this apart are not one stall: the data core retries a refused
/// burst at every pass (µs apart), so a longer gap means it had nothing for the device in
/// between (standby, a quiet client, traffic on another device). Without it a refusal left
/// from start-up or from an earlier switch made the next single refused burst, seconds later,
/// look like a stall as long as all that time, and a healthy device was failed.
pub const STALE_RUN_MS: u64 = 10;

/// A copy of a device's flag, for the control thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HealthSnapshot {
    /// TSC when marked down (0: up).
    pub down_at: u64,
    pub by: Option<Detector>,
    /// TSC since which every tx burst was refused (0: the last one was accepted).
    pub refusing_since: u64,
    /// TSC of the latest refused burst of that run.
    pub last_refused: u64,
    /// TSC when the data core moved transmission to the backup (0: it has not).
    pub rerouted_at: u64,
    /// TSC of the first frame the backup accepted after that (0: none yet).
    pub first_tx_at: u64,
    /// The removal interrupt fired (the device is gone, not just down).
    pub removed: bool,
}

impl HealthSnapshot {
    /// How long, in TSC ticks, the current run of refused bursts has lasted (0: none).
    pub fn refused_for(&self) -> u64 {
        if self.refusing_since == 0 {
            0
        } else {
            self.last_refused.saturating_sub(self.refusing_since)
        }
    }
}

impl DeviceHealth {
    /// Up, for `port`.
    pub fn new(port: PortId) -> Arc<DeviceHealth> {
        Arc::new(DeviceHealth {
            port,
            down: CachePadded::new(Down::default()),
            watch: CachePadded::new(Watch::default()),
            removed: AtomicBool::new(false),
            stale_gap: crate::eal::tsc_hz() * STALE_RUN_MS / 1000,
        })
    }
    /// The device's port.
    pub fn port(&self) -> PortId {
        self.port
    }
    /// Mark the device down. Only the first detector of a failure is recorded; returns whether
    /// this call was it.
    pub fn mark_down(&self, by: Detector) -> bool {
        self.mark_down_at(by, rdtsc())
    }
    /// [`Self::mark_down`] for a failure seen at TSC `at` (a data core's stall verdict, made
    /// official later by the control thread).
    pub fn mark_down_at(&self, by: Detector, at: u64) -> bool {
        if self
            .down
            .at
            .compare_exchange(0, at.max(1), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.down.by.store(by as u8, Ordering::Release);
            true
        } else {
            false
        }
    }
    /// The device is healthy again (control thread, when it rejoins as standby or active).
    pub fn clear(&self) {
        self.watch.rerouted_at.store(0, Ordering::Relaxed);
        self.watch.first_tx_at.store(0, Ordering::Relaxed);
        self.watch.last_refused.store(0, Ordering::Relaxed);
        self.watch.refusing_since.store(0, Ordering::Relaxed);
        self.down.by.store(0, Ordering::Relaxed);
        self.down.at.store(0, Ordering::Release);
    }
    /// Whether it is marked down (one relaxed load: the data core's per-burst check).
    #[inline(always)]
    pub fn is_down(&self) -> bool {
        self.down.at.load(Ordering::Relaxed) != 0
    }
    /// A copy for the control thread.
    pub fn snapshot(&self) -> HealthSnapshot {
        HealthSnapshot {
            down_at: self.down.at.load(Ordering::Acquire),
            by: Detector::from_u8(self.down.by.load(Ordering::Acquire)),
            refusing_since: self.watch.refusing_since.load(Ordering::Relaxed),
            last_refused: self.watch.last_refused.load(Ordering::Relaxed),
            rerouted_at: self.watch.rerouted_at.load(Ordering::Relaxed),
            first_tx_at: self.watch.first_tx_at.load(Ordering::Relaxed),
            removed: self.removed.load(Ordering::Acquire),
        }
    }

    /// Data core: a burst of `n` frames met `sent` accepted at `now`. Marks the device down
    /// once it has refused everything for `window` TSC ticks (0: never). A congested device
    /// accepts some frames within any window; a dead one none.
    #[inline(always)]
    pub(crate) fn note_tx(&self, n: usize, sent: usize, now: u64, window: u64) {
        let since = self.watch.refusing_since.load(Ordering::Relaxed);
        if sent > 0 {
            if since != 0 {
                self.watch.refusing_since.store(0, Ordering::Relaxed);
            }
        } else if n > 0 {
            let last = self.watch.last_refused.load(Ordering::Relaxed);
            self.watch.last_refused.store(now, Ordering::Relaxed);
            if since == 0 || now.wrapping_sub(last) > self.stale_gap {
                self.watch
                    .refusing_since
                    .store(now.max(1), Ordering::Relaxed);
            } else if window > 0 && now.wrapping_sub(since) >= window && !self.is_down() {
                refused_too_long(self);
            }
        }
    }

    /// The removal interrupt: the device is gone.
    pub(crate) fn mark_removed(&self) {
        self.removed.store(true, Ordering::Release);
        self.mark_down(Detector::Removal);
    }

    /// Data core: whether this failure's transmission already moved to the backup.
    #[inline(always)]
    pub(crate) fn is_rerouted(&self) -> bool {
        self.watch.rerouted_at.load(Ordering::Relaxed) != 0
    }

    /// Data core: a tentative reroute ended (the consumer moves again), so the next one is
    /// recorded afresh.
    #[cold]
    pub(crate) fn reroute_ended(&self) {
        if !self.is_down() {
            self.watch.rerouted_at.store(0, Ordering::Relaxed);
            self.watch.first_tx_at.store(0, Ordering::Relaxed);
        }
    }

    /// Data core, on a burst turned to the backup (`sent` of it accepted): true the first time
    /// for this failure (the moment to tell the control thread).
    #[inline(always)]
    pub(crate) fn note_rerouted(&self, now: u64, sent: usize) -> bool {
        let first = self.watch.rerouted_at.load(Ordering::Relaxed) == 0;
        if first {
            self.watch.rerouted_at.store(now.max(1), Ordering::Relaxed);
        }
        if sent > 0 && self.watch.first_tx_at.load(Ordering::Relaxed) == 0 {
            self.watch
                .first_tx_at
                .store(rdtsc().max(1), Ordering::Relaxed);
        }
        first
    }
}

#[cold]
#[inline(never)]
fn refused_too_long(h: &DeviceHealth) {
    h.mark_down(Detector::DataCore);
}

/// What a data core tells the control thread (through its bounded event ring).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpEvent {
    /// Transmission of a vNIC queue moved from `from`'s port to the backup `to` at TSC `at`.
    Rerouted { from: PortId, to: PortId, at: u64 },
    /// The same, tentatively: `from`'s consumer stopped taking frames (its link reads up). The
    /// data core goes back to `from` by itself if the consumer moves again.
    Stalled { from: PortId, to: PortId, at: u64 },
}

/// A data core's events for the control thread (DESIGN §2): a bounded lock-free queue the core
/// pushes to without ever blocking or allocating; what does not fit is counted.
pub(crate) struct Events {
    pub(crate) q: crossbeam::queue::ArrayQueue<DpEvent>,
    pub(crate) dropped: AtomicU64,
}

impl Events {
    const DEPTH: usize = 1024;
    pub(crate) fn new() -> Events {
        Events {
            q: crossbeam::queue::ArrayQueue::new(Self::DEPTH),
            dropped: AtomicU64::new(0),
        }
    }
    #[cold]
    pub(crate) fn push(&self, e: DpEvent) {
        if self.q.push(e).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The entry's backup: the best operational standby's tx queue, pre-computed by the control
/// thread when it builds the table.
#[derive(Debug, Clone)]
pub struct Backup {
    pub(crate) tx: crate::port::TxQueue,
    pub(crate) health: Arc<DeviceHealth>,
}

impl Backup {
    /// Transmit on `tx` (its device's flag `health`) when the active device is down.
    pub fn new(tx: crate::port::TxQueue, health: Arc<DeviceHealth>) -> Self {
        Backup { tx, health }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(stale_gap: u64) -> DeviceHealth {
        DeviceHealth {
            port: PortId(0),
            down: CachePadded::new(Down::default()),
            watch: CachePadded::new(Watch::default()),
            removed: AtomicBool::new(false),
            stale_gap,
        }
    }

    #[test]
    fn a_refusal_long_ago_does_not_make_a_later_one_a_stall() {
        // Window 100 ticks, runs broken by gaps over 1000.
        let h = health(1000);
        h.note_tx(32, 0, 10, 100);
        // 4990 ticks later, one refused burst: a new run, not a stall of 4990.
        h.note_tx(32, 0, 5000, 100);
        assert!(!h.is_down());
        assert_eq!(h.snapshot().refusing_since, 5000);
        h.note_tx(32, 0, 5050, 100);
        assert!(!h.is_down(), "50 ticks of refusals is inside the window");
        assert_eq!(h.snapshot().refused_for(), 50);
        h.note_tx(32, 0, 5101, 100);
        assert!(
            h.is_down(),
            "101 ticks of refusals without a gap is a stall"
        );
        assert_eq!(h.snapshot().by, Some(Detector::DataCore));
    }

    #[test]
    fn an_accepted_burst_ends_a_run() {
        let h = health(1000);
        h.note_tx(32, 0, 10, 100);
        h.note_tx(32, 5, 60, 100);
        h.note_tx(32, 0, 120, 100);
        h.note_tx(32, 0, 200, 100);
        assert!(!h.is_down());
        assert_eq!(h.snapshot().refused_for(), 80);
    }
}
