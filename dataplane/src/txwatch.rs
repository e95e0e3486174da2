//! Tx progress of a device whose queue shows its consumer: a `net_memif` ring, whose peer's
//! index stops moving the moment the peer dies. A killed memif peer raises no interrupt and
//! its link reads down only once the kernel has torn the process down (20–30 ms here), while
//! its ring swallows every frame until full (1 024 slots: 10 ms at 100 kpps, all lost). With
//! this watch the data core sees frames waiting and the peer's index still for the refuse
//! window (`tx_refuse_us`) and transmits on the backup from then on.
//!
//! That reroute is tentative: a live peer that was merely off its CPU for a while (a
//! scheduler slice on a shared CPU is milliseconds) moves its index again, and the data core
//! goes back to the device by itself, having lost nothing and without a failover. The control
//! thread makes it a failure only when the link goes down or the stall outlasts `tx_stall_ms`,
//! dating the detection from the moment the data core saw it.
use crossbeam::utils::CachePadded;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The data core's own record of one tx queue's consumer (it alone writes it; the control
/// thread reads `stalled_since` and resets it when the device rejoins).
#[derive(Debug, Default)]
struct State {
    /// The peer's index at the last look, with `SEEN` set once there was one.
    last_peer: AtomicU32,
    /// TSC since which the index has not moved while frames waited.
    still_since: AtomicU64,
    /// Our own index then: a stall needs frames written since (for a server's S2C ring,
    /// "waiting" also counts buffers the client never handed over, which is no stall).
    own_at_still: AtomicU32,
    /// TSC when the data core concluded the consumer stopped; 0 while it is moving.
    stalled_since: AtomicU64,
}

const SEEN: u32 = 1 << 16;

impl State {
    /// One look at the consumer (`pending` frames written and not taken, `peer` its index,
    /// `own` ours; `None`: the ring cannot be read now, e.g. disconnected): stalled once frames
    /// waited, we wrote more, and its index stayed for `window` ticks, until it moves. An
    /// unreadable ring keeps the verdict: a disconnect is the control thread's to judge.
    fn look(&self, seen: Option<Seen>, now: u64, window: u64) -> Verdict {
        let stalled = self.stalled_since.load(Ordering::Relaxed);
        let Some(Seen { pending, peer, own }) = seen else {
            return if stalled != 0 {
                Verdict::Stalled
            } else {
                Verdict::Moving
            };
        };
        let peer = peer as u32 | SEEN;
        if pending == 0 || peer != self.last_peer.load(Ordering::Relaxed) {
            self.last_peer.store(peer, Ordering::Relaxed);
            self.still_since.store(now, Ordering::Relaxed);
            self.own_at_still.store(own as u32, Ordering::Relaxed);
            if stalled != 0 {
                self.stalled_since.store(0, Ordering::Relaxed);
                return Verdict::Resumed;
            }
            return Verdict::Moving;
        }
        if stalled != 0 {
            return Verdict::Stalled;
        }
        if own as u32 == self.own_at_still.load(Ordering::Relaxed) {
            // Nothing written since it last moved: the clock has not started.
            self.still_since.store(now, Ordering::Relaxed);
            return Verdict::Moving;
        }
        if now.wrapping_sub(self.still_since.load(Ordering::Relaxed)) >= window {
            self.stalled_since.store(now.max(1), Ordering::Relaxed);
            return Verdict::Stalled;
        }
        Verdict::Moving
    }
}

/// What the ring showed: frames written and not taken, the consumer's index, ours.
#[derive(Debug, Clone, Copy)]
struct Seen {
    pending: u16,
    peer: u16,
    own: u16,
}

/// What one look at a consumer found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Moving,
    /// It had stopped and moves again (this look ended the stall).
    Resumed,
    Stalled,
}

/// Where a tx queue's consumer shows its progress, and the data core's record of it.
#[derive(Debug)]
pub struct TxWatch {
    raw: dpdk_sys::vnic_memif_txw,
    state: CachePadded<State>,
}

// SAFETY: `raw` points into the port's private data (its queue and per-process region table),
// which live as long as the port; the port outlives every table that names this watch (tables
// go before ports are closed). Only the data core reads through it; `State` is atomics.
unsafe impl Send for TxWatch {}
// SAFETY: as above.
unsafe impl Sync for TxWatch {}

impl TxWatch {
    /// The watch of tx queue `queue` of a `net_memif` port (started: ethdev publishes its
    /// queues then). `None`
    /// for any other PMD, and for a memif whose private layout is not what this build expects
    /// (then the device keeps the refuse window only; logged).
    pub(crate) fn memif(port: u16, queue: u16) -> Option<TxWatch> {
        let mut raw = dpdk_sys::vnic_memif_txw::default();
        // SAFETY: plain queries on a valid port; `raw` is an out pointer.
        let ret = unsafe { dpdk_sys::vnic_memif_txw_init(port, queue, &mut raw) };
        match ret {
            0 => Some(TxWatch {
                raw,
                state: CachePadded::new(State::default()),
            }),
            r if r == -libc::ENOTSUP => None,
            r => {
                tracing::warn!(
                    port,
                    queue,
                    "net_memif's private layout is not the one this build knows (error {r}): \
                     a dead peer is seen only once its ring is full"
                );
                None
            }
        }
    }

    /// Data core, once per pass: whether the consumer has stopped (frames waiting, its index
    /// still for `window` ticks).
    #[inline(always)]
    pub(crate) fn look(&self, now: u64, window: u64) -> Verdict {
        let (mut peer, mut own) = (0u16, 0u16);
        // SAFETY: `raw` was filled by vnic_memif_txw_init for this live port (see the Send
        // impl); the read checks the PMD's connected flag before it touches the ring.
        let n = unsafe { dpdk_sys::vnic_memif_txw_read(&self.raw, &mut peer, &mut own) };
        let seen = u16::try_from(n)
            .ok()
            .map(|pending| Seen { pending, peer, own });
        self.state.look(seen, now, window)
    }

    /// TSC when the data core concluded the consumer stopped (0: it is moving).
    pub fn stalled_since(&self) -> u64 {
        self.state.stalled_since.load(Ordering::Relaxed)
    }

    /// Forget a stall (control thread, when the device rejoins; no table names it then).
    pub fn reset(&self) {
        self.state.stalled_since.store(0, Ordering::Relaxed);
        self.state.last_peer.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::{Seen, State, Verdict::*};

    /// `pending` frames waiting behind consumer index `peer`; our index `own`.
    fn at(pending: u16, peer: u16, own: u16) -> Option<Seen> {
        Some(Seen { pending, peer, own })
    }

    #[test]
    fn a_consumer_that_keeps_taking_never_stalls() {
        let s = State::default();
        for t in 0..100u64 {
            // 10 frames waiting at every look, but the index moves every 5 looks (50 ticks).
            let own = t as u16;
            assert_eq!(Moving, s.look(at(10, (t / 5) as u16, own), t * 10, 100));
        }
    }

    #[test]
    fn frames_waiting_and_an_index_still_for_the_window_is_a_stall_until_it_moves() {
        let s = State::default();
        assert_eq!(Moving, s.look(at(0, 7, 7), 0, 100), "nothing waiting");
        // The clock runs from the last look with nothing waiting.
        assert_eq!(Moving, s.look(at(3, 7, 10), 40, 100));
        assert_eq!(Moving, s.look(at(3, 7, 10), 99, 100));
        assert_eq!(
            Stalled,
            s.look(at(5, 7, 12), 100, 100),
            "100 ticks still with frames waiting"
        );
        assert_eq!(
            s.stalled_since.load(std::sync::atomic::Ordering::Relaxed),
            100
        );
        assert_eq!(
            Stalled,
            s.look(None, 500, 100),
            "unreadable (disconnected) keeps the verdict"
        );
        assert_eq!(Stalled, s.look(at(5, 7, 12), 600, 100));
        assert_eq!(
            Resumed,
            s.look(at(4, 8, 12), 610, 100),
            "it moved: back to the device"
        );
        assert_eq!(
            s.stalled_since.load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        assert_eq!(
            Moving,
            s.look(None, 900, 100),
            "unreadable with no verdict is not a stall"
        );
    }

    #[test]
    fn an_idle_queue_starts_its_clock_when_frames_go_in() {
        let s = State::default();
        assert_eq!(Moving, s.look(at(0, 1, 1), 0, 100));
        // A long quiet time, then frames wait behind an index that was last seen long ago.
        assert_eq!(Moving, s.look(at(0, 1, 1), 10_000, 100));
        assert_eq!(Moving, s.look(at(2, 1, 3), 10_050, 100));
        assert_eq!(Stalled, s.look(at(2, 1, 3), 10_100, 100));
    }

    #[test]
    fn slots_a_server_never_filled_are_not_frames_waiting() {
        // A server's S2C ring: the client handed over only part of the ring, so "waiting" reads
        // non-zero while nothing was sent. Without a frame written since the index last moved
        // it is no stall, however long it lasts.
        let s = State::default();
        assert_eq!(Moving, s.look(at(24, 1000, 976), 0, 100));
        assert_eq!(Moving, s.look(at(24, 1000, 976), 5_000, 100));
        // A frame goes out and the client takes nothing for the window: that is one.
        assert_eq!(Moving, s.look(at(25, 1000, 977), 5_010, 100));
        assert_eq!(Stalled, s.look(at(25, 1000, 977), 5_100, 100));
    }
}
