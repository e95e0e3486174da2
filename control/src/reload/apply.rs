//! Applying a reload in two phases: prepare (build every new resource; on error release them,
//! nothing running changed) and commit (put them in service, detach what goes away).
use super::{plan, Reload, Step};
use crate::appliance::{Appliance, StartError};
use crate::config::{self, Config, ConfigErrors};
use crate::publish::PublishError;
use crate::vnic::{
    build_backing, build_vnic, ipv4s, listens, policy, port_config, precheck_listen_path, Backing,
    Vnic,
};
use std::time::Instant;
use vnic_dataplane::VnicSlot;

/// Why a reload was refused or did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadError {
    /// Nothing running changed.
    #[error("invalid config:\n{0}")]
    Config(ConfigErrors),
    /// Nothing running changed (a recreated vNIC that could not be built is restored or lost,
    /// as the cause says).
    #[error("step \"{step}\" failed: {cause}; nothing was changed")]
    Step { step: String, cause: Box<StepError> },
    /// The new config is in the model, but a data core still runs its old table.
    #[error("the new config was applied but not put in service: {0}")]
    Publish(#[from] PublishError),
}

/// Why one step of a reload could not be carried out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StepError {
    #[error("{what} {name:?} is not in the {config} config")]
    Missing {
        what: &'static str,
        name: String,
        config: &'static str,
    },
    #[error("all {0} vNIC slots in use")]
    NoSlot(usize),
    #[error(transparent)]
    Build(#[from] StartError),
    #[error("backing device {name}: {err}")]
    Backing {
        name: String,
        #[source]
        err: vnic_dataplane::Error,
    },
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Client(#[from] crate::vnic::EndpointError),
    #[error("{err}; the vNIC was {}", if *.restored { "restored as it was" } else { "lost: reload again" })]
    Recreate { err: Box<StepError>, restored: bool },
}

/// A backing device that could not even be probed: a bad config, not a fault.
pub(crate) fn unopened(v: &Vnic) -> Option<StepError> {
    v.backing
        .iter()
        .find(|b| b.port.is_none())
        .map(backing_error)
}

fn backing_error(b: &Backing) -> StepError {
    StepError::Backing {
        name: b.cfg.name.clone(),
        err: b
            .bring_up_error
            .clone()
            .unwrap_or(vnic_dataplane::Error::NoPort {
                devargs: b.cfg.devargs.clone(),
            }),
    }
}

/// A reload whose new resources exist but are not in service yet. Dropping it releases them.
pub struct PreparedReload {
    config: Config,
    steps: Vec<Step>,
    new_vnics: Vec<Vnic>,
    new_backing: Vec<(String, Backing)>,
    started: Instant,
}

impl PreparedReload {
    /// vNICs whose clients lose their attachment (removed or recreated).
    pub fn affected(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::RemoveVnic { vnic } | Step::RecreateVnic { vnic, .. } => Some(vnic.clone()),
                _ => None,
            })
            .collect()
    }
    /// The plan.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }
}

impl StepError {
    fn missing(what: &'static str, name: &str, config: &'static str) -> StepError {
        StepError::Missing {
            what,
            name: name.into(),
            config,
        }
    }
}

impl Appliance {
    /// The reload history.
    pub fn reloads(&self) -> Vec<Reload> {
        self.reloads.iter().cloned().collect()
    }

    /// The current config generation.
    pub fn config_generation(&self) -> u64 {
        self.config_generation
    }

    /// Plan only (for `config diff`).
    pub fn plan_reload(&self, new: &Config) -> Result<Vec<Step>, ReloadError> {
        let new = self.with_moves(new.clone()).map_err(ReloadError::Config)?;
        plan(&self.config, &new).map_err(ReloadError::Config)
    }

    /// A config file as it applies here after moves: vNICs of ours that moved away stay away
    /// (the file still names them), vNICs that moved here stay (the file does not name them;
    /// it may not name them either).
    pub(crate) fn with_moves(&self, new: Config) -> Result<Config, ConfigErrors> {
        if self.departed.is_empty() && self.adopted.is_empty() {
            return Ok(new);
        }
        let mut raw = new.raw().clone();
        raw.vnics
            .retain(|v| !self.departed.iter().any(|d| d.cfg.name == v.name));
        for name in &self.adopted {
            if let Some(i) = raw.vnics.iter().position(|v| &v.name == name) {
                return Err(ConfigErrors::one(
                    format!("vnics[{i}].name"),
                    format!(
                        "vNIC {name:?} moved here from another appliance and runs here: the config cannot name it too (move it away first)"
                    ),
                ));
            }
            if let Some(vc) = self.config.raw().vnics.iter().find(|v| &v.name == name) {
                raw.vnics.push(vc.clone());
            }
        }
        raw.validate()
    }

    pub(crate) fn free_slot(&self, taken: &[VnicSlot]) -> Option<VnicSlot> {
        (0..config::MAX_VNICS as u32)
            .map(VnicSlot)
            .find(|s| !self.vnics.iter().any(|v| v.slot == *s) && !taken.contains(s))
    }

    /// Prepare, tell the frontends which vNICs go away or are rebuilt (`Event::Withdrawn`: their
    /// clients' sessions end), commit. A refused reload is recorded and changes nothing.
    pub(crate) fn reload(&mut self, new: Config, source: &str) -> Result<Reload, ReloadError> {
        let started = Instant::now();
        let prepared = match self.prepare_reload(new) {
            Ok(p) => p,
            Err(e) => {
                self.record_failed_reload(source, &e, started);
                return Err(e);
            }
        };
        for vnic in prepared.affected() {
            self.emit(crate::appliance::Event::Withdrawn { vnic });
        }
        self.commit_reload(prepared, source)
    }

    /// Phase 1: plan and build every new resource. On error everything built is released and the
    /// running appliance is untouched.
    pub(crate) fn prepare_reload(&mut self, new: Config) -> Result<PreparedReload, ReloadError> {
        let started = Instant::now();
        let new = self.with_moves(new).map_err(ReloadError::Config)?;
        let steps = plan(&self.config, &new).map_err(ReloadError::Config)?;
        let mut new_vnics = Vec::new();
        let mut new_backing = Vec::new();
        let mut taken = Vec::new();
        for st in &steps {
            let fail = |cause: StepError| ReloadError::Step {
                step: st.to_string(),
                cause: Box::new(cause),
            };
            // A client socket vnicd will listen on: its directory must exist and nothing but a
            // socket may be there (one of ours, or a stale one).
            if let Step::AddVnic { vnic } | Step::RecreateVnic { vnic, .. } = st {
                if let Some(vc) = new.raw().vnics.iter().find(|v| &v.name == vnic) {
                    if let Some(path) = listens(&vc.client) {
                        precheck_listen_path(path).map_err(|e| fail(e.into()))?;
                    }
                }
            }
            match st {
                Step::AddVnic { vnic } => {
                    let i = new
                        .raw()
                        .vnics
                        .iter()
                        .position(|v| &v.name == vnic)
                        .ok_or_else(|| fail(StepError::missing("vNIC", vnic, "new")))?;
                    let vc = &new.raw().vnics[i];
                    let core_idx = new.vnic_core_index(i);
                    let slot = self
                        .free_slot(&taken)
                        .ok_or_else(|| fail(StepError::NoSlot(config::MAX_VNICS)))?;
                    self.incarnations += 1;
                    let mut v = build_vnic(vc, new.mac(i), core_idx, slot, self.incarnations)
                        .map_err(|e| fail(e.into()))?;
                    if let Some(e) = unopened(&v) {
                        return Err(fail(e));
                    }
                    v.stats_base = self.slot_stats(slot);
                    taken.push(slot);
                    new_vnics.push(v);
                }
                Step::AddBacking { vnic, backing } => {
                    let vc = new
                        .raw()
                        .vnics
                        .iter()
                        .find(|v| &v.name == vnic)
                        .ok_or_else(|| fail(StepError::missing("vNIC", vnic, "new")))?;
                    let bc = vc
                        .backing
                        .iter()
                        .find(|b| &b.name == backing)
                        .ok_or_else(|| {
                            fail(StepError::missing("backing device", backing, "new"))
                        })?;
                    let running = self
                        .vnics
                        .iter()
                        .find(|v| &v.name == vnic)
                        .ok_or_else(|| fail(StepError::missing("vNIC", vnic, "running")))?;
                    let b = build_backing(vnic, bc, &port_config(vc), &running.pool, running.mac);
                    if b.port.is_none() {
                        return Err(fail(backing_error(&b)));
                    }
                    new_backing.push((vnic.clone(), b));
                }
                _ => {}
            }
        }
        Ok(PreparedReload {
            config: new,
            steps,
            new_vnics,
            new_backing,
            started,
        })
    }

    /// Phase 2: put the prepared reload in service. Removed and recreated vNICs are detached
    /// (their clients should have been told already), moved vNICs change cores without loss,
    /// everything else is updated in place. Returns the history entry.
    pub(crate) fn commit_reload(
        &mut self,
        p: PreparedReload,
        source: &str,
    ) -> Result<Reload, ReloadError> {
        let PreparedReload {
            config: new,
            steps,
            mut new_vnics,
            mut new_backing,
            started,
        } = p;
        let mut dropped_vnics = Vec::new();
        let mut dropped_ports = Vec::new();
        // 1. vNICs that go away (or are replaced): detach, take out of the list.
        for st in &steps {
            if let Step::RemoveVnic { vnic } | Step::RecreateVnic { vnic, .. } = st {
                if self
                    .vnics
                    .iter()
                    .any(|v| &v.name == vnic && v.attach.is_some())
                {
                    let _ = self.detach(vnic);
                }
                if let Some(i) = self.vnics.iter().position(|v| &v.name == vnic) {
                    dropped_vnics.push(self.vnics.remove(i));
                }
            }
        }
        // 2. In-place changes.
        for st in &steps {
            match st {
                Step::MoveVnic { vnic, to_core, .. } => {
                    if let Some(v) = self.vnics.iter_mut().find(|v| &v.name == vnic) {
                        v.parked = true;
                        v.core_idx = new
                            .data_cores()
                            .iter()
                            .position(|d| d.core == *to_core)
                            .unwrap_or(0);
                    }
                }
                Step::RemoveBacking { vnic, backing } => {
                    let Some(i) = self.vnics.iter().position(|v| &v.name == vnic) else {
                        continue;
                    };
                    let Some(k) = self.vnics[i]
                        .backing
                        .iter()
                        .position(|b| &b.cfg.name == backing)
                    else {
                        continue;
                    };
                    if self.vnics[i].active == Some(k) {
                        let _ = self.planned(vnic, None, &format!("{backing} removed by a reload"));
                    }
                    let v = &mut self.vnics[i];
                    let b = v.backing.remove(k);
                    v.active = match v.active {
                        Some(a) if a == k => None,
                        Some(a) if a > k => Some(a - 1),
                        a => a,
                    };
                    dropped_ports.extend(b.port);
                }
                Step::AddBacking { vnic, backing } => {
                    if let Some(pos) = new_backing
                        .iter()
                        .position(|(v, b)| v == vnic && &b.cfg.name == backing)
                    {
                        let (_, b) = new_backing.remove(pos);
                        if let Some(v) = self.vnics.iter_mut().find(|v| &v.name == vnic) {
                            v.backing.push(b);
                        }
                    }
                }
                Step::UpdateVnic { vnic, .. } => {
                    let (Some(v), Some(vc)) = (
                        self.vnics.iter_mut().find(|v| &v.name == vnic),
                        new.raw().vnics.iter().find(|v| &v.name == vnic),
                    ) else {
                        continue;
                    };
                    v.allowed_uids = vc.allowed_uids.clone();
                    v.allowed_gids = vc.allowed_gids.clone();
                    v.allow_spoofing = vc.allow_spoofing;
                    v.policy = policy(vc);
                    v.ipv4 = ipv4s(vc);
                    for b in &mut v.backing {
                        if let Some(bc) = vc
                            .backing
                            .iter()
                            .find(|c| c.name == b.cfg.name && c.devargs == b.cfg.devargs)
                        {
                            b.cfg = bc.clone();
                        }
                    }
                }
                _ => {}
            }
        }
        // Backing lists follow the config order (priority ties break on it).
        for v in &mut self.vnics {
            if let Some(vc) = new.raw().vnics.iter().find(|c| c.name == v.name) {
                let active_name = v.active.map(|a| v.backing[a].cfg.name.clone());
                v.backing.sort_by_key(|b| {
                    vc.backing
                        .iter()
                        .position(|c| c.name == b.cfg.name)
                        .unwrap_or(usize::MAX)
                });
                v.active = active_name.and_then(|n| v.backing.iter().position(|b| b.cfg.name == n));
            }
        }
        // 3. New vNICs.
        self.vnics.append(&mut new_vnics);
        // 4. Publish: first every core without the moving vNICs (no two cores ever poll one
        //    queue), then with them on their new cores. Only then release what went away.
        let mut unpublished: Option<PublishError> = None;
        for ci in 0..self.cores.len() {
            if let Err(e) = self.publish_core(ci) {
                tracing::error!("reload: {e}");
                unpublished.get_or_insert(e);
            }
        }
        if self.vnics.iter().any(|v| v.parked) {
            let cores: Vec<usize> = self
                .vnics
                .iter()
                .filter(|v| v.parked)
                .map(|v| v.core_idx)
                .collect();
            for v in &mut self.vnics {
                v.parked = false;
            }
            for ci in cores {
                if let Err(e) = self.publish_core(ci) {
                    tracing::error!("reload: {e}");
                    unpublished.get_or_insert(e);
                }
            }
        }
        for v in &mut dropped_vnics {
            v.announce_ring.drain();
        }
        let old_cfg = self.config.clone();
        let recreated: Vec<String> = dropped_vnics
            .iter()
            .filter(|v| {
                steps
                    .iter()
                    .any(|s| matches!(s, Step::RecreateVnic { vnic, .. } if *vnic == v.name))
            })
            .map(|v| v.name.clone())
            .collect();
        drop(dropped_vnics);
        drop(dropped_ports);
        // Client sides of new vNICs open now that those of the vNICs gone have closed (a new
        // vNIC may take over an old one's socket). One that cannot open is retried by health.
        for v in &mut self.vnics {
            if matches!(
                v.endpoint,
                crate::vnic::Endpoint::Closed { error: None, .. }
            ) {
                let pc = v.client_port_config();
                let _ = v.open_endpoint(&pc);
            }
        }
        // 5. Recreated vNICs are built now: their devices were the old vNIC's until a moment ago.
        //    If one cannot be built, the old one is built again from the running config.
        for name in &recreated {
            match self.build_from(&new, name) {
                Ok(()) => {}
                Err(e) => {
                    let restored = self.build_from(&old_cfg, name).is_ok();
                    let err = ReloadError::Step {
                        step: format!("recreate vNIC {name}"),
                        cause: Box::new(StepError::Recreate {
                            err: Box::new(e),
                            restored,
                        }),
                    };
                    self.record_failed_reload(source, &err, started);
                    return Err(err);
                }
            }
        }
        self.config = new;
        self.config_generation += 1;
        if let Some(e) = unpublished {
            // Reported, not hidden: the model runs the new config but a core kept its old
            // table (which stays valid); the next publish on that core catches up.
            let err = ReloadError::Publish(e);
            self.record_failed_reload(source, &err, started);
            return Err(err);
        }
        let r = Reload {
            generation: self.config_generation,
            at_unix_ms: crate::appliance::unix_ms(),
            source: source.into(),
            ok: true,
            steps: steps.iter().map(|s| s.to_string()).collect(),
            error: None,
            took_us: started.elapsed().as_micros() as u64,
        };
        self.record(r.clone());
        Ok(r)
    }

    /// Build vNIC `name` as `cfg` describes it, put it in service (unattached).
    pub(crate) fn build_from(&mut self, cfg: &Config, name: &str) -> Result<(), StepError> {
        let i = cfg
            .raw()
            .vnics
            .iter()
            .position(|v| v.name == name)
            .ok_or_else(|| StepError::missing("vNIC", name, "new"))?;
        let vc = &cfg.raw().vnics[i];
        let core_idx = cfg.vnic_core_index(i);
        let slot = self
            .free_slot(&[])
            .ok_or(StepError::NoSlot(config::MAX_VNICS))?;
        self.incarnations += 1;
        let mut v = build_vnic(vc, cfg.mac(i), core_idx, slot, self.incarnations)?;
        if let Some(e) = unopened(&v) {
            return Err(e);
        }
        v.stats_base = self.slot_stats(slot);
        let pc = v.client_port_config();
        v.open_endpoint(&pc)?;
        self.vnics.push(v);
        self.publish_core(core_idx)?;
        Ok(())
    }

    /// Record a reload that failed (nothing changed).
    pub fn record_failed_reload(&mut self, source: &str, err: &ReloadError, started: Instant) {
        self.record(Reload {
            generation: self.config_generation,
            at_unix_ms: crate::appliance::unix_ms(),
            source: source.into(),
            ok: false,
            steps: vec![],
            error: Some(err.to_string()),
            took_us: started.elapsed().as_micros() as u64,
        });
    }

    pub(crate) fn record(&mut self, r: Reload) {
        if r.ok {
            self.tally.reloads_applied += 1;
        } else {
            self.tally.reloads_refused += 1;
        }
        if self.reloads.len() == 64 {
            self.reloads.pop_front();
        }
        self.reloads.push_back(r);
    }
}
