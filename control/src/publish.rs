//! The only place that turns the model into forwarding tables: per data core, one queue entry
//! per attached vNIC queue on its active, usable backing device (standbys received from too),
//! in-core clients, announcers in flight.
use crate::appliance::Appliance;
use crate::vnic::{BackingState, Owner};
use std::time::Instant;
use vnic_dataplane::{Announce, FwdTable, InlineClient, QueueEntry};

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
        let now = Instant::now();
        for v in self.vnics.iter().filter(|v| v.core_idx == ci && !v.parked) {
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
            for (q, (rx, tx)) in att.rings.iter().enumerate() {
                let q16 = q as u16;
                let (Some(rxq), Some(txq)) = (port.rx_queue(q16), port.tx_queue(q16)) else {
                    continue;
                };
                let mut e = QueueEntry::new(rxq, txq, rx.clone(), tx.clone(), v.slot);
                // Standby devices are received from too: frames still arriving on the old device
                // after a switch (before upstream relearns) reach the client.
                for (k, b) in v.backing.iter().enumerate() {
                    if k != a && b.state == BackingState::Standby && b.link_up {
                        if let Some(srx) = b.port.as_ref().and_then(|p| p.rx_queue(q16)) {
                            e = e.also_rx(srx);
                        }
                    }
                }
                if !v.allow_spoofing {
                    e = e.with_spoof_check(v.mac.0);
                }
                queues.push(e);
                if let (Owner::Inline, Some(mode)) = (&att.owner, self.inline) {
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
        let table = FwdTable::new(queues, clients).with_announce(announce);
        let core = &mut self.cores[ci];
        let g = core.worker.publish(table).map_err(|err| PublishError {
            core: core.core,
            err,
        })?;
        self.generation += 1;
        Ok(g)
    }
}
