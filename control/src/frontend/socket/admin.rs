//! The admin socket's requests: status, stats, show, detach, failover, backing devices, reloads
//! and config.
use super::{changed, command_error, detach, failover_msg, switched, typed, Reply, Server};
use crate::appliance::{Appliance, Command, Outcome, Owner};
use crate::config;
use crate::proto::{self, Code, Op, ProtoError, Request};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vnic_proto::msg;

impl Server {
    pub(crate) fn admin(
        &mut self,
        app: &mut Appliance,
        req: &Request,
    ) -> Result<Reply, ProtoError> {
        match &req.op {
            Op::Status => {
                let st = app.status();
                Ok(typed(
                    "STATUS",
                    &msg::StatusReply {
                        generation: st.generation,
                        config_generation: st.config_generation,
                        vnics: st.vnics,
                    },
                ))
            }
            Op::Stats => Ok(typed("STATS", &app.status())),
            Op::Show(a) => app
                .status()
                .vnics
                .into_iter()
                .find(|v| v.name == a.vnic)
                .map(|vnic| typed("SHOW", &msg::Show { vnic }))
                .ok_or_else(|| {
                    ProtoError::new(Code::UnknownVnic, format!("unknown vNIC {:?}", a.vnic))
                }),
            Op::AdminFailover(f) => {
                let ev = switched(app.apply(Command::Failover {
                    vnic: f.vnic.clone(),
                    to: f.to.clone(),
                    why: "requested by the administrator".into(),
                }))?;
                Ok(typed("FAILOVER", &failover_msg(&ev)))
            }
            Op::Reload(f) => {
                let r = self.reload(app, f.path.as_deref().map(Path::new), "admin")?;
                Ok(typed("RELOADED", &r))
            }
            Op::ConfigShow => Ok(typed(
                "CONFIG",
                &msg::ConfigReply {
                    generation: app.config_generation(),
                    config: serde_json::to_value(app.config().raw()).unwrap_or_default(),
                    history: app.reloads(),
                },
            )),
            Op::ConfigDiff(f) => {
                let path = self.config_file(f.path.as_deref().map(Path::new))?;
                let cfg = config::load(&path).map_err(|e| {
                    ProtoError::new(Code::InvalidConfig, format!("{}:\n{e}", path.display()))
                })?;
                let steps = app
                    .plan_reload(&cfg)
                    .map_err(|e| ProtoError::new(Code::InvalidConfig, e.to_string()))?;
                Ok(typed(
                    "CONFIG_DIFF",
                    &msg::ConfigDiff {
                        path: path.display().to_string(),
                        steps: steps.iter().map(|s| s.to_string()).collect(),
                    },
                ))
            }
            Op::AdminRemove(r) => {
                let ev = changed(app.apply(Command::RemoveBacking {
                    vnic: r.vnic.clone(),
                    backing: r.backing.clone(),
                }))?;
                Ok(typed(
                    "REMOVE_BACKING",
                    &msg::BackingReply {
                        vnic: r.vnic.clone(),
                        backing: r.backing.clone(),
                        enabled: None,
                        removed: Some(true),
                        failover: ev.as_ref().and_then(failover_msg),
                    },
                ))
            }
            Op::AdminAuto(a) => {
                changed(app.apply(Command::SetAutoFailback {
                    vnic: a.vnic.clone(),
                    on: a.enabled,
                }))?;
                Ok(typed(
                    "AUTO_FAILBACK",
                    &msg::AutoFailback {
                        vnic: a.vnic.clone(),
                        enabled: a.enabled,
                    },
                ))
            }
            Op::AdminBacking(b) => {
                let ev = changed(app.apply(Command::SetBacking {
                    vnic: b.vnic.clone(),
                    backing: b.backing.clone(),
                    enabled: b.enabled,
                    force: b.force,
                }))?;
                Ok(typed(
                    "BACKING",
                    &msg::BackingReply {
                        vnic: b.vnic.clone(),
                        backing: b.backing.clone(),
                        enabled: Some(b.enabled),
                        removed: None,
                        failover: ev.as_ref().and_then(failover_msg),
                    },
                ))
            }
            Op::AdminDetach(a) => {
                let (_, owner, _) = app
                    .vnic_epoch(&a.vnic)
                    .map_err(|e| ProtoError::new(Code::UnknownVnic, e.to_string()))?;
                let session = match owner {
                    None => {
                        return Err(ProtoError::new(
                            Code::NotAttached,
                            format!("vNIC {:?} is not attached", a.vnic),
                        ))
                    }
                    Some(Owner::Inline) => None,
                    Some(Owner::Client { session, .. }) => Some(session),
                    Some(Owner::Vhost { .. } | Owner::Memif { .. }) => {
                        return Err(ProtoError::new(
                            Code::NotSupported,
                            format!(
                                "vNIC {:?} is served to a vhost-user or memif client, which disconnects itself; remove or change the vNIC by reload to end it",
                                a.vnic
                            ),
                        ))
                    }
                };
                let drained =
                    self.force_detach(app, &a.vnic, session, "detached by the administrator")?;
                Ok(typed(
                    "DETACHED",
                    &msg::Detached {
                        vnic: Some(a.vnic.clone()),
                        drained: Some(drained as u64),
                        reason: None,
                    },
                ))
            }
            _ => Err(ProtoError::new(
                Code::UnknownOp,
                "control op on the admin socket",
            )),
        }
    }

    /// Tell the client (if any), close its session, then detach and drain.
    pub(crate) fn force_detach(
        &mut self,
        app: &mut Appliance,
        vnic: &str,
        session: Option<u64>,
        why: &str,
    ) -> Result<usize, ProtoError> {
        if let Some(s) = session {
            let epoch = app.vnic_epoch(vnic).map(|e| e.0).unwrap_or(0);
            self.send(
                s,
                &proto::reply(
                    "DETACHED",
                    0,
                    epoch + 1,
                    &msg::Detached {
                        reason: Some(why.into()),
                        ..Default::default()
                    },
                ),
            );
            if let Some(c) = self.conns.remove(&s) {
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
            }
        }
        let drained = detach(app, vnic)?;
        tracing::warn!(vnic, drained, "{why}");
        Ok(drained)
    }

    /// The file a reload reads: `path`, or the one vnicd was started with.
    pub(crate) fn config_file(&self, path: Option<&Path>) -> Result<PathBuf, ProtoError> {
        match (path, &self.config_path) {
            (Some(p), _) => Ok(p.to_path_buf()),
            (None, Some(p)) => Ok(p.clone()),
            (None, None) => Err(ProtoError::new(
                Code::InvalidConfig,
                "vnicd runs the embedded config: name a config file to reload",
            )),
        }
    }

    /// Reload: read and validate the file, then the appliance prepares, commits and queues a
    /// `Withdrawn` event for each vNIC that goes away or is rebuilt (its clients get
    /// `CONFIG_CHANGED`). On any error nothing changes.
    pub fn reload(
        &mut self,
        app: &mut Appliance,
        path: Option<&Path>,
        source: &str,
    ) -> Result<crate::reload::Reload, ProtoError> {
        let started = Instant::now();
        let path = self.config_file(path)?;
        let src = format!("{source} ({})", path.display());
        let cfg = match config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                let err = crate::appliance::ReloadError::Config(e);
                app.record_failed_reload(&src, &err, started);
                return Err(ProtoError::new(
                    Code::InvalidConfig,
                    format!("{}: {err}", path.display()),
                ));
            }
        };
        let r = match app.apply(Command::Reload {
            config: Box::new(cfg),
            source: src,
        }) {
            Ok(Outcome::Reloaded(r)) => r,
            Ok(_) => return Err(ProtoError::new(Code::Internal, "reload did not reload")),
            Err(e) => return Err(command_error(e)),
        };
        let raw = &app.config().raw();
        self.heartbeat = Duration::from_millis(raw.heartbeat_timeout_ms as u64);
        self.admin_uids = raw.admin_uids.clone();
        tracing::info!(generation = r.generation, steps = ?r.steps, took_us = r.took_us, "config reloaded");
        Ok(r)
    }
}
