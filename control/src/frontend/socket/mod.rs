//! The control thread's sockets: the client control socket (login, queue setup, heartbeats) and
//! the admin socket. Connection threads only read and frame lines (`transport`); every decision
//! and every change to the appliance happens on the control thread, in [`Server::poll`], so the
//! appliance needs no lock. Pushes come from the appliance's event queue ([`Server::deliver`]).
mod admin;
mod session;
pub(crate) mod transport;

pub use transport::{Creds, ServerError};

use crate::appliance::{
    Appliance, AttachError, Command, CommandError, Event, FailoverError, Outcome, ReloadError,
};
use crate::config::{self, Config};
use crate::mobility::MobilityError;
use crate::proto::{self, Code, ProtoError};
use crossbeam::channel::{unbounded, Receiver, RecvTimeoutError};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use transport::{acceptor, bind, ConnEvent, Kind};
use vnic_proto::msg;

/// What a session has said so far. Whether it is attached is the appliance's to say: the vNIC's
/// owner names the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Session {
    New,
    Hello { vnic: String },
}

/// A session as the request handlers see it: the recorded step plus the model's attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum View {
    New,
    Hello { vnic: String },
    Attached { vnic: String },
}

pub(crate) struct Conn {
    kind: Kind,
    stream: UnixStream,
    creds: Creds,
    session: Session,
    last_seen: Instant,
}

/// The control and admin sockets.
pub struct Server {
    events: Receiver<ConnEvent>,
    conns: HashMap<u64, Conn>,
    heartbeat: Duration,
    admin_uids: Vec<u32>,
    paths: Vec<PathBuf>,
    next_server_heartbeat: Instant,
    /// The config file vnicd runs (for reloads without a file).
    config_path: Option<PathBuf>,
    /// Moves asked for on the admin socket, for the mobility frontend to drive.
    moves: Vec<crate::frontend::mobility::OutMove>,
    /// Destination: the vNICs each source connection prepared here (released if it closes
    /// before cutover).
    prepared_by: HashMap<u64, Vec<String>>,
}

/// A reply's op and its typed body (one of [`vnic_proto::msg`]), as the handlers return it.
pub(crate) type Reply = (&'static str, Value);

/// Pair an op with its typed body.
pub(crate) fn typed(op: &'static str, body: &impl serde::Serialize) -> Reply {
    (op, serde_json::to_value(body).unwrap_or(Value::Null))
}

/// The FAILOVER message for a switch.
pub(crate) fn failover_msg(e: &Event) -> Option<msg::Failover> {
    match e {
        Event::Failover {
            vnic,
            from,
            to,
            reason,
        } => Some(msg::Failover {
            vnic: vnic.clone(),
            from: from.clone(),
            to: to.clone(),
            reason: reason.clone(),
        }),
        Event::Link { .. }
        | Event::Withdrawn { .. }
        | Event::Migrate { .. }
        | Event::Migrated { .. } => None,
    }
}

/// The protocol's word for a refused command.
pub(crate) fn command_error(e: CommandError) -> ProtoError {
    let code = match &e {
        CommandError::Attach(a) => match a {
            AttachError::UnknownVnic(_) => Code::UnknownVnic,
            AttachError::AlreadyAttached(_) => Code::Busy,
            AttachError::NotAttached(_) => Code::NotAttached,
            AttachError::OutOfRange { .. } => Code::OutOfRange,
            AttachError::Transport { .. } => Code::NotSupported,
            AttachError::Rings(_) | AttachError::Publish(_) => Code::Internal,
        },
        CommandError::Failover(f) => match f {
            FailoverError::UnknownVnic(_) => Code::UnknownVnic,
            FailoverError::UnknownBacking { .. } => Code::UnknownBacking,
            FailoverError::NoStandby(_) | FailoverError::LastDevice(_) => Code::NoStandby,
            FailoverError::NotOperational(_) | FailoverError::AlreadyActive(_) => {
                Code::NotOperational
            }
            FailoverError::Publish(_) => Code::Internal,
        },
        CommandError::Reload(ReloadError::Config(_)) => Code::InvalidConfig,
        CommandError::Reload(_) => Code::ReloadFailed,
        CommandError::Mobility(m) => match m {
            MobilityError::CannotTake(_) => Code::CannotTake,
            MobilityError::UnknownVnic(_) => Code::UnknownVnic,
            MobilityError::Phase(_) => Code::Migrating,
            MobilityError::Failed(_) => Code::Internal,
        },
    };
    ProtoError::new(code, e.to_string())
}

/// Detach a vNIC through the appliance; the mbufs drained.
pub(crate) fn detach(app: &mut Appliance, vnic: &str) -> Result<usize, ProtoError> {
    match app.apply(Command::Detach { vnic: vnic.into() }) {
        Ok(Outcome::Detached { drained }) => Ok(drained),
        Ok(_) => Err(ProtoError::new(Code::Internal, "detach did not detach")),
        Err(e) => Err(command_error(e)),
    }
}

/// The switch a failover command made.
pub(crate) fn switched(r: Result<Outcome, CommandError>) -> Result<Event, ProtoError> {
    match r.map_err(command_error)? {
        Outcome::Switched(ev) => Ok(ev),
        _ => Err(ProtoError::new(Code::Internal, "failover did not switch")),
    }
}

/// The migration record a mobility command left.
pub(crate) fn migration(
    r: Result<Outcome, CommandError>,
) -> Result<vnic_proto::mobility::Migration, ProtoError> {
    match r.map_err(command_error)? {
        Outcome::Migration(m) => Ok(*m),
        _ => Err(ProtoError::new(Code::Internal, "unexpected outcome")),
    }
}

/// The switch (if any) a change to a backing device caused.
pub(crate) fn changed(r: Result<Outcome, CommandError>) -> Result<Option<Event>, ProtoError> {
    match r.map_err(command_error)? {
        Outcome::Changed(ev) => Ok(ev),
        _ => Err(ProtoError::new(Code::Internal, "unexpected outcome")),
    }
}

/// The push that tells a client of an event.
fn push_of(e: &Event) -> Reply {
    match (e, failover_msg(e)) {
        (_, Some(f)) => typed("FAILOVER", &f),
        (Event::Link { link, .. }, None) => typed("LINK", link),
        (Event::Withdrawn { vnic }, None) => typed(
            "CONFIG_CHANGED",
            &msg::ConfigChanged {
                vnic: vnic.clone(),
                reason: "the vNIC was removed or recreated by a config reload: attach again".into(),
            },
        ),
        (
            Event::Migrate {
                vnic,
                control_socket,
                token,
            },
            None,
        ) => typed(
            "MIGRATE",
            &vnic_proto::mobility::MigratePush {
                vnic: vnic.clone(),
                control_socket: control_socket.clone(),
                token: token.clone(),
            },
        ),
        (Event::Migrated { to, .. }, None) => typed(
            "DETACHED",
            &msg::Detached {
                reason: Some(format!("migrated to {to}")),
                ..Default::default()
            },
        ),
        (Event::Failover { .. }, None) => typed("FAILOVER", &()),
    }
}

impl Server {
    /// Bind both sockets and start accepting.
    pub fn start(cfg: &Config) -> Result<Server, ServerError> {
        let r = &cfg.raw();
        let mode = config::parse_mode(&r.control_socket_mode).unwrap_or(0o660);
        let ctl = bind(&r.control_socket, mode, r.control_socket_gid)?;
        let adm = bind(&r.admin_socket, 0o600, None)?;
        let (tx, rx) = unbounded();
        for (l, kind, base) in [(ctl, Kind::Control, 0u64), (adm, Kind::Admin, 1u64 << 62)] {
            let tx = tx.clone();
            let _ = std::thread::Builder::new()
                .name(format!("vnic-accept-{kind:?}").to_lowercase())
                .spawn(move || acceptor(l, kind, tx, base));
        }
        Ok(Server {
            events: rx,
            conns: HashMap::new(),
            heartbeat: Duration::from_millis(r.heartbeat_timeout_ms as u64),
            admin_uids: r.admin_uids.clone(),
            paths: vec![r.control_socket.clone(), r.admin_socket.clone()],
            next_server_heartbeat: Instant::now(),
            config_path: None,
            moves: Vec::new(),
            prepared_by: HashMap::new(),
        })
    }

    /// Handle requests for up to `wait`. Call it in a loop on the control thread (see
    /// [`crate::mainloop`]), with [`Server::deliver`] and [`Server::periodic`] after it.
    pub fn poll(&mut self, app: &mut Appliance, wait: Duration) {
        let end = Instant::now() + wait;
        loop {
            // Health checks must run even while requests keep coming: stop at the deadline.
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.events.recv_timeout(left) {
                Ok(ev) => self.event(app, ev),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(left);
                    break;
                }
            }
        }
    }

    /// Tell each vNIC's attached client what the appliance's event queue says: FAILOVER and LINK
    /// pushes (id 0), in the order they happened.
    pub fn deliver(&mut self, app: &mut Appliance, events: &[Event]) {
        for ev in events {
            if let Event::Withdrawn { vnic } | Event::Migrated { vnic, .. } = ev {
                self.withdraw(app, vnic, ev);
                continue;
            }
            let (Event::Failover { vnic, .. }
            | Event::Link { vnic, .. }
            | Event::Withdrawn { vnic }
            | Event::Migrate { vnic, .. }
            | Event::Migrated { vnic, .. }) = ev;
            let Some(id) = app.client_session(vnic) else {
                continue;
            };
            let epoch = app.vnic_epoch(vnic).map(|e| e.0).unwrap_or(0);
            let (op, body) = push_of(ev);
            self.send(id, &proto::reply(op, 0, epoch, &body));
        }
    }

    /// A reload took the vNIC away or rebuilt it, or it moved away: every session on it is told
    /// and closed.
    fn withdraw(&mut self, app: &mut Appliance, vnic: &str, ev: &Event) {
        let ids: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(&c.session, Session::Hello { vnic: v } if v == vnic))
            .map(|(i, _)| *i)
            .collect();
        let (op, body) = push_of(ev);
        for id in ids {
            let epoch = app.vnic_epoch(vnic).map(|e| e.0).unwrap_or(0);
            self.send(id, &proto::reply(op, 0, epoch, &body));
            self.close(app, id, "config reload");
        }
    }

    /// The session as the handlers see it.
    pub(crate) fn view(&self, app: &Appliance, id: u64) -> View {
        match self.conns.get(&id).map(|c| &c.session) {
            None | Some(Session::New) => View::New,
            Some(Session::Hello { vnic }) if app.client_session(vnic) == Some(id) => {
                View::Attached { vnic: vnic.clone() }
            }
            Some(Session::Hello { vnic }) => View::Hello { vnic: vnic.clone() },
        }
    }

    pub(crate) fn send(&mut self, id: u64, msg: &Value) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.stream.write_all(proto::encode(msg).as_bytes()).is_err() {
            // Treated like a closed socket at the next periodic check.
            c.last_seen = Instant::now() - Duration::from_secs(3600);
        }
    }

    pub(crate) fn event(&mut self, app: &mut Appliance, ev: ConnEvent) {
        match ev {
            ConnEvent::Accepted {
                id,
                kind,
                stream,
                creds,
            } => {
                tracing::debug!(id, ?kind, ?creds, "connection");
                self.conns.insert(
                    id,
                    Conn {
                        kind,
                        stream,
                        creds,
                        session: Session::New,
                        last_seen: Instant::now(),
                    },
                );
                if kind == Kind::Admin && !self.admin_uids.contains(&creds.uid) {
                    let e = ProtoError::new(
                        Code::NotAuthorized,
                        format!("uid {} may not use the admin socket", creds.uid),
                    );
                    self.send(id, &proto::error(0, 0, &e));
                    self.close(app, id, "admin credentials");
                }
            }
            ConnEvent::Closed { id } => self.close(app, id, "socket closed"),
            ConnEvent::TooLarge { id, len } => {
                let epoch = self.epoch_of(app, id);
                let e = ProtoError::new(
                    Code::TooLarge,
                    format!("message of {len} bytes, at most {}", proto::MAX_MESSAGE),
                );
                self.send(id, &proto::error(0, epoch, &e));
            }
            ConnEvent::Line { id, line } => {
                let Some(c) = self.conns.get_mut(&id) else {
                    return;
                };
                c.last_seen = Instant::now();
                let admin = c.kind == Kind::Admin;
                match proto::parse(&line, admin) {
                    Err((rid, e)) => {
                        let epoch = self.epoch_of(app, id);
                        self.send(id, &proto::error(rid, epoch, &e));
                    }
                    Ok(req) => {
                        let out = if admin {
                            self.admin(app, id, &req)
                        } else {
                            self.control(app, id, &req)
                        };
                        let epoch = self.epoch_of(app, id);
                        let msg = match out {
                            Ok((op, body)) => proto::reply(op, req.id, epoch, &body),
                            Err(e) => proto::error(req.id, epoch, &e),
                        };
                        self.send(id, &msg);
                    }
                }
            }
        }
    }

    pub(crate) fn vnic_of(&self, id: u64) -> Option<&str> {
        match &self.conns.get(&id)?.session {
            Session::Hello { vnic } => Some(vnic),
            Session::New => None,
        }
    }

    pub(crate) fn epoch_of(&self, app: &Appliance, id: u64) -> u64 {
        self.vnic_of(id)
            .and_then(|v| app.vnic_epoch(v).ok())
            .map(|e| e.0)
            .unwrap_or(0)
    }

    pub(crate) fn close(&mut self, app: &mut Appliance, id: u64, why: &str) {
        self.source_gone(app, id);
        let view = self.view(app, id);
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
        if let View::Attached { vnic } = view {
            match detach(app, &vnic) {
                Ok(drained) => tracing::warn!(
                    vnic,
                    pid = c.creds.pid,
                    drained,
                    "client gone ({why}): detached"
                ),
                Err(e) => {
                    tracing::error!(vnic, "client gone ({why}) but detach failed: {}", e.message)
                }
            }
        }
    }

    /// Heartbeat deadlines (silent clients are detached) and vnicd's own heartbeats.
    pub fn periodic(&mut self, app: &mut Appliance) {
        let now = Instant::now();
        // Clients silent past the deadline are detached (their rings drained, mbufs returned).
        let dead: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.kind == Kind::Control && now.duration_since(c.last_seen) > self.heartbeat
            })
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            let epoch = self.epoch_of(app, id);
            let e = ProtoError::new(Code::Internal, "heartbeat missed: session closed");
            self.send(id, &proto::error(0, epoch, &e));
            self.close(app, id, "heartbeat missed");
        }
        // Our heartbeats, so clients can tell a live server from a dead one.
        if now >= self.next_server_heartbeat {
            self.next_server_heartbeat = now + self.heartbeat / 3;
            let ids: Vec<u64> = self
                .conns
                .keys()
                .copied()
                .filter(|&id| matches!(self.view(app, id), View::Attached { .. }))
                .collect();
            for id in ids {
                let epoch = self.epoch_of(app, id);
                self.send(id, &proto::reply("HEARTBEAT", 0, epoch, &msg::Heartbeat {}));
            }
        }
    }

    /// Remember the config file (SIGHUP and `vnicctl reload` without a file re-read it).
    pub fn set_config_path(&mut self, p: PathBuf) {
        self.config_path = Some(p);
    }

    /// Moves asked for since the last call (the mobility frontend drives them).
    pub fn take_moves(&mut self) -> Vec<crate::frontend::mobility::OutMove> {
        std::mem::take(&mut self.moves)
    }

    /// Sessions open now (control and admin).
    pub fn sessions(&self) -> usize {
        self.conns.len()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}
