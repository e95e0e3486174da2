//! Status: the model and the data cores' counters as one serializable snapshot.
use crate::appliance::Appliance;
use crate::arbiter::SwitchRecord;
use crate::vnic::{BackingState, Owner};
use serde::Serialize;
use vnic_dataplane::{eal, CoreStats, Launch, VnicSlot, VnicStats};

/// Status of a backing device.
#[derive(Debug, Clone, Serialize)]
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
}

/// Status of a vNIC.
#[derive(Debug, Clone, Serialize)]
pub struct VnicStatus {
    pub name: String,
    pub mac: String,
    /// "attached" or "detached".
    pub state: &'static str,
    pub client_pid: Option<i32>,
    pub owner: Option<Owner>,
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
    pub auto_priority_failover: bool,
    pub last_switch: Option<SwitchRecord>,
    /// Fail-back wanted but held back by the flap limit.
    pub flap_suppressed: bool,
    pub backing: Vec<BackingStatus>,
    /// Counters summed over data cores (flattened into the JSON).
    #[serde(flatten)]
    pub stats: VnicStats,
    pub pool_in_use: u32,
    pub pool_size: u32,
}

/// Status of a data core.
#[derive(Debug, Clone, Serialize)]
pub struct CoreStatus {
    pub core: u32,
    pub launch: &'static str,
    pub table_generation: u64,
    /// The core's counters (flattened into the JSON).
    #[serde(flatten)]
    pub stats: CoreStats,
}

/// Whole-appliance status.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub generation: u64,
    pub config_generation: u64,
    pub dpdk_version: &'static str,
    pub eal_args: Vec<String>,
    pub tsc_hz: u64,
    pub vnics: Vec<VnicStatus>,
    pub cores: Vec<CoreStatus>,
}

impl Appliance {
    pub(crate) fn vnic_stats(&self, i: usize) -> VnicStats {
        self.slot_stats(self.vnics[i].slot)
            .since(&self.vnics[i].stats_base)
    }

    /// Raw counters of a slot, summed over data cores.
    pub(crate) fn slot_stats(&self, slot: VnicSlot) -> VnicStats {
        let mut s = VnicStats::default();
        for c in &self.cores {
            s += c.worker.vnic_stats(slot);
        }
        s
    }

    /// Current status (counters summed over data cores).
    pub fn status(&self) -> Status {
        let eal = self.eal.as_ref();
        let vnics = self
            .vnics
            .iter()
            .map(|v| {
                let s = self.slot_stats(v.slot).since(&v.stats_base);
                VnicStatus {
                    name: v.name.clone(),
                    mac: v.mac.to_string(),
                    state: if v.attach.is_some() {
                        "attached"
                    } else {
                        "detached"
                    },
                    client_pid: v.attach.as_ref().and_then(|a| match a.owner {
                        Owner::Client { pid, .. } => Some(pid),
                        Owner::Inline => None,
                    }),
                    owner: v.attach.as_ref().map(|a| a.owner.clone()),
                    epoch: v.epoch,
                    queues: v.attach.as_ref().map(|a| a.queues as u32).unwrap_or(0),
                    ring_depth: v.attach.as_ref().map(|a| a.depth).unwrap_or(0),
                    mtu: v.attach.as_ref().map(|a| a.mtu).unwrap_or(v.mtu),
                    promisc: v.attach.as_ref().is_some_and(|a| a.promisc),
                    data_core: self.cores[v.core_idx].core,
                    active_backing: v.active.map(|a| v.backing[a].cfg.name.clone()),
                    link_up: v.active.is_some_and(|a| v.backing[a].usable()),
                    failover_count: v.failovers,
                    auto_priority_failover: v.policy.auto_priority_failover,
                    last_switch: v.last_switch.clone(),
                    flap_suppressed: v.flap_suppressed,
                    backing: v
                        .backing
                        .iter()
                        .map(|b| BackingStatus {
                            name: b.cfg.name.clone(),
                            devargs: b.cfg.devargs.clone(),
                            priority: b.cfg.priority,
                            port_label: b.cfg.port_label.clone(),
                            state: b.state.clone(),
                            link_up: b.link_up,
                            healthy_ms: b.healthy_since.map(|t| t.elapsed().as_millis() as u64),
                            last_failure: b.last_failure.clone(),
                        })
                        .collect(),
                    stats: s,
                    pool_in_use: v.pool.in_use(),
                    pool_size: v.pool.size(),
                }
            })
            .collect();
        let cores = self
            .cores
            .iter()
            .map(|c| CoreStatus {
                core: c.core,
                launch: match c.worker.launch_kind() {
                    Launch::Lcore(_) => "lcore",
                    Launch::Thread(_) => "thread",
                },
                table_generation: c.worker.adopted_generation(),
                stats: c.worker.core_stats(),
            })
            .collect();
        Status {
            generation: self.generation,
            config_generation: self.config_generation,
            dpdk_version: eal::dpdk_version(),
            eal_args: eal.map(|e| e.args().to_vec()).unwrap_or_default(),
            tsc_hz: eal::tsc_hz(),
            vnics,
            cores,
        }
    }
}
