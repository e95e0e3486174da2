//! The source's half of a move: export the vNIC, keep forwarding while the client moves, then
//! cut over (send what the client still has, stop) and release everything once the destination
//! forwards. Until cutover, any failure puts the vNIC back as it was.
use super::{Departed, MobilityError, Moving, Phase, Prepared, Record, VnicExport};
use crate::appliance::{Appliance, Event};
use crate::vnic::Owner;
use std::time::{Duration, Instant};
use vnic_proto::mobility::{Cutover, Direction, Migration};

/// How long cutover waits for the client's rings to empty (the client keeps serving).
const DRAIN_MAX: Duration = Duration::from_millis(5);
/// Rings empty this long count as drained (a client may hold a burst between its rings).
const DRAIN_QUIET: Duration = Duration::from_micros(50);

impl Appliance {
    /// Begin moving `vnic` to `to`: its export. The vNIC keeps forwarding.
    pub(crate) fn begin_outgoing(
        &mut self,
        vnic: &str,
        to: &str,
        dry_run: bool,
    ) -> Result<VnicExport, MobilityError> {
        let i = self.moving_index(vnic)?;
        let v = &self.vnics[i];
        if v.moving != Moving::No {
            return Err(MobilityError::Phase(format!(
                "vNIC {vnic:?} is in a migration already"
            )));
        }
        if matches!(v.attach.as_ref().map(|a| &a.owner), Some(Owner::Inline)) {
            return Err(MobilityError::CannotTake(format!(
                "vNIC {vnic:?} is served by an in-core client, which cannot move"
            )));
        }
        let vc = self
            .config
            .raw()
            .vnics
            .iter()
            .find(|c| c.name == vnic)
            .ok_or_else(|| MobilityError::UnknownVnic(vnic.into()))?;
        let export = VnicExport {
            config: serde_json::to_value(vc).unwrap_or_default(),
            token: v.token.clone(),
            epoch: v.epoch,
            counters: self.counts(i),
            from: self.config.raw().admin_socket.display().to_string(),
        };
        let transport = v.client.transport().to_string();
        if !dry_run {
            self.vnics[i].moving = Moving::Out;
        }
        self.push_record(Record::begin(vnic, Direction::Out, to, &transport, dry_run));
        Ok(export)
    }

    /// The destination prepared the vNIC: a shm client is told to start its successor there.
    /// Returns whether a client has to arrive there before cutover.
    pub(crate) fn outgoing_prepared(
        &mut self,
        vnic: &str,
        p: &Prepared,
    ) -> Result<bool, MobilityError> {
        let i = self.moving_index(vnic)?;
        let attached = self.vnics[i].attach.is_some();
        let token = self.vnics[i].token.clone();
        let shm = self.vnics[i].client == crate::config::ClientConfig::Shm;
        let r = self.current(vnic)?;
        r.m.backing = p.backing.clone();
        r.m.client_socket = p.client_socket.clone().or(Some(p.control_socket.clone()));
        if p.dry_run {
            r.enter(Phase::Released);
            return Ok(false);
        }
        r.enter(Phase::ClientMoving);
        // A vhost-user guest moves by QEMU live migration and a memif container is restarted
        // there, so only a shm client hears from us; one that is not attached has nothing to move.
        if shm && attached {
            if let Some(token) = token {
                self.emit(Event::Migrate {
                    vnic: vnic.into(),
                    control_socket: p.control_socket.clone(),
                    token,
                });
            }
        }
        Ok(attached || !shm)
    }

    /// Cutover on the source: tx only until the client's rings are empty (what it still had
    /// goes to the VF), then out of every table. The final counters go to the destination.
    pub(crate) fn stop_outgoing(&mut self, vnic: &str) -> Result<Cutover, MobilityError> {
        let i = self.moving_index(vnic)?;
        if self.vnics[i].moving != Moving::Out {
            return Err(MobilityError::Phase(format!(
                "vNIC {vnic:?} is not waiting for cutover"
            )));
        }
        if let Some(r) = self.record_mut(vnic) {
            r.enter(Phase::Cutover);
        }
        let ci = self.vnics[i].core_idx;
        let rings: Vec<_> = self.vnics[i]
            .attach
            .as_ref()
            .map(|a| a.rings().to_vec())
            .unwrap_or_default();
        if !rings.is_empty() {
            self.vnics[i].moving = Moving::Draining;
            if let Err(e) = self.publish_core(ci) {
                self.vnics[i].moving = Moving::Out;
                return Err(MobilityError::Failed(format!("cutover: {e}")));
            }
            let t0 = Instant::now();
            let mut quiet_since: Option<Instant> = None;
            while t0.elapsed() < DRAIN_MAX {
                let empty = rings
                    .iter()
                    .all(|(rx, tx)| rx.count() == 0 && tx.count() == 0);
                match (empty, quiet_since) {
                    (false, _) => quiet_since = None,
                    (true, None) => quiet_since = Some(Instant::now()),
                    (true, Some(t)) if t.elapsed() >= DRAIN_QUIET => break,
                    _ => {}
                }
                std::thread::yield_now();
            }
        }
        self.vnics[i].moving = Moving::Stopped;
        if let Err(e) = self.publish_core(ci) {
            self.vnics[i].moving = Moving::Out;
            let _ = self.publish_core(ci);
            return Err(MobilityError::Failed(format!("cutover: {e}")));
        }
        Ok(Cutover {
            vnic: vnic.into(),
            counters: self.counts(i),
            vnic_epoch: self.vnics[i].epoch,
        })
    }

    /// The destination forwards: release the vNIC here (its client is told where it went) and
    /// remember it as departed.
    pub(crate) fn finish_outgoing(
        &mut self,
        vnic: &str,
        cutover_us: u64,
    ) -> Result<Migration, MobilityError> {
        let i = self.moving_index(vnic)?;
        if self.vnics[i].moving != Moving::Stopped {
            return Err(MobilityError::Phase(format!(
                "vNIC {vnic:?} was not cut over"
            )));
        }
        let to = self
            .migration_record(vnic)
            .map(|r| r.m.peer.clone())
            .unwrap_or_default();
        self.emit(Event::Migrated {
            vnic: vnic.into(),
            to: to.clone(),
        });
        if self.vnics[i].attach.is_some() {
            let _ = self.detach(vnic);
        }
        let mut v = self.vnics.remove(i);
        // Devices first (their queues hold the pool's mbufs), then the pool must be full.
        v.stop_devices();
        v.announce_ring.drain();
        let in_use = v.pool.in_use();
        if in_use > 0 {
            tracing::error!(vnic, in_use, "released with mbufs still out of its pool");
        }
        drop(v);
        let cfg = self.forget_config(vnic);
        // One of ours leaves a tombstone (a reload does not bring it back; it gets its devices
        // back if it returns); one that had arrived here is simply gone.
        if let Some(pos) = self.adopted.iter().position(|n| n == vnic) {
            self.adopted.remove(pos);
        } else if let Some(cfg) = cfg {
            self.departed.push(Departed { cfg, to });
        }
        let r = self.current(vnic)?;
        r.m.cutover_us = Some(cutover_us);
        r.m.released_pool_in_use = Some(in_use);
        r.enter(Phase::Done);
        Ok(r.m.clone())
    }

    /// The move failed before the destination took over: the vNIC forwards here as before.
    pub(crate) fn fail_outgoing(&mut self, vnic: &str, why: &str) -> Result<(), MobilityError> {
        if let Ok(i) = self.vnic_index(vnic) {
            let was = self.vnics[i].moving;
            self.vnics[i].moving = Moving::No;
            if matches!(was, Moving::Draining | Moving::Stopped) {
                let ci = self.vnics[i].core_idx;
                if let Err(e) = self.publish_core(ci) {
                    tracing::error!(vnic, "resuming after a failed migration: {e}");
                }
            }
        }
        if let Some(r) = self.record_mut(vnic) {
            if !r.m.phase.is_final() {
                r.fail(why);
            }
        }
        Ok(())
    }
}
