//! Health checks on their own tick: link state of every started device, tx progress of the
//! active one, restarts of failed memif clients, the arbiter's decisions, peer announcements.
use crate::appliance::Appliance;
use crate::arbiter::{self, Decision, Reason};
use crate::vnic::BackingState;
use std::time::{Duration, Instant};
use vnic_dataplane::{Detector, HealthSnapshot};

/// Why a device whose down flag is set failed, by who saw it.
fn flagged(f: &HealthSnapshot) -> &'static str {
    f.by.map_or("failed", flagged_as)
}

fn flagged_as(by: Detector) -> &'static str {
    match by {
        Detector::LinkEvent => "link down (interrupt)",
        Detector::Removal => "device removed",
        Detector::DataCore => "tx refused (data core)",
        Detector::PeerStalled => "tx stalled: peer stopped draining (data core)",
        Detector::HealthCheck => "failed",
    }
}

/// TSC ticks as a duration.
pub(crate) fn ticks_to(t: u64) -> Duration {
    let hz = vnic_dataplane::eal::tsc_hz().max(1);
    Duration::from_nanos((t as u128 * 1_000_000_000 / hz as u128) as u64)
}

impl Appliance {
    /// Health checks and the arbiter, run by the control thread every few milliseconds: link
    /// state of every started device, tx progress of the active one, restart of failed memif
    /// clients, switches, fail-back and peer announcements. Returns what clients should hear.
    pub fn health_tick(&mut self) {
        self.open_endpoints();
        self.expire_incoming();
        let now = Instant::now();
        let mut dirty = vec![false; self.cores.len()];
        for i in 0..self.vnics.len() {
            let v = &mut self.vnics[i];
            let since_last = now.duration_since(v.last_check);
            v.last_check = now;
            let mut changed = false;
            let active = v.active;
            let hold_down = v.policy.hold_down;
            // 1. Per-device health.
            for (k, b) in v.backing.iter_mut().enumerate() {
                let Some(port) = b.port.as_ref() else {
                    continue;
                };
                let (link, err) = match port.link() {
                    Ok(l) => (l.up, None),
                    Err(e) => (false, Some(e)),
                };
                // Set by an interrupt callback or a data core (fast reroute) since the last
                // tick: a failure as much as what this check sees itself.
                let flag = port.health().snapshot();
                if let Some(e) = err {
                    changed |= b.fail(&format!("device error: {e}"), now);
                }
                if link != b.link_up {
                    b.link_up = link;
                    b.healthy_since = link.then_some(now);
                    b.ever_up |= link;
                    if link {
                        b.redials = 0;
                    }
                    changed = true;
                }
                match &b.state {
                    BackingState::Active | BackingState::Standby if flag.down_at != 0 => {
                        changed |= b.fail(flagged(&flag), now);
                    }
                    BackingState::Active | BackingState::Standby if !link && b.ever_up => {
                        changed |= b.fail("link down", now);
                    }
                    BackingState::Failed(_)
                        if link
                            && !flag.removed
                            && (!b.tx_failure
                                || b.failed_at
                                    .is_none_or(|t| now.duration_since(t) >= hold_down)) =>
                    {
                        // The active device coming back carries on as active (a vNIC whose
                        // only device recovered); any other rejoins as standby. One failed by
                        // a refusing tx queue has only time to show it recovered.
                        b.state = if active == Some(k) {
                            BackingState::Active
                        } else {
                            BackingState::Standby
                        };
                        if let Some(p) = &b.port {
                            p.health().clear();
                            p.reset_stalls();
                        }
                        changed = true;
                    }
                    BackingState::Failed(_)
                        if b.cfg.devargs.starts_with("net_memif") && now >= b.next_redial =>
                    {
                        // A memif client does not redial a restarted server by itself; a restart
                        // does. The device is in no table while failed, so no core polls it. The
                        // interval backs off (0.5, 1, 2, 4 s) so a slow handshake is not cut short.
                        b.redials = b.redials.saturating_add(1);
                        let wait = Duration::from_millis(500 << b.redials.min(4).saturating_sub(1));
                        b.next_redial = now + wait;
                        if b.port.as_mut().is_some_and(|p| p.restart().is_ok()) {
                            tracing::debug!(backing = %b.cfg.name, "restarted, waiting for link");
                        }
                    }
                    _ => {}
                }
            }
            // 2. tx progress of the active device: every burst refused for tx_stall while up
            // (the data core's own, shorter refuse window usually fires first), or its
            // consumer seen stopped by the data core for as long (which sends on the backup
            // meanwhile, and goes back by itself if the consumer was only off its CPU).
            if let Some(a) = v.active {
                let stall = v.policy.tx_stall;
                let b = &mut v.backing[a];
                if let (true, Some(p)) = (b.usable(), b.port.as_ref()) {
                    let refused = p.health().snapshot().refused_for();
                    let stalled = p.stalled_since();
                    let still_for = || vnic_dataplane::eal::rdtsc().saturating_sub(stalled);
                    if refused > 0 && ticks_to(refused) >= stall {
                        changed |= b.fail("tx stalled", now);
                    } else if stalled != 0 && ticks_to(still_for()) >= stall {
                        changed |= b.fail(flagged_as(Detector::PeerStalled), now);
                    }
                }
            }
            if self.arbitrate(i, now, since_last) {
                // switch() published the whole core already.
                dirty[self.vnics[i].core_idx] = false;
                continue;
            }
            // 4. Announcements in flight.
            let v = &mut self.vnics[i];
            v.announce_round(now);
            if v.announce_until.is_some_and(|t| now >= t) {
                v.announce_until = None;
                changed = true;
            }
            if changed {
                dirty[v.core_idx] = true;
            }
        }
        let mut published = true;
        for (ci, d) in dirty.into_iter().enumerate() {
            if d {
                if let Err(e) = self.publish_core(ci) {
                    tracing::error!("health: {e}");
                    published = false;
                }
            }
        }
        // A removed device may still be in a table the core kept: release it only once every
        // core took the tables that no longer name it.
        if published {
            self.release_removed();
        }
        self.note_links();
    }

    /// The arbiter's step for vNIC `i` (after health checks or a data core's reroute): switch
    /// away from a failed active device, fail back, or stay. True if it switched (and so
    /// published the vNIC's core).
    pub(crate) fn arbitrate(&mut self, i: usize, now: Instant, since_last: Duration) -> bool {
        let v = &mut self.vnics[i];
        let failure = v.active.and_then(|a| match &v.backing[a].state {
            BackingState::Failed(w) => Some(w.clone()),
            _ => None,
        });
        while v
            .failbacks
            .front()
            .is_some_and(|t| now.duration_since(*t) > v.policy.flap_window)
        {
            v.failbacks.pop_front();
        }
        let cands = v.candidates();
        let decision = arbiter::decide(
            &cands,
            v.active,
            failure.as_deref(),
            &v.policy,
            now,
            v.failbacks.len(),
        );
        v.flap_suppressed = decision == Decision::StaySuppressed;
        // Otherwise `active` keeps pointing at a failed device so its name stays in status; it
        // is out of the table because it is not usable, and clients hear of it as a LINK event
        // (`note_links`).
        let Decision::Switch { to, reason } = decision else {
            return false;
        };
        if reason == Reason::FailBack {
            v.failbacks.push_back(now);
        }
        // A refused switch was logged and left the model as it was: the next tick decides
        // again.
        self.switch(i, to, reason, since_last.as_micros() as u64)
            .is_ok()
    }

    /// A data core moved a vNIC's transmission to its backup: make it official now (the
    /// device failed, the arbiter switches: new table, announcements, the client's push)
    /// rather than at the next health tick.
    pub(crate) fn on_dataplane_events(&mut self) {
        let mut seen = Vec::new();
        for c in &self.cores {
            let (evs, _dropped) = c.worker.take_events();
            seen.extend(evs);
        }
        let now = Instant::now();
        for ev in seen {
            let (from, official) = match ev {
                vnic_dataplane::DpEvent::Rerouted { from, .. } => (from, true),
                vnic_dataplane::DpEvent::Stalled { from, .. } => (from, false),
            };
            let found = self.vnics.iter().enumerate().find_map(|(i, v)| {
                v.backing
                    .iter()
                    .position(|b| b.port.as_ref().is_some_and(|p| p.id() == from))
                    .map(|k| (i, k))
            });
            let Some((i, k)) = found else { continue };
            let v = &mut self.vnics[i];
            let b = &mut v.backing[k];
            if !official {
                // Tentative: not a failure until the link goes down or the stall lasts
                // (health_tick's step 2).
                // Debug only: a peer that shares a busy CPU stands still for every slice it
                // waits, and each is one of these.
                b.tx_stalls += 1;
                tracing::debug!(vnic = %v.name, backing = %b.cfg.name,
                    "its peer stopped draining: the data core sends on the backup until it moves again");
                continue;
            }
            let why = b
                .port
                .as_ref()
                .map(|p| flagged(&p.health().snapshot()))
                .unwrap_or("failed");
            b.fail(why, now);
            self.arbitrate(i, now, Duration::ZERO);
        }
    }

    /// Close and remove the ports of removed devices. Only called after the tables that no longer
    /// name them have been adopted (publish waits for that).
    pub(crate) fn release_removed(&mut self) {
        for v in &mut self.vnics {
            for b in &mut v.backing {
                if b.release {
                    if let Some(p) = b.port.take() {
                        tracing::warn!(vnic = %v.name, backing = %b.cfg.name, "releasing removed device");
                        drop(p);
                    }
                }
            }
        }
    }
}
