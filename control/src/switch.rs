//! Switching a vNIC's active backing device: after a failure (from health checks), planned by
//! the administrator or the client, on disable or hot removal. A switch is a table swap.
use crate::appliance::{Appliance, Event};
use crate::arbiter::{self, Reason, SwitchRecord};
use crate::publish::PublishError;
use crate::vnic::BackingState;
use std::time::Instant;

/// Why a failover or an enable/disable request was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailoverError {
    #[error("unknown vNIC {0:?}")]
    UnknownVnic(String),
    #[error("vNIC {vnic:?} has no backing device {backing:?}")]
    UnknownBacking { vnic: String, backing: String },
    #[error("no other operational backing device for vNIC {0:?}")]
    NoStandby(String),
    #[error("backing device {0:?} is not operational (failed, disabled, or link down)")]
    NotOperational(String),
    #[error("backing device {0:?} is already active")]
    AlreadyActive(String),
    #[error("{0:?} is the active device and no other is operational: disabling it would take the vNIC's link down (use force)")]
    LastDevice(String),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl Appliance {
    /// Hot-remove a backing device at run time (`rte_dev_remove` for a vdev): switch away first
    /// if it is active, withdraw it from the data core, then close and remove it. It stays
    /// `failed: removed` until a config reload brings it back.
    pub(crate) fn remove_backing(
        &mut self,
        vnic: &str,
        backing: &str,
    ) -> Result<Option<Event>, FailoverError> {
        let (i, k) = self.backing_index(vnic, backing)?;
        let mut ev = None;
        if self.vnics[i].active == Some(k) {
            match self.planned(vnic, None, &format!("{backing} removed")) {
                Ok(e) => ev = Some(e),
                Err(FailoverError::NoStandby(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let b = &mut self.vnics[i].backing[k];
        b.state = BackingState::Failed("removed by the administrator".into());
        b.last_failure = Some("removed by the administrator".into());
        b.link_up = false;
        b.healthy_since = None;
        b.release = true;
        let ci = self.vnics[i].core_idx;
        self.publish_core(ci)?;
        self.release_removed();
        Ok(ev)
    }

    /// Make backing device `to` the active one of vNIC `i`: the old one becomes standby (or stays
    /// failed), the data core adopts the new table at a burst boundary, and the MAC is announced
    /// on the new device. The event is queued for clients and returned for the reply. When the
    /// data core does not take the table, the model is put back as it was (the core still runs
    /// the old table) and the switch is refused.
    pub(crate) fn switch(
        &mut self,
        i: usize,
        to: usize,
        reason: Reason,
        detection_us: u64,
    ) -> Result<Event, FailoverError> {
        let t = Instant::now();
        let v = &mut self.vnics[i];
        let from = v.active;
        let undo = (
            from.map(|f| v.backing[f].state.clone()),
            v.backing[to].state.clone(),
            v.announce_left,
            v.announce_until,
        );
        if let Some(f) = from {
            if v.backing[f].state == BackingState::Active {
                v.backing[f].state = BackingState::Standby;
            }
        }
        v.backing[to].state = BackingState::Active;
        v.active = Some(to);
        v.begin_announce(t);
        let ci = v.core_idx;
        if let Err(e) = self.publish_core(ci) {
            let v = &mut self.vnics[i];
            tracing::error!(vnic = %v.name, "switch refused: {e}");
            v.active = from;
            if let (Some(f), Some(s)) = (from, undo.0) {
                v.backing[f].state = s;
            }
            v.backing[to].state = undo.1;
            v.announce_left = undo.2;
            v.announce_until = undo.3;
            return Err(e.into());
        }
        let v = &mut self.vnics[i];
        if from.is_some() {
            // The first activation of a vNIC is not a failover.
            let t = &mut v.failovers_by_reason;
            *match reason {
                Reason::Failure(_) => &mut t.failure,
                Reason::FailBack => &mut t.fail_back,
                Reason::Planned(_) => &mut t.planned,
                Reason::Recovery => &mut t.recovery,
            } += 1;
        }
        v.epoch += 1;
        let from_name = from.map(|f| v.backing[f].cfg.name.clone());
        let to_name = v.backing[to].cfg.name.clone();
        let mut rec = SwitchRecord {
            from: from_name.clone(),
            to: to_name.clone(),
            reason: reason.to_string(),
            detection_us,
            switch_us: t.elapsed().as_micros() as u64,
            at_unix_ms: crate::appliance::unix_ms(),
            detected_by: None,
            failed_at_unix_us: None,
            reroute_us: None,
            first_frame_us: None,
            official_us: None,
        };
        if let (Some(f), Reason::Failure(_)) = (from, &reason) {
            if let Some(p) = &v.backing[f].port {
                fault_times(&mut rec, &p.health().snapshot());
            }
        }
        tracing::warn!(vnic = %v.name, from = ?from_name, to = %to_name, %reason, detection_us, switch_us = rec.switch_us, "failover");
        v.last_switch = Some(rec);
        let ev = Event::Failover {
            vnic: v.name.clone(),
            from: from_name,
            to: to_name,
            reason: reason.to_string(),
        };
        self.emit(ev.clone());
        Ok(ev)
    }

    pub(crate) fn failover_index(&self, vnic: &str) -> Result<usize, FailoverError> {
        self.vnics
            .iter()
            .position(|v| v.name == vnic)
            .ok_or_else(|| FailoverError::UnknownVnic(vnic.into()))
    }

    pub(crate) fn backing_index(
        &self,
        vnic: &str,
        backing: &str,
    ) -> Result<(usize, usize), FailoverError> {
        let i = self.failover_index(vnic)?;
        let k = self.vnics[i]
            .backing
            .iter()
            .position(|b| b.cfg.name == backing)
            .ok_or_else(|| FailoverError::UnknownBacking {
                vnic: vnic.into(),
                backing: backing.into(),
            })?;
        Ok((i, k))
    }

    /// Planned switch (make-before-break): to `to`, or to the best other operational device.
    /// Frames still arriving on the old device keep being received, so nothing is lost. As on
    /// PowerVM, choosing a worse-priority device by hand turns automatic fail-back off for the
    /// vNIC (else it would undo the choice at once); [`Appliance::set_auto_failback`] turns it on.
    pub(crate) fn failover(
        &mut self,
        vnic: &str,
        to: Option<&str>,
        why: &str,
    ) -> Result<Event, FailoverError> {
        let ev = self.planned(vnic, to, why)?;
        let i = self.failover_index(vnic)?;
        let v = &mut self.vnics[i];
        let a = v.active.unwrap_or(0);
        let best_prio = v
            .backing
            .iter()
            .filter(|b| b.usable())
            .map(|b| b.cfg.priority)
            .min()
            .unwrap_or(0);
        if v.policy.auto_priority_failover && v.backing[a].cfg.priority > best_prio {
            v.policy.auto_priority_failover = false;
            tracing::warn!(
                vnic,
                "manual failover to a lower priority: automatic fail-back turned off"
            );
        }
        Ok(ev)
    }

    /// Turn automatic fail-back on or off for a vNIC.
    pub(crate) fn set_auto_failback(&mut self, vnic: &str, on: bool) -> Result<(), FailoverError> {
        let i = self.failover_index(vnic)?;
        self.vnics[i].policy.auto_priority_failover = on;
        Ok(())
    }

    pub(crate) fn planned(
        &mut self,
        vnic: &str,
        to: Option<&str>,
        why: &str,
    ) -> Result<Event, FailoverError> {
        let i = self.failover_index(vnic)?;
        let target = match to {
            Some(b) => {
                let (_, k) = self.backing_index(vnic, b)?;
                let v = &self.vnics[i];
                if v.active == Some(k) {
                    return Err(FailoverError::AlreadyActive(b.into()));
                }
                if !v.backing[k].usable() {
                    return Err(FailoverError::NotOperational(b.into()));
                }
                k
            }
            None => {
                let v = &self.vnics[i];
                arbiter::best(&v.candidates(), v.active)
                    .ok_or_else(|| FailoverError::NoStandby(vnic.into()))?
            }
        };
        self.switch(i, target, Reason::Planned(why.into()), 0)
    }

    /// Take a backing device out of service (switching away first if it is active), or put it
    /// back (it becomes standby, or failed until its link is up).
    pub(crate) fn set_backing_enabled(
        &mut self,
        vnic: &str,
        backing: &str,
        enabled: bool,
        force: bool,
    ) -> Result<Option<Event>, FailoverError> {
        let (i, k) = self.backing_index(vnic, backing)?;
        let mut ev = None;
        if enabled {
            let b = &mut self.vnics[i].backing[k];
            if b.state == BackingState::Disabled {
                b.state = if b.port.is_some() {
                    BackingState::Standby
                } else {
                    BackingState::Failed("not started".into())
                };
                b.healthy_since = b.link_up.then_some(Instant::now());
            }
        } else {
            if self.vnics[i].active == Some(k) {
                match self.planned(
                    vnic,
                    None,
                    &format!("{backing} disabled by the administrator"),
                ) {
                    Ok(e) => ev = Some(e),
                    Err(FailoverError::NoStandby(_)) if force => {}
                    Err(FailoverError::NoStandby(_)) => {
                        return Err(FailoverError::LastDevice(backing.into()))
                    }
                    Err(e) => return Err(e),
                }
            }
            self.vnics[i].backing[k].state = BackingState::Disabled;
        }
        let ci = self.vnics[i].core_idx;
        self.publish_core(ci)?;
        Ok(ev)
    }
}

/// A failure's times from the old device's down flag (TSC stamps) into the record.
fn fault_times(rec: &mut SwitchRecord, f: &vnic_dataplane::HealthSnapshot) {
    if f.down_at == 0 {
        return;
    }
    let now = vnic_dataplane::eal::rdtsc();
    let us = |t: u64| crate::health::ticks_to(t).as_micros() as u64;
    let since = |t: u64| (t != 0).then(|| us(t.saturating_sub(f.down_at)));
    rec.detected_by = f.by.map(|d| d.as_str().to_string());
    let unix_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    rec.failed_at_unix_us = Some(unix_us.saturating_sub(us(now.saturating_sub(f.down_at))));
    rec.reroute_us = since(f.rerouted_at);
    rec.first_frame_us = since(f.first_tx_at);
    rec.official_us = since(now);
}
