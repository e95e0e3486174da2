//! The vNIC model: identity, backing devices and their states, the client's attachment. No
//! sockets, no JSON: frontends turn their clients' doings into commands on the appliance.
mod attach;
mod build;
pub(crate) mod endpoint;

pub use attach::{AttachError, AttachGrant, AttachRequest};
pub(crate) use build::{build_backing, build_vnic, ipv4s, policy, port_config};
pub(crate) use endpoint::{listens, precheck_listen_path, Endpoint};
pub use endpoint::{EndpointError, Side};

use crate::arbiter::Policy;
use crate::config::{BackingConfig, ClientConfig, MacAddr};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use vnic_dataplane::{Mempool, Port, Ring, VnicSlot, VnicStats};
pub use vnic_proto::status::{BackingState, Caps, LinkState, Owner, QueueRings, SwitchRecord};

/// Rx/tx descriptors per VF queue.
pub const VF_DESC: u16 = 1024;
/// Per-lcore mempool cache.
pub const POOL_CACHE: u32 = 256;
/// Separate-process clients get EAL lcore ids from here up (vnicd's own are the CPU numbers).
pub const CLIENT_LCORE_BASE: u32 = 64;
/// How many distinct client lcore ids (DPDK's RTE_MAX_LCORE is 128 in Debian's build).
pub const CLIENT_LCORES: u32 = 64;

/// Where a vNIC is in a move between appliances (the `mobility` room drives it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Moving {
    #[default]
    No,
    /// Leaving: forwarding as usual while the client moves.
    Out,
    /// Leaving, cutting over: tx only (what the client still has goes to the VF).
    Draining,
    /// Leaving, cut over: out of every table; released once the destination forwards.
    Stopped,
    /// Arrived, not cut over: built, not forwarding, not announced; released at `deadline`.
    In { deadline: Instant },
}

pub(crate) struct Backing {
    pub(crate) cfg: BackingConfig,
    pub(crate) port: Option<Port>,
    pub(crate) state: BackingState,
    pub(crate) link_up: bool,
    /// Since when it has been usable without interruption (for the fail-back hold-down).
    pub(crate) healthy_since: Option<Instant>,
    pub(crate) last_failure: Option<String>,
    /// Why it could not be opened or started, when that is why it is failed.
    pub(crate) bring_up_error: Option<vnic_dataplane::Error>,
    /// When to try restarting a failed port next (a memif client redials this way).
    pub(crate) next_redial: Instant,
    /// Its link has been up at least once (before that it is still connecting, not failed).
    pub(crate) ever_up: bool,
    /// Restarts since the link was last up (backs the redial interval off).
    pub(crate) redials: u32,
    /// The device is gone: release its port once no table names it.
    pub(crate) release: bool,
    /// When it last failed.
    pub(crate) failed_at: Option<Instant>,
    /// It failed because its tx queue refused frames while the link read up: nothing but time
    /// shows it recovered, so it rejoins only after the hold-down.
    pub(crate) tx_failure: bool,
    /// Times a data core saw its consumer stop and sent on the backup meanwhile.
    pub(crate) tx_stalls: u64,
}

impl Backing {
    /// Mark it failed for `why` (its down flag too, so a data core still sending on it turns
    /// to the backup at once); true if it was not failed already.
    pub(crate) fn fail(&mut self, why: &str, now: Instant) -> bool {
        if let Some(p) = &self.port {
            // A data core that saw its consumer stop saw the failure first (whatever makes it
            // official now: the link going down, the stall lasting): date it from then.
            let stalled = p.stalled_since();
            if stalled != 0 {
                p.health()
                    .mark_down_at(vnic_dataplane::Detector::PeerStalled, stalled);
            }
            p.health().mark_down(vnic_dataplane::Detector::HealthCheck);
        }
        if matches!(self.state, BackingState::Failed(_)) {
            return false;
        }
        self.state = BackingState::Failed(why.into());
        self.last_failure = Some(why.into());
        self.failed_at = Some(now);
        self.tx_failure = why.starts_with("tx ");
        true
    }

    pub(crate) fn usable(&self) -> bool {
        self.port.is_some()
            && self.link_up
            && matches!(self.state, BackingState::Active | BackingState::Standby)
    }
}

pub(crate) struct Attachment {
    pub(crate) queues: u16,
    pub(crate) depth: u32,
    pub(crate) mtu: u32,
    pub(crate) promisc: bool,
    pub(crate) side: Side,
    pub(crate) owner: Owner,
}

impl Attachment {
    /// A shm client's ring pairs (none for the other transports).
    pub(crate) fn rings(&self) -> &[(Arc<Ring>, Arc<Ring>)] {
        match &self.side {
            Side::Rings(r) => r,
            _ => &[],
        }
    }
}

pub(crate) struct Vnic {
    pub(crate) name: String,
    pub(crate) mac: MacAddr,
    /// Configured maxima.
    pub(crate) max_queues: u16,
    pub(crate) max_depth: u32,
    pub(crate) mtu: u32,
    pub(crate) allow_spoofing: bool,
    pub(crate) allowed_uids: Vec<u32>,
    pub(crate) allowed_gids: Vec<u32>,
    pub(crate) core_idx: usize,
    pub(crate) slot: VnicSlot,
    pub(crate) active: Option<usize>,
    pub(crate) backing: Vec<Backing>,
    pub(crate) pool: Arc<Mempool>,
    /// How clients reach it, and the socket or port serving them.
    pub(crate) client: ClientConfig,
    pub(crate) endpoint: Endpoint,
    /// Why the last vhost/memif client was refused.
    pub(crate) client_refused: Option<String>,
    pub(crate) attach: Option<Attachment>,
    /// Bumped at every attach and detach (and later failover); replies carry it.
    pub(crate) epoch: u64,
    /// Re-attach token of the last attachment.
    pub(crate) token: Option<String>,
    pub(crate) policy: Policy,
    /// Switches of the active device by kind of reason (their sum is the failover count).
    pub(crate) failovers_by_reason: vnic_proto::status::FailoverTally,
    pub(crate) last_switch: Option<SwitchRecord>,
    /// Automatic fail-backs inside the flap window.
    pub(crate) failbacks: VecDeque<Instant>,
    pub(crate) flap_suppressed: bool,
    /// vnicd → device frames (peer announcements), sent by the data core.
    pub(crate) announce_ring: Arc<Ring>,
    pub(crate) announce_left: u32,
    pub(crate) next_announce: Instant,
    /// Keep the announcer in the table until then (lets the last round drain).
    pub(crate) announce_until: Option<Instant>,
    pub(crate) ipv4: Vec<[u8; 4]>,
    pub(crate) last_check: Instant,
    /// Counter values its slot had before this vNIC took it (slots are reused after a reload
    /// removes a vNIC; only the data core writes counters, so they are offset, not reset).
    pub(crate) stats_base: VnicStats,
    /// Out of every table while it moves between data cores.
    pub(crate) parked: bool,
    /// The link last queued for clients as an event (see `Appliance::note_links`).
    pub(crate) told_link: LinkState,
    /// Where it is in a move between appliances.
    pub(crate) moving: Moving,
    /// Counters it brought from the appliance it moved from (status adds this appliance's).
    pub(crate) carried: vnic_proto::status::VnicCounts,
}

impl Vnic {
    /// Its backing devices as the arbiter sees them.
    pub(crate) fn candidates(&self) -> Vec<crate::arbiter::Candidate> {
        self.backing
            .iter()
            .map(|b| crate::arbiter::Candidate {
                priority: b.cfg.priority,
                usable: b.usable(),
                healthy_since: b.healthy_since,
            })
            .collect()
    }

    /// Stop and close its devices and client-side port (their queues hold the pool's mbufs,
    /// which go back to the pool); the vNIC serves nothing afterwards.
    pub(crate) fn stop_devices(&mut self) {
        if let Endpoint::Memif(p) = &mut self.endpoint {
            if let Err(e) = p.stop() {
                tracing::warn!(vnic = %self.name, "{e}");
            }
        }
        self.endpoint = Endpoint::Shm;
        for b in &mut self.backing {
            if let Some(mut p) = b.port.take() {
                if let Err(e) = p.stop() {
                    tracing::warn!(backing = %b.cfg.name, "{e}");
                }
            }
        }
    }

    /// Start announcing the vNIC (RARP, gratuitous ARP for its addresses) on its active device:
    /// `announce_rounds` rounds, `announce_interval` apart, the first due now.
    pub(crate) fn begin_announce(&mut self, now: Instant) {
        if self.policy.announce_rounds > 0 {
            self.announce_left = self.policy.announce_rounds;
            self.next_announce = now;
            self.announce_until = Some(
                now + self.policy.announce_interval * (self.policy.announce_rounds + 1)
                    + std::time::Duration::from_millis(20),
            );
        }
    }

    /// Queue one announcement round if one is due (the data core sends it).
    pub(crate) fn announce_round(&mut self, now: Instant) {
        if self.announce_left > 0 && now >= self.next_announce {
            self.announce_left -= 1;
            self.next_announce = now + self.policy.announce_interval;
            let mut frames = vec![crate::arbiter::rarp(self.mac.0)];
            frames.extend(
                self.ipv4
                    .iter()
                    .map(|ip| crate::arbiter::garp(self.mac.0, *ip)),
            );
            for f in frames {
                if let Some(m) = self.pool.alloc_with(&f) {
                    let _ = self.announce_ring.enqueue_one(m);
                }
            }
        }
    }

    /// The link as the vNIC's client sees it: up when its active device is usable.
    pub(crate) fn link(&self) -> LinkState {
        LinkState {
            up: self.active.is_some_and(|a| self.backing[a].usable()),
            active_backing: self.active.map(|a| self.backing[a].cfg.name.clone()),
        }
    }
}
