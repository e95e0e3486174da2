//! The client session on the control socket: HELLO, CAPS, ATTACH, HEARTBEAT, DETACH,
//! REQUEST_FAILOVER. Whether a session is attached is the model's word (the vNIC's owner), not a
//! second record kept here.
use super::{command_error, detach, failover_msg, switched, typed, Reply, Server, Session, View};
use crate::appliance::{Appliance, AttachRequest, Command, Outcome, Owner};
use crate::proto::{self, Code, Op, ProtoError, Request};
use vnic_proto::msg;

impl Server {
    /// One control-socket request. Nothing changes when it returns an error.
    pub(crate) fn control(
        &mut self,
        app: &mut Appliance,
        id: u64,
        req: &Request,
    ) -> Result<Reply, ProtoError> {
        let session = self.view(app, id);
        let Some(creds) = self.conns.get(&id).map(|c| c.creds) else {
            return Err(ProtoError::new(Code::Internal, "session closed"));
        };
        // A request naming an epoch must name the current one: a client acting on an old
        // ATTACHED (or a reply it missed) is told instead of obeyed.
        if let (Some(e), Some(v)) = (req.epoch, self.vnic_of(id)) {
            let cur = app.vnic_epoch(v).map(|x| x.0).unwrap_or(0);
            if e != cur {
                return Err(ProtoError::new(
                    Code::StaleEpoch,
                    format!("epoch {e} is stale; the vNIC is at epoch {cur}"),
                ));
            }
        }
        match (&req.op, &session) {
            (Op::Hello(h), View::New) => {
                let Some(version) = h
                    .versions
                    .iter()
                    .copied()
                    .filter(|v| proto::VERSIONS.contains(v))
                    .max()
                else {
                    return Err(ProtoError::new(
                        Code::UnsupportedVersion,
                        format!(
                            "no common protocol version: client {:?}, server {:?}",
                            h.versions,
                            proto::VERSIONS
                        ),
                    ));
                };
                let (epoch, owner, token) = app
                    .vnic_epoch(&h.vnic)
                    .map_err(|e| ProtoError::new(Code::UnknownVnic, e.to_string()))?;
                if !app.allowed(&h.vnic, creds.uid, creds.gid).unwrap_or(false) {
                    return Err(ProtoError::new(
                        Code::NotAuthorized,
                        format!(
                            "uid {} gid {} may not attach vNIC {:?}",
                            creds.uid, creds.gid, h.vnic
                        ),
                    ));
                }
                if let Some(o) = owner {
                    return Err(ProtoError::new(
                        Code::Busy,
                        format!("vNIC {:?} is attached by {o:?}", h.vnic),
                    ));
                }
                if let Some(t) = &h.token {
                    if token.as_deref() != Some(t.as_str()) {
                        return Err(ProtoError::new(
                            Code::BadToken,
                            format!("token does not match vNIC {:?}", h.vnic),
                        ));
                    }
                }
                if let Some(c) = self.conns.get_mut(&id) {
                    c.session = Session::Hello {
                        vnic: h.vnic.clone(),
                    };
                }
                let _ = epoch; // the envelope carries it
                Ok(typed(
                    "WELCOME",
                    &msg::Welcome {
                        version,
                        vnic: h.vnic.clone(),
                        heartbeat_ms: self.heartbeat.as_millis() as u64,
                        resumed: h.token.is_some(),
                        file_prefix: app.shared_prefix(),
                        client_lcore: app.client_lcore(&h.vnic),
                    },
                ))
            }
            (Op::Hello(_), _) => Err(ProtoError::new(
                Code::AlreadyHello,
                "HELLO was already accepted on this session",
            )),
            (_, View::New) => Err(ProtoError::new(Code::NoHello, "send HELLO first")),
            (Op::Caps, View::Hello { vnic } | View::Attached { vnic }) => {
                let c = app
                    .caps(vnic)
                    .map_err(|e| ProtoError::new(Code::UnknownVnic, e.to_string()))?;
                Ok(typed("CAPS", &c))
            }
            (Op::Attach(_), View::Attached { .. }) => Err(ProtoError::new(
                Code::AlreadyAttached,
                "this session is already attached",
            )),
            (Op::Attach(a), View::Hello { vnic }) => {
                let owner = Owner::Client {
                    session: id,
                    pid: creds.pid,
                    uid: creds.uid,
                    gid: creds.gid,
                };
                let req = AttachRequest {
                    queues: a.queues,
                    depth: a.depth,
                    mtu: a.mtu,
                    promisc: a.promisc,
                };
                let vnic = vnic.clone();
                let Outcome::Attached(g) = app
                    .apply(Command::Attach {
                        vnic: vnic.clone(),
                        req,
                        owner,
                    })
                    .map_err(command_error)?
                else {
                    return Err(ProtoError::new(Code::Internal, "attach did not attach"));
                };
                tracing::info!(vnic, pid = creds.pid, epoch = g.epoch, "attached");
                Ok(typed("ATTACHED", &g.attached))
            }
            (Op::Heartbeat, _) => Ok(typed("HEARTBEAT", &msg::Heartbeat {})),
            (Op::Detach, View::Hello { .. }) => {
                Err(ProtoError::new(Code::NotAttached, "not attached"))
            }
            (Op::Detach, View::Attached { vnic }) => {
                let vnic = vnic.clone();
                let drained = detach(app, &vnic)?;
                tracing::info!(vnic, drained, "detached by the client");
                Ok(typed(
                    "DETACHED",
                    &msg::Detached {
                        drained: Some(drained as u64),
                        ..Default::default()
                    },
                ))
            }
            (Op::RequestFailover(_), View::Hello { .. }) => {
                Err(ProtoError::new(Code::NotAttached, "attach first"))
            }
            (Op::RequestFailover(r), View::Attached { vnic }) => {
                let ev = switched(app.apply(Command::Failover {
                    vnic: vnic.clone(),
                    to: None,
                    why: format!("requested by the client: {}", r.reason),
                }))?;
                Ok(typed("FAILOVER", &failover_msg(&ev)))
            }
            (
                Op::Status
                | Op::Stats
                | Op::Show(_)
                | Op::AdminDetach(_)
                | Op::AdminFailover(_)
                | Op::AdminAuto(_)
                | Op::AdminRemove(_)
                | Op::Reload(_)
                | Op::ConfigShow
                | Op::ConfigDiff(_)
                | Op::AdminBacking(_)
                | Op::Migrate(_)
                | Op::Migration(_)
                | Op::Migrations
                | Op::MigratePrepare(_)
                | Op::MigrateStatus(_)
                | Op::MigrateCutover(_)
                | Op::MigrateAbort(_),
                _,
            ) => Err(ProtoError::new(
                Code::UnknownOp,
                "admin op on the control socket",
            )),
        }
    }
}
