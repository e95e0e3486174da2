//! The admin socket's requests: status, stats, show, detach, failover, backing devices, reloads
//! and config.
use super::{
    changed, command_error, detach, failover_msg, migration, switched, typed, Reply, Server,
};
use crate::appliance::{Appliance, Command, Outcome, Owner};
use crate::config;
use crate::proto::{self, Code, Op, ProtoError, Request};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vnic_proto::client::Client;
use vnic_proto::mobility::{Migrate, Migrations, Prepare};
use vnic_proto::msg;

impl Server {
    pub(crate) fn admin(
        &mut self,
        app: &mut Appliance,
        conn: u64,
        req: &Request,
    ) -> Result<Reply, ProtoError> {
        match &req.op {
            Op::Migrate(m) => self.start_migration(app, m),
            Op::Migration(a) => app
                .migration(&a.vnic)
                .map(|m| typed("MIGRATION", &m))
                .ok_or_else(|| {
                    ProtoError::new(
                        Code::UnknownVnic,
                        format!("no migration of vNIC {:?} here", a.vnic),
                    )
                }),
            Op::Migrations => Ok(typed(
                "MIGRATIONS",
                &Migrations {
                    migrations: app.migrations(),
                },
            )),
            Op::MigratePrepare(p) => {
                let vnic = p
                    .export
                    .config
                    .get("name")
                    .and_then(|n| n.as_str())
                    .unwrap_or_default()
                    .to_string();
                let dry = p.dry_run;
                let peer = p.export.from.clone();
                match app.apply(Command::MigrateIn {
                    prepare: p.clone(),
                    peer,
                }) {
                    Ok(Outcome::Prepared(prep)) => {
                        if !dry {
                            self.prepared_by.entry(conn).or_default().push(vnic);
                        }
                        Ok(typed("PREPARED", &prep))
                    }
                    Ok(_) => Err(ProtoError::new(Code::Internal, "prepare did not prepare")),
                    Err(e) => Err(command_error(e)),
                }
            }
            Op::MigrateStatus(a) => app
                .incoming_status(&a.vnic)
                .map(|m| typed("MIGRATION", &m))
                .map_err(|e| command_error(e.into())),
            Op::MigrateCutover(c) => {
                let m = migration(app.apply(Command::MigrateCutover { cutover: c.clone() }))?;
                self.forget_prepared(&c.vnic);
                Ok(typed("MIGRATION", &m))
            }
            Op::MigrateAbort(a) => {
                let m = migration(
                    app.apply(Command::MigrateAbort {
                        vnic: a.vnic.clone(),
                        why: a
                            .reason
                            .clone()
                            .unwrap_or_else(|| "aborted by the source".into()),
                    }),
                )?;
                self.forget_prepared(&a.vnic);
                Ok(typed("MIGRATION", &m))
            }
            Op::Status => {
                let st = app.status();
                Ok(typed(
                    "STATUS",
                    &msg::StatusReply {
                        generation: st.generation,
                        config_generation: st.config_generation,
                        vnics: st.vnics,
                        migrated_out: st.migrated_out,
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

    /// Source: reach the destination, export the vNIC and hand the move to the mobility
    /// frontend. Refused at once when the destination cannot be reached.
    fn start_migration(&mut self, app: &mut Appliance, m: &Migrate) -> Result<Reply, ProtoError> {
        let own = app.config().raw().admin_socket.clone();
        if Path::new(&m.to) == own {
            return Err(ProtoError::new(
                Code::BadRequest,
                format!("{} is this appliance's own admin socket", m.to),
            ));
        }
        let mut client = Client::connect(Path::new(&m.to)).map_err(|e| {
            ProtoError::new(
                Code::Unreachable,
                format!("cannot reach the destination's admin socket {}: {e}", m.to),
            )
        })?;
        client.timeout = Duration::from_secs(10);
        let export = match app.apply(Command::MigrateOut {
            vnic: m.vnic.clone(),
            to: m.to.clone(),
            dry_run: m.dry_run,
        }) {
            Ok(Outcome::Exported(e)) => *e,
            Ok(_) => return Err(ProtoError::new(Code::Internal, "migrate did not export")),
            Err(e) => return Err(command_error(e)),
        };
        self.moves.push(crate::frontend::mobility::OutMove {
            vnic: m.vnic.clone(),
            client,
            prepare: Prepare {
                export,
                map: m.map.clone(),
                dry_run: m.dry_run,
            },
        });
        let rec = app
            .migration(&m.vnic)
            .ok_or_else(|| ProtoError::new(Code::Internal, "no migration record"))?;
        Ok(typed("MIGRATION", &rec))
    }

    fn forget_prepared(&mut self, vnic: &str) {
        for list in self.prepared_by.values_mut() {
            list.retain(|v| v != vnic);
        }
        self.prepared_by.retain(|_, l| !l.is_empty());
    }

    /// Destination: a source's admin connection closed; what it prepared here and did not cut
    /// over is released (the source keeps forwarding).
    pub(crate) fn source_gone(&mut self, app: &mut Appliance, conn: u64) {
        let Some(vnics) = self.prepared_by.remove(&conn) else {
            return;
        };
        for vnic in vnics {
            if app
                .migration(&vnic)
                .is_some_and(|m| m.phase == vnic_proto::mobility::Phase::Incoming)
            {
                let _ = app.apply(Command::MigrateAbort {
                    vnic: vnic.clone(),
                    why: "the source's admin connection closed before cutover: released".into(),
                });
            }
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
