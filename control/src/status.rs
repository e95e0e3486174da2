//! Status: the model and the data cores' counters as one snapshot, in the protocol's
//! vocabulary ([`vnic_proto::status`]).
use crate::appliance::Appliance;
use crate::mobility::Moving;
use crate::vnic::Owner;
use vnic_dataplane::{eal, CoreStats, Launch, VnicSlot, VnicStats};
pub use vnic_proto::status::{
    BackingStatus, CoreCounts, CoreStatus, MigratedOut, Status, VnicCounts, VnicStatus,
};

/// The data core's counter snapshot as the status reports it.
fn vnic_counts(s: VnicStats) -> VnicCounts {
    VnicCounts {
        rx_packets: s.rx_packets,
        rx_bytes: s.rx_bytes,
        rx_drops: s.rx_drops,
        tx_packets: s.tx_packets,
        tx_bytes: s.tx_bytes,
        tx_drops: s.tx_drops,
        client_drops: s.client_drops,
        spoof_drops: s.spoof_drops,
    }
}

fn core_counts(s: CoreStats) -> CoreCounts {
    CoreCounts {
        loops: s.loops,
        busy_loops: s.busy_loops,
        packets: s.packets,
        bursts: s.bursts,
        busy_cycles: s.busy_cycles,
        idle_cycles: s.idle_cycles,
        table_swaps: s.table_swaps,
        yields: s.yields,
        sleeps: s.sleeps,
    }
}

impl Appliance {
    pub(crate) fn vnic_stats(&self, i: usize) -> VnicStats {
        self.slot_stats(self.vnics[i].slot)
            .since(&self.vnics[i].stats_base)
    }

    /// Counters of vNIC `i` as its status shows them: what it brought from the appliance it
    /// moved from, plus this appliance's.
    pub(crate) fn counts(&self, i: usize) -> VnicCounts {
        let mut c = vnic_counts(self.vnic_stats(i));
        c += self.vnics[i].carried;
        c
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
            .enumerate()
            .map(|(i, v)| {
                let state = match (v.moving, v.attach.is_some()) {
                    (Moving::In { .. }, _) => "incoming",
                    (Moving::Out | Moving::Draining | Moving::Stopped, _) => "migrating",
                    (Moving::No, true) => "attached",
                    (Moving::No, false) => "detached",
                };
                VnicStatus {
                    name: v.name.clone(),
                    mac: v.mac.to_string(),
                    state: state.into(),
                    client_pid: v.attach.as_ref().and_then(|a| match a.owner {
                        Owner::Client { pid, .. } => Some(pid),
                        _ => None,
                    }),
                    owner: v.attach.as_ref().map(|a| a.owner.clone()),
                    transport: v.client.transport().into(),
                    client_socket: v.client.socket().map(str::to_string),
                    client_error: v
                        .endpoint
                        .error()
                        .map(str::to_string)
                        .or_else(|| v.client_refused.clone()),
                    epoch: v.epoch,
                    queues: v.attach.as_ref().map(|a| a.queues as u32).unwrap_or(0),
                    ring_depth: v.attach.as_ref().map(|a| a.depth).unwrap_or(0),
                    mtu: v.attach.as_ref().map(|a| a.mtu).unwrap_or(v.mtu),
                    promisc: v.attach.as_ref().is_some_and(|a| a.promisc),
                    data_core: self.cores[v.core_idx].core,
                    active_backing: v.active.map(|a| v.backing[a].cfg.name.clone()),
                    link_up: v.active.is_some_and(|a| v.backing[a].usable()),
                    failover_count: v.failovers_by_reason.total(),
                    failovers_by_reason: v.failovers_by_reason,
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
                            tx_stalls: b.tx_stalls,
                        })
                        .collect(),
                    stats: self.counts(i),
                    pool_in_use: v.pool.in_use(),
                    pool_size: v.pool.size(),
                    migration: self.migration(&v.name),
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
                }
                .into(),
                table_generation: c.worker.adopted_generation(),
                stats: core_counts(c.worker.core_stats()),
            })
            .collect();
        Status {
            generation: self.generation,
            config_generation: self.config_generation,
            dpdk_version: eal::dpdk_version().into(),
            eal_args: eal.map(|e| e.args().to_vec()).unwrap_or_default(),
            tsc_hz: eal::tsc_hz(),
            vnics,
            migrated_out: self
                .departed()
                .into_iter()
                .map(|(vnic, to)| MigratedOut { vnic, to })
                .collect(),
            cores,
            tally: self.tally,
        }
    }
}
