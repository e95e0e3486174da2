//! The status vocabulary shared by vnicd and its administrators: vNICs, backing devices, data
//! cores and their counters, as the admin socket reports them.
use serde::{Deserialize, Serialize};

/// State of one backing device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "reason")]
pub enum BackingState {
    /// Carrying the vNIC's traffic.
    Active,
    /// Started and ready to take over.
    Standby,
    /// Not usable (reason): failed to come up, link down, tx stalled, removed.
    Failed(String),
    /// Taken out of service by the administrator.
    Disabled,
}

impl std::fmt::Display for BackingState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackingState::Active => f.write_str("active"),
            BackingState::Standby => f.write_str("standby"),
            BackingState::Failed(r) => write!(f, "failed: {r}"),
            BackingState::Disabled => f.write_str("disabled"),
        }
    }
}

/// Who holds a vNIC's rings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Owner {
    /// An in-core client on the data core (`--inline-client`).
    Inline,
    /// A client session on the control socket.
    Client {
        session: u64,
        pid: i32,
        uid: u32,
        gid: u32,
    },
    /// A vhost-user frontend (QEMU, virtio-user). The protocol carries no pid.
    Vhost {
        socket: String,
        /// "server" (vnicd listens) or "client" (vnicd dials).
        mode: String,
        /// The vhost library's device id.
        vid: i32,
        /// Queue pairs the frontend set up, and those it enabled.
        pairs: u32,
        enabled_pairs: u32,
        /// Negotiated virtio-net features, hex.
        features: String,
        /// The frontend was told not to kick vnicd after each burst (the used rings'
        /// NO_NOTIFY): a polling backend needs no kicks, and each costs the frontend a syscall
        /// or a VM exit.
        #[serde(default)]
        kicks_off: bool,
    },
    /// A memif client (vnicd is the server). The protocol carries no pid.
    Memif { socket: String, id: u32 },
}

/// Link as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    pub up: bool,
    pub active_backing: Option<String>,
}

/// Ring names of one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRings {
    pub rx: String,
    pub tx: String,
}

/// Limits offered at CAPS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caps {
    pub max_queues: u32,
    pub min_depth: u32,
    pub max_depth: u32,
    pub min_mtu: u32,
    pub max_mtu: u32,
    pub offloads: Vec<String>,
    pub spoof_check: bool,
}

/// One completed switch of the active backing device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchRecord {
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
    /// From the last health check that saw the old device fine to the one that saw it fail.
    pub detection_us: u64,
    /// From the decision to the data core running the new table.
    pub switch_us: u64,
    /// Wall clock, ms since the epoch.
    pub at_unix_ms: u64,
    /// For a failure: who saw it first (`link interrupt`, `removal interrupt`, `data core (tx
    /// refused)`, `health check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_by: Option<String>,
    /// Wall clock (µs since the epoch) when the old device was marked down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at_unix_us: Option<u64>,
    /// From the device marked down to the data core sending on the backup (fast reroute,
    /// before the control thread's switch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reroute_us: Option<u64>,
    /// From the device marked down to the first frame the new device accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_frame_us: Option<u64>,
    /// From the device marked down to the control thread's new table (the official switch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub official_us: Option<u64>,
}

/// A vNIC's counters, summed over data cores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VnicCounts {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// The client's rx ring refused a burst.
    pub rx_drops: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// The VF refused frames.
    pub tx_drops: u64,
    /// An in-core client's tx ring refused frames.
    pub client_drops: u64,
    /// Frames with another source MAC than the vNIC's.
    pub spoof_drops: u64,
}

impl std::ops::AddAssign for VnicCounts {
    fn add_assign(&mut self, o: VnicCounts) {
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

/// A data core's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreCounts {
    pub loops: u64,
    pub busy_loops: u64,
    pub packets: u64,
    pub bursts: u64,
    pub busy_cycles: u64,
    pub idle_cycles: u64,
    pub table_swaps: u64,
    /// Idle back-off: times the core offered its CPU (`sched_yield`).
    #[serde(default)]
    pub yields: u64,
    /// Idle back-off: sleeps (only once nothing moved for 1 ms).
    #[serde(default)]
    pub sleeps: u64,
}

impl CoreCounts {
    /// Busy cycles per packet hop since `earlier` (`None` when nothing moved).
    pub fn cycles_per_packet_since(&self, earlier: &CoreCounts) -> Option<f64> {
        let p = self.packets.checked_sub(earlier.packets)?;
        (p > 0).then(|| (self.busy_cycles - earlier.busy_cycles) as f64 / p as f64)
    }
    /// Share of idle iterations since `earlier` (0..1).
    pub fn idle_share_since(&self, earlier: &CoreCounts) -> f64 {
        let l = self.loops.saturating_sub(earlier.loops);
        if l == 0 {
            return 1.0;
        }
        1.0 - self.busy_loops.saturating_sub(earlier.busy_loops) as f64 / l as f64
    }
}

/// Status of a backing device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackingStatus {
    pub name: String,
    pub devargs: String,
    pub priority: u32,
    pub port_label: String,
    #[serde(flatten)]
    pub state: BackingState,
    pub link_up: bool,
    /// How long it has been usable without interruption (ms), if it is.
    pub healthy_ms: Option<u64>,
    pub last_failure: Option<String>,
    /// Times a data core saw its consumer stop taking frames and sent on the backup meanwhile
    /// (each either ended by itself or became a failure).
    #[serde(default)]
    pub tx_stalls: u64,
}

/// Status of a vNIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VnicStatus {
    pub name: String,
    pub mac: String,
    /// "attached" or "detached".
    pub state: String,
    pub client_pid: Option<i32>,
    pub owner: Option<Owner>,
    /// How clients reach it: "shm", "vhost-user" or "memif".
    pub transport: String,
    /// The vhost-user or memif socket it serves.
    pub client_socket: Option<String>,
    /// Why its client side is not serving, or why the last client was refused.
    pub client_error: Option<String>,
    pub epoch: u64,
    pub queues: u32,
    pub ring_depth: u32,
    pub mtu: u32,
    pub promisc: bool,
    pub data_core: u32,
    pub active_backing: Option<String>,
    /// The vNIC's link: up when a backing device carries it.
    pub link_up: bool,
    pub failover_count: u64,
    /// The same failovers by kind of reason.
    #[serde(default)]
    pub failovers_by_reason: FailoverTally,
    pub auto_priority_failover: bool,
    pub last_switch: Option<SwitchRecord>,
    /// Fail-back wanted but held back by the flap limit.
    pub flap_suppressed: bool,
    pub backing: Vec<BackingStatus>,
    /// Counters summed over data cores (flattened into the JSON).
    #[serde(flatten)]
    pub stats: VnicCounts,
    pub pool_in_use: u32,
    pub pool_size: u32,
    /// Its latest move between appliances, if it had one here (phases with their times).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<crate::mobility::Migration>,
}

/// Failovers of one vNIC by kind of reason (the first activation is not one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverTally {
    /// The active device failed.
    pub failure: u64,
    /// Back to a better-priority device after its hold-down.
    pub fail_back: u64,
    /// `vnicctl failover`, a client's `REQUEST_FAILOVER`.
    pub planned: u64,
    /// A device came back to a vNIC that had none.
    pub recovery: u64,
}

impl FailoverTally {
    /// All failovers, whatever the reason.
    pub fn total(&self) -> u64 {
        self.failure + self.fail_back + self.planned + self.recovery
    }
}

/// Appliance-wide event counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub reloads_applied: u64,
    pub reloads_refused: u64,
    /// Clients attached (any transport) and detached (gone, timed out, or told to).
    pub attaches: u64,
    pub detaches: u64,
}

/// A vNIC of this appliance's config that moved to another appliance (and was released here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigratedOut {
    pub vnic: String,
    /// The destination's admin socket.
    pub to: String,
}

/// Status of a data core.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreStatus {
    pub core: u32,
    /// "lcore" or "thread".
    pub launch: String,
    pub table_generation: u64,
    /// The core's counters (flattened into the JSON).
    #[serde(flatten)]
    pub stats: CoreCounts,
}

/// Whole-appliance status (admin `STATS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub generation: u64,
    pub config_generation: u64,
    pub dpdk_version: String,
    pub eal_args: Vec<String>,
    pub tsc_hz: u64,
    pub vnics: Vec<VnicStatus>,
    /// vNICs that moved away (state `migrated-out`).
    #[serde(default)]
    pub migrated_out: Vec<MigratedOut>,
    pub cores: Vec<CoreStatus>,
    #[serde(default)]
    pub tally: Tally,
}
