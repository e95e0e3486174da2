//! The only place that turns the model into forwarding tables: per data core, one queue entry
//! per attached vNIC queue on its active, usable backing device (standbys received from too),
//! in-core clients, announcers in flight.
use crate::appliance::Appliance;
use crate::mobility::Moving;
use crate::vnic::{BackingState, Endpoint, Owner, Side};
use std::time::Instant;
use vnic_dataplane::{
    Announce, ClientSide, EthdevClient, FwdTable, InlineClient, QueueEntry, VhostQueue,
};

/// A data core did not take a new table. It still runs the previous one, which stays valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("data core {core} did not take the new forwarding table: {err}")]
pub struct PublishError {
    pub core: u32,
    #[source]
    pub err: vnic_dataplane::Error,
}

impl Appliance {
    /// Rebuild and publish core `ci`'s table from the attached vNICs it serves.
    pub(crate) fn publish_core(&mut self, ci: usize) -> Result<u64, PublishError> {
        let mut queues = Vec::new();
        let mut clients = Vec::new();
        let mut announce = Vec::new();
        let mut drain = Vec::new();
        let now = Instant::now();
        // A vNIC arriving from another appliance forwards only from cutover on; one that left
        // is in no table; one cutting over sends what its client still has (tx only).
        let serving = |v: &&crate::vnic::Vnic| {
            v.core_idx == ci
                && !v.parked
                && matches!(v.moving, Moving::No | Moving::Out | Moving::Draining)
        };
        for v in self.vnics.iter().filter(serving) {
            let Some(a) = v.active else { continue };
            // A device that is not usable (failed, link down, being restarted) is never polled.
            if !v.backing[a].usable() {
                continue;
            }
            let Some(port) = v.backing[a].port.as_ref() else {
                continue;
            };
            if v.announce_until.is_some_and(|t| t > now) {
                if let Some(txq) = port.tx_queue(0) {
                    announce.push(Announce::new(v.announce_ring.clone(), txq));
                }
            }
            let Some(att) = v.attach.as_ref() else {
                continue;
            };
            // Fast reroute: the best operational standby, where the data core transmits the
            // moment the active device reads down.
            let backup = crate::arbiter::best(&v.candidates(), Some(a))
                .and_then(|k| v.backing[k].port.as_ref());
            // Client side of vNIC queue q, by transport.
            let enabled: Vec<u16> = match &att.side {
                Side::Vhost { gate, pairs, .. } => enabled_pairs(gate.enabled_vrings(), *pairs),
                _ => Vec::new(),
            };
            for q in 0..v.max_queues {
                let qi = q as usize;
                let side = match &att.side {
                    Side::Rings(r) => match r.get(qi) {
                        Some((rx, tx)) => ClientSide::Rings(vnic_dataplane::ClientRings::new(
                            rx.clone(),
                            tx.clone(),
                        )),
                        None => continue,
                    },
                    // Every VF queue delivers (to the enabled pairs in turn); a queue takes from
                    // the guest only if its pair is enabled.
                    Side::Vhost { vid, gate, .. } => {
                        let Some(&to) = enabled.get(qi % enabled.len().max(1)) else {
                            continue;
                        };
                        ClientSide::Vhost(VhostQueue::new(
                            *vid,
                            gate.clone(),
                            to,
                            enabled.get(qi).copied(),
                            v.pool.clone(),
                        ))
                    }
                    Side::Memif => {
                        let Endpoint::Memif(mp) = &v.endpoint else {
                            continue;
                        };
                        match (mp.rx_queue(q), mp.tx_queue(q)) {
                            (Some(r), Some(t)) => ClientSide::Ethdev(EthdevClient::new(r, t)),
                            _ => continue,
                        }
                    }
                };
                let (Some(rxq), Some(txq)) = (port.rx_queue(q), port.tx_queue(q)) else {
                    continue;
                };
                let bk = backup.and_then(|p| {
                    p.tx_queue(q)
                        .map(|t| vnic_dataplane::Backup::new(t, p.health().clone()))
                });
                let mut e = QueueEntry::with_client(rxq, txq, side, v.slot)
                    .with_reroute(port.health().clone(), bk, v.policy.tx_refuse_us)
                    .with_tx_watch(port.tx_watch(q));
                // Standby devices are received from too: frames still arriving on the old device
                // after a switch (before upstream relearns) reach the client.
                for (k, b) in v.backing.iter().enumerate() {
                    if k != a && b.state == BackingState::Standby && b.link_up {
                        if let Some(srx) = b.port.as_ref().and_then(|p| p.rx_queue(q)) {
                            e = e.also_rx(srx);
                        }
                    }
                }
                if !v.allow_spoofing {
                    e = e.with_spoof_check(v.mac.0);
                }
                if v.moving == Moving::Draining {
                    drain.push(e);
                    continue;
                }
                queues.push(e);
                if let (Owner::Inline, Some(mode), Side::Rings(r)) =
                    (&att.owner, self.inline, &att.side)
                {
                    if let Some((rx, tx)) = r.get(qi) {
                        clients.push(InlineClient::new(
                            rx.clone(),
                            tx.clone(),
                            mode,
                            v.slot,
                            v.mac.0,
                        ));
                    }
                }
            }
        }
        let table = FwdTable::new(queues, clients)
            .with_announce(announce)
            .with_drain(drain);
        let core = &mut self.cores[ci];
        let g = core.worker.publish(table).map_err(|err| PublishError {
            core: core.core,
            err,
        })?;
        self.generation += 1;
        Ok(g)
    }
}

/// The queue pairs a vhost frontend enabled (both vrings), in order; all it set up when it never
/// said (frontends without the protocol-features bit start with every vring enabled).
pub(crate) fn enabled_pairs(mask: u64, pairs: u16) -> Vec<u16> {
    let on: Vec<u16> = (0..pairs.min(32))
        .filter(|p| mask >> (2 * p) & 0b11 == 0b11)
        .collect();
    if on.is_empty() {
        (0..pairs).collect()
    } else {
        on
    }
}
