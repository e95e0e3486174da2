//! Per-core counters. Each block is written by exactly one data core (plain load + store, no
//! atomic read-modify-write) and read by the control thread with relaxed loads.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Add to a single-writer counter: a relaxed load and store, cheaper than `fetch_add`.
#[inline(always)]
pub(crate) fn bump(c: &AtomicU64, v: u64) {
    c.store(c.load(Relaxed).wrapping_add(v), Relaxed);
}

/// One vNIC's counters on one data core; one cache line, so cores never share a line.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct VnicCounters {
    /// Packets moved VF → client rx ring.
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// Packets received from the VF but dropped because the client rx ring was full.
    pub rx_drops: AtomicU64,
    /// Packets moved client tx ring → VF.
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Packets taken from the client tx ring but refused by the VF tx queue (freed).
    pub tx_drops: AtomicU64,
    /// Packets an in-core client could not send back (its tx ring was full).
    pub client_drops: AtomicU64,
    /// Client tx frames dropped because their source MAC was not the vNIC's (anti-spoofing).
    pub spoof_drops: AtomicU64,
}

/// Plain snapshot of [`VnicCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct VnicStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_drops: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_drops: u64,
    pub client_drops: u64,
    pub spoof_drops: u64,
}

impl VnicCounters {
    /// Read all counters.
    pub fn snapshot(&self) -> VnicStats {
        VnicStats {
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            rx_drops: self.rx_drops.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            tx_drops: self.tx_drops.load(Relaxed),
            client_drops: self.client_drops.load(Relaxed),
            spoof_drops: self.spoof_drops.load(Relaxed),
        }
    }
}

impl std::ops::AddAssign for VnicStats {
    fn add_assign(&mut self, o: VnicStats) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.rx_drops += o.rx_drops;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.tx_drops += o.tx_drops;
        self.client_drops += o.client_drops;
        self.spoof_drops += o.spoof_drops;
    }
}

impl VnicStats {
    /// `self - base`, field by field (counters only grow, so this never goes below zero for a
    /// base taken earlier from the same slot).
    pub fn since(&self, base: &VnicStats) -> VnicStats {
        VnicStats {
            rx_packets: self.rx_packets.saturating_sub(base.rx_packets),
            rx_bytes: self.rx_bytes.saturating_sub(base.rx_bytes),
            rx_drops: self.rx_drops.saturating_sub(base.rx_drops),
            tx_packets: self.tx_packets.saturating_sub(base.tx_packets),
            tx_bytes: self.tx_bytes.saturating_sub(base.tx_bytes),
            tx_drops: self.tx_drops.saturating_sub(base.tx_drops),
            client_drops: self.client_drops.saturating_sub(base.client_drops),
            spoof_drops: self.spoof_drops.saturating_sub(base.spoof_drops),
        }
    }
}

/// A data core's own counters.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct CoreCounters {
    /// Loop iterations.
    pub loops: AtomicU64,
    /// Iterations that moved at least one packet.
    pub busy_loops: AtomicU64,
    /// Packets moved (every hop: VF→ring and ring→VF each count once).
    pub packets: AtomicU64,
    /// Bursts that carried packets.
    pub bursts: AtomicU64,
    /// TSC cycles spent in busy iterations.
    pub busy_cycles: AtomicU64,
    /// TSC cycles spent in idle iterations (including back-off sleeps).
    pub idle_cycles: AtomicU64,
    /// Forwarding tables adopted.
    pub table_swaps: AtomicU64,
    /// Idle back-off: CPU offered to whoever shares it (`sched_yield`).
    pub yields: AtomicU64,
    /// Idle back-off: sleeps (only after nothing moved for a while).
    pub sleeps: AtomicU64,
}

/// Plain snapshot of [`CoreCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CoreStats {
    pub loops: u64,
    pub busy_loops: u64,
    pub packets: u64,
    pub bursts: u64,
    pub busy_cycles: u64,
    pub idle_cycles: u64,
    pub table_swaps: u64,
    pub yields: u64,
    pub sleeps: u64,
}

impl CoreCounters {
    /// Read all counters.
    pub fn snapshot(&self) -> CoreStats {
        CoreStats {
            loops: self.loops.load(Relaxed),
            busy_loops: self.busy_loops.load(Relaxed),
            packets: self.packets.load(Relaxed),
            bursts: self.bursts.load(Relaxed),
            busy_cycles: self.busy_cycles.load(Relaxed),
            idle_cycles: self.idle_cycles.load(Relaxed),
            table_swaps: self.table_swaps.load(Relaxed),
            yields: self.yields.load(Relaxed),
            sleeps: self.sleeps.load(Relaxed),
        }
    }
}

const _: () = assert!(std::mem::size_of::<VnicCounters>() == 64);
// Two lines: the back-off counters are written only by a core that backs off.
const _: () = assert!(std::mem::size_of::<CoreCounters>() == 128);
