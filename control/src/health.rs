//! Health checks on their own tick: link state of every started device, tx progress of the
//! active one, restarts of failed memif clients, the arbiter's decisions, peer announcements.
use crate::appliance::Appliance;
use crate::arbiter::{self, Decision, Reason};
use crate::vnic::BackingState;
use std::time::{Duration, Instant};

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
            let stats = self.vnic_stats(i);
            let v = &mut self.vnics[i];
            let since_last = now.duration_since(v.last_check);
            v.last_check = now;
            let mut changed = false;
            let active = v.active;
            // 1. Per-device health.
            for (k, b) in v.backing.iter_mut().enumerate() {
                let Some(port) = b.port.as_mut() else {
                    continue;
                };
                let link = match port.link() {
                    Ok(l) => l.up,
                    Err(e) => {
                        if !matches!(b.state, BackingState::Failed(_)) {
                            b.state = BackingState::Failed(format!("device error: {e}"));
                            b.last_failure = Some(format!("device error: {e}"));
                            changed = true;
                        }
                        false
                    }
                };
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
                    BackingState::Active | BackingState::Standby if !link && b.ever_up => {
                        b.state = BackingState::Failed("link down".into());
                        b.last_failure = Some("link down".into());
                        changed = true;
                    }
                    BackingState::Failed(_) if link => {
                        // The active device coming back carries on as active (a vNIC whose
                        // only device recovered); any other rejoins as standby.
                        b.state = if active == Some(k) {
                            BackingState::Active
                        } else {
                            BackingState::Standby
                        };
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
                        if port.restart().is_ok() {
                            tracing::debug!(backing = %b.cfg.name, "restarted, waiting for link");
                        }
                    }
                    _ => {}
                }
            }
            // 2. tx progress of the active device: every burst refused for tx_stall while up.
            let mut failure: Option<String> = None;
            if let Some(a) = v.active {
                if v.backing[a].usable() {
                    let (p0, d0) = v.tx_seen;
                    if stats.tx_drops > d0 && stats.tx_packets == p0 {
                        let t = *v.stalled_since.get_or_insert(now);
                        if now.duration_since(t) >= v.policy.tx_stall {
                            let b = &mut v.backing[a];
                            b.state = BackingState::Failed("tx stalled".into());
                            b.last_failure = Some("tx stalled".into());
                            changed = true;
                        }
                    } else if stats.tx_packets > p0 {
                        v.stalled_since = None;
                    }
                }
                if let BackingState::Failed(w) = &v.backing[a].state {
                    failure = Some(w.clone());
                }
            }
            v.tx_seen = (stats.tx_packets, stats.tx_drops);
            // 3. The arbiter.
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
            // Otherwise `active` keeps pointing at a failed device so its name stays in status;
            // it is out of the table because it is not usable, and clients hear of it as a LINK
            // event (`note_links`).
            if let Decision::Switch { to, reason } = decision {
                if reason == Reason::FailBack {
                    v.failbacks.push_back(now);
                }
                let detect = since_last.as_micros() as u64;
                let ci = v.core_idx;
                // A refused switch was logged and left the model as it was: the next tick
                // decides again.
                if self.switch(i, to, reason, detect).is_ok() {
                    dirty[ci] = false; // switch() published the whole core already
                }
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
