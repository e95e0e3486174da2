//! The destination's half of a move: build the arriving vNIC on this appliance's own devices
//! (chosen by port label), keep it `incoming` until cutover, then forward and announce; release
//! it if the client does not arrive or the source goes away first.
use super::{Departed, MobilityError, Moving, Phase, Prepare, Prepared, Record};
use crate::appliance::{Appliance, Event};
use crate::config::{self, BackingConfig, ClientConfig, Config, MacAddr, VnicConfig};
use crate::vnic::{build_vnic, listens, precheck_listen_path};
use std::time::{Duration, Instant};
use vnic_proto::mobility::{BackingMap, Cutover, Direction, Migration};

fn cannot(why: impl Into<String>) -> MobilityError {
    MobilityError::CannotTake(why.into())
}

impl Appliance {
    /// The spares no vNIC uses now.
    fn free_spares(&self) -> Vec<config::SpareConfig> {
        let raw = self.config.raw();
        raw.mobility
            .spares
            .iter()
            .filter(|s| {
                !raw.vnics.iter().any(|v| {
                    v.backing
                        .iter()
                        .any(|b| config::device_name(&b.devargs) == config::device_name(&s.devargs))
                })
            })
            .cloned()
            .collect()
    }

    /// The devices the arriving vNIC gets here: its own, if it is one of ours coming back;
    /// else a free spare per backing device, on the same port label (or the mapped one).
    fn pick_devices(
        &self,
        vc: &VnicConfig,
        map: &std::collections::BTreeMap<String, String>,
        home: Option<&Departed>,
    ) -> Result<(Vec<BackingConfig>, Vec<BackingMap>), MobilityError> {
        let mut src = vc.backing.clone();
        src.sort_by_key(|b| b.priority);
        if let Some(h) = home {
            let maps = src
                .iter()
                .zip(h.cfg.backing.iter())
                .map(|(s, d)| BackingMap {
                    from: s.name.clone(),
                    from_label: s.port_label.clone(),
                    to: d.name.clone(),
                    to_label: d.port_label.clone(),
                    priority: d.priority,
                })
                .collect();
            return Ok((h.cfg.backing.clone(), maps));
        }
        for k in map.keys() {
            if !vc.backing.iter().any(|b| &b.port_label == k) {
                return Err(cannot(format!(
                    "--map names port label {k:?}, which no backing device of vNIC {:?} is on (its labels: {})",
                    vc.name,
                    vc.backing
                        .iter()
                        .map(|b| b.port_label.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let mut free = self.free_spares();
        let mut out = Vec::new();
        let mut maps = Vec::new();
        for b in &src {
            let label = map.get(&b.port_label).unwrap_or(&b.port_label);
            let Some(pos) = free.iter().position(|s| &s.port_label == label) else {
                return Err(cannot(format!(
                    "no free spare on port label {label:?} for backing device {:?} (port label {:?}): mobility.spares has {} free",
                    b.name,
                    b.port_label,
                    if free.is_empty() {
                        "none".to_string()
                    } else {
                        free.iter()
                            .map(|s| format!("{} on {:?}", s.name, s.port_label))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )));
            };
            let s = free.remove(pos);
            maps.push(BackingMap {
                from: b.name.clone(),
                from_label: b.port_label.clone(),
                to: s.name.clone(),
                to_label: s.port_label.clone(),
                priority: b.priority,
            });
            out.push(BackingConfig {
                name: s.name,
                devargs: s.devargs,
                priority: b.priority,
                port_label: s.port_label,
                program_mac: s.program_mac,
            });
        }
        Ok((out, maps))
    }

    /// The client side the arriving vNIC gets here: the same transport, on this appliance's
    /// socket directory (or its own socket, for one of ours coming back).
    fn client_here(&self, c: &ClientConfig, name: &str) -> Result<ClientConfig, MobilityError> {
        let dir = || {
            self.config
                .raw()
                .mobility
                .socket_dir
                .clone()
                .ok_or_else(|| {
                    cannot(format!(
                        "vNIC {name:?} has a {} client but mobility.socket_dir is not set here",
                        c.transport()
                    ))
                })
        };
        Ok(match c {
            ClientConfig::Shm => ClientConfig::Shm,
            ClientConfig::VhostUser { mode, .. } => ClientConfig::VhostUser {
                socket: format!("{}/{name}.vhost", dir()?),
                mode: *mode,
            },
            ClientConfig::Memif { id, secret, .. } => ClientConfig::Memif {
                socket: format!("{}/{name}.memif", dir()?),
                id: *id,
                secret: secret.clone(),
            },
        })
    }

    /// Build an arriving vNIC. Refused with the reason when this appliance cannot take it (and
    /// then nothing here changed). A dry run builds it and releases it again.
    pub(crate) fn prepare_incoming(
        &mut self,
        p: Prepare,
        peer: &str,
    ) -> Result<Prepared, MobilityError> {
        let mut vc: VnicConfig = serde_json::from_value(p.export.config.clone())
            .map_err(|e| cannot(format!("the exported vNIC is not a vNIC config: {e}")))?;
        let name = vc.name.clone();
        if self.vnics.iter().any(|v| v.name == name) {
            return Err(cannot(format!("a vNIC named {name:?} already runs here")));
        }
        if self
            .migration_record(&name)
            .is_some_and(|r| !r.m.phase.is_final())
        {
            return Err(MobilityError::Phase(format!(
                "vNIC {name:?} is in a migration here already"
            )));
        }
        let mac: MacAddr = vc
            .mac
            .parse()
            .map_err(|e| cannot(format!("the exported MAC {:?}: {e}", vc.mac)))?;
        if let Some(v) = self.vnics.iter().find(|v| v.mac == mac) {
            return Err(cannot(format!(
                "MAC {mac} is already used here by vNIC {:?}",
                v.name
            )));
        }
        let home_at = self.departed.iter().position(|d| d.cfg.name == name);
        let home = home_at.map(|h| self.departed[h].clone());
        let (backing, maps) = self.pick_devices(&vc, &p.map, home.as_ref())?;
        vc.backing = backing;
        vc.client = match &home {
            Some(h) => h.cfg.client.clone(),
            None => self.client_here(&vc.client, &name)?,
        };
        vc.data_core = home.as_ref().and_then(|h| h.cfg.data_core);
        let mut raw = self.config.raw().clone();
        raw.vnics.push(vc.clone());
        let cfg: Config = raw.validate().map_err(|e| {
            cannot(format!(
                "vNIC {name:?} does not fit this appliance's config:\n{e}"
            ))
        })?;
        crate::eal_options::check_build_limits(&cfg).map_err(|e| cannot(e.to_string()))?;
        if let Some(path) = listens(&vc.client) {
            precheck_listen_path(path).map_err(|e| cannot(e.to_string()))?;
        }
        let i = cfg.vnics().len() - 1;
        let slot = self
            .free_slot(&[])
            .ok_or_else(|| cannot(format!("all {} vNIC slots in use", config::MAX_VNICS)))?;
        self.incarnations += 1;
        let mut v = build_vnic(
            &cfg.vnics()[i],
            cfg.mac(i),
            cfg.vnic_core_index(i),
            slot,
            self.incarnations,
        )
        .map_err(|e| cannot(e.to_string()))?;
        if let Some(e) = crate::reload::unopened(&v) {
            return Err(cannot(e.to_string()));
        }
        let timeout = Duration::from_millis(cfg.raw().mobility.arrive_timeout_ms as u64);
        let prepared = Prepared {
            vnic: name.clone(),
            dry_run: p.dry_run,
            backing: maps.clone(),
            control_socket: cfg.raw().control_socket.display().to_string(),
            client_socket: vc.client.socket().map(str::to_string),
            deadline_ms: timeout.as_millis() as u64,
        };
        let mut rec = Record::begin(&name, Direction::In, peer, vc.client.transport(), p.dry_run);
        rec.m.backing = maps;
        rec.m.client_socket = prepared.client_socket.clone();
        if p.dry_run {
            // Everything was built: it can be taken. Release it.
            drop(v);
            rec.enter(Phase::Released);
            self.push_record(rec);
            return Ok(prepared);
        }
        v.stats_base = self.slot_stats(slot);
        v.token = p.export.token.clone();
        v.epoch = p.export.epoch;
        v.carried = p.export.counters;
        v.moving = Moving::In {
            deadline: Instant::now() + timeout,
        };
        let pc = v.client_port_config();
        v.open_endpoint(&pc).map_err(|e| cannot(e.to_string()))?;
        self.vnics.push(v);
        self.config = cfg;
        match home_at {
            Some(h) => {
                rec.came_home = Some(self.departed.remove(h));
            }
            None => self.adopted.push(name),
        }
        rec.enter(Phase::Incoming);
        self.push_record(rec);
        Ok(prepared)
    }

    /// The destination's view of an arriving vNIC (has its client arrived?).
    pub fn incoming_status(&mut self, vnic: &str) -> Result<Migration, MobilityError> {
        let arrived = self
            .vnics
            .iter()
            .find(|v| v.name == vnic)
            .is_some_and(|v| v.attach.is_some());
        let r = self
            .record_mut(vnic)
            .filter(|r| r.m.direction == Direction::In)
            .ok_or_else(|| MobilityError::Phase(format!("vNIC {vnic:?} is not arriving here")))?;
        if r.m.phase == Phase::Incoming {
            r.m.client_arrived = arrived;
        }
        Ok(r.m.clone())
    }

    /// Cutover: the source has stopped; forward and announce (RARP, gratuitous ARP) at once.
    pub(crate) fn cutover_incoming(&mut self, c: Cutover) -> Result<Migration, MobilityError> {
        let i = self.moving_index(&c.vnic)?;
        if !self.is_incoming(i) {
            return Err(MobilityError::Phase(format!(
                "vNIC {:?} is not waiting for a cutover here",
                c.vnic
            )));
        }
        if let Some(r) = self.record_mut(&c.vnic) {
            r.enter(Phase::Cutover);
        }
        let now = Instant::now();
        let v = &mut self.vnics[i];
        v.carried = c.counters;
        v.epoch = v.epoch.max(c.vnic_epoch) + 1;
        v.moving = Moving::No;
        v.begin_announce(now);
        let ci = v.core_idx;
        if let Err(e) = self.publish_core(ci) {
            self.vnics[i].moving = Moving::In {
                deadline: now + Duration::from_secs(1),
            };
            let why = format!("cutover: {e}");
            if let Some(r) = self.record_mut(&c.vnic) {
                r.fail(&why);
            }
            return Err(MobilityError::Failed(why));
        }
        // The first round now, not at the next health tick: the network learns at once.
        self.vnics[i].announce_round(now);
        let arrived = self.vnics[i].attach.is_some();
        let r = self.current(&c.vnic)?;
        r.m.client_arrived = arrived;
        r.enter(Phase::Done);
        Ok(r.m.clone())
    }

    /// Release an arriving vNIC before cutover (the source gave up, went away, or the client
    /// never arrived): its client is told, its devices and memory go; a vNIC of ours that was
    /// coming back is a departed one again.
    pub(crate) fn abort_incoming(
        &mut self,
        vnic: &str,
        why: &str,
    ) -> Result<Migration, MobilityError> {
        let i = self.moving_index(vnic)?;
        if !self.is_incoming(i) {
            return Err(MobilityError::Phase(format!(
                "vNIC {vnic:?} is not arriving here (only an arriving vNIC can be aborted)"
            )));
        }
        if self.vnics[i].attach.is_some() {
            self.emit(Event::Withdrawn { vnic: vnic.into() });
            let _ = self.detach(vnic);
        }
        let v = self.vnics.remove(i);
        drop(v);
        self.forget_config(vnic);
        self.adopted.retain(|n| n != vnic);
        let r = self.current(vnic)?;
        r.fail(why);
        let back = r.came_home.take();
        let m = r.m.clone();
        if let Some(d) = back {
            self.departed.push(d);
        }
        Ok(m)
    }

    /// Release arriving vNICs whose client did not come in time (health tick).
    pub(crate) fn expire_incoming(&mut self) {
        let now = Instant::now();
        let late: Vec<String> = self
            .vnics
            .iter()
            .filter(|v| {
                v.attach.is_none() && matches!(v.moving, Moving::In { deadline } if now >= deadline)
            })
            .map(|v| v.name.clone())
            .collect();
        let ms = self.config.raw().mobility.arrive_timeout_ms;
        for vnic in late {
            let why = format!("the client did not arrive within {ms} ms: released");
            let _ = self.abort_incoming(&vnic, &why);
        }
    }
}
