//! The control thread's sockets: the client control socket (login, queue setup, heartbeats) and
//! the admin socket. Connection threads only read and frame lines; every decision and every
//! change to the appliance happens on the control thread in [`Server::poll`], so the appliance
//! needs no lock.
use crate::appliance::{Appliance, AttachError, AttachRequest, Event, FailoverError, Owner};
use crate::config::{self, Config};
use crate::proto::{self, Code, Op, ProtoError, Request};
use crossbeam::channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Peer credentials from `SO_PEERCRED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Creds {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Control,
    Admin,
}

enum ConnEvent {
    Accepted {
        id: u64,
        kind: Kind,
        stream: UnixStream,
        creds: Creds,
    },
    Line {
        id: u64,
        line: Vec<u8>,
    },
    TooLarge {
        id: u64,
        len: usize,
    },
    Closed {
        id: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Session {
    New,
    Hello { vnic: String },
    Attached { vnic: String },
}

struct Conn {
    kind: Kind,
    stream: UnixStream,
    creds: Creds,
    session: Session,
    last_seen: Instant,
}

/// Server errors at bind time.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{path}: {what}: {err}")]
    Io {
        path: PathBuf,
        what: &'static str,
        err: std::io::Error,
    },
    #[error("{path}: another vnicd is listening there")]
    InUse { path: PathBuf },
}

/// The control and admin sockets.
pub struct Server {
    events: Receiver<ConnEvent>,
    conns: HashMap<u64, Conn>,
    heartbeat: Duration,
    admin_uids: Vec<u32>,
    paths: Vec<PathBuf>,
    last_links: HashMap<String, (bool, Option<String>)>,
    next_link_check: Instant,
    next_server_heartbeat: Instant,
    /// Events from request handlers, pushed to clients at the end of the poll.
    pending: Vec<Event>,
    /// The config file vnicd runs (for reloads without a file).
    config_path: Option<PathBuf>,
}

fn bind(path: &Path, mode: u32, gid: Option<u32>) -> Result<UnixListener, ServerError> {
    let io = |what| {
        let path = path.to_path_buf();
        move |err| ServerError::Io { path, what, err }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("create directory"))?;
    }
    if path.exists() {
        // A live listener answers; a stale socket file from a crash does not.
        if UnixStream::connect(path).is_ok() {
            return Err(ServerError::InUse { path: path.into() });
        }
        std::fs::remove_file(path).map_err(io("remove stale socket"))?;
    }
    let l = UnixListener::bind(path).map_err(io("bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io("chmod"))?;
    if let Some(g) = gid {
        std::os::unix::fs::chown(path, None, Some(g)).map_err(io("chown"))?;
    }
    Ok(l)
}

fn peer_creds(s: &UnixStream) -> Creds {
    match nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(c) => Creds {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
        },
        // Unknown credentials match no allow-list entry.
        Err(_) => Creds {
            pid: -1,
            uid: u32::MAX,
            gid: u32::MAX,
        },
    }
}

fn reader(id: u64, stream: UnixStream, tx: Sender<ConnEvent>) {
    let mut r = BufReader::new(stream);
    let mut buf = Vec::with_capacity(512);
    loop {
        buf.clear();
        // Read at most one byte past the limit, so an endless line cannot grow memory.
        let n = match (&mut r)
            .take(proto::MAX_MESSAGE as u64 + 2)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if buf.last() != Some(&b'\n') && n > proto::MAX_MESSAGE {
            // Oversized: report, then skip the rest of that line.
            let mut skipped = n;
            loop {
                let mut chunk = Vec::new();
                match (&mut r).take(64 * 1024).read_until(b'\n', &mut chunk) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(ConnEvent::Closed { id });
                        return;
                    }
                    Ok(k) => {
                        skipped += k;
                        if chunk.last() == Some(&b'\n') {
                            break;
                        }
                    }
                }
            }
            if tx.send(ConnEvent::TooLarge { id, len: skipped }).is_err() {
                return;
            }
            continue;
        }
        while buf.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
            buf.pop();
        }
        if buf.is_empty() {
            continue;
        }
        if tx
            .send(ConnEvent::Line {
                id,
                line: buf.clone(),
            })
            .is_err()
        {
            return;
        }
    }
    let _ = tx.send(ConnEvent::Closed { id });
}

fn acceptor(l: UnixListener, kind: Kind, tx: Sender<ConnEvent>, base: u64) {
    let mut n = 0u64;
    for s in l.incoming() {
        let Ok(stream) = s else { continue };
        n += 1;
        let id = base + n;
        let creds = peer_creds(&stream);
        let Ok(read_half) = stream.try_clone() else {
            continue;
        };
        // Writes come from the control thread; a client that stops reading must not stall it.
        let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
        if tx
            .send(ConnEvent::Accepted {
                id,
                kind,
                stream,
                creds,
            })
            .is_err()
        {
            return;
        }
        let tx2 = tx.clone();
        let _ = std::thread::Builder::new()
            .name(format!("vnic-conn{id}"))
            .spawn(move || reader(id, read_half, tx2));
    }
}

fn failover_error(e: FailoverError) -> ProtoError {
    let code = match &e {
        FailoverError::UnknownVnic(_) => Code::UnknownVnic,
        FailoverError::UnknownBacking { .. } => Code::UnknownBacking,
        FailoverError::NoStandby(_) | FailoverError::LastDevice(_) => Code::NoStandby,
        FailoverError::NotOperational(_) | FailoverError::AlreadyActive(_) => Code::NotOperational,
        FailoverError::Publish(_) => Code::Internal,
    };
    ProtoError::new(code, e.to_string())
}

fn event_body(e: &Event) -> Value {
    match e {
        Event::Failover {
            vnic,
            from,
            to,
            reason,
        } => json!({"vnic": vnic, "from": from, "to": to, "reason": reason}),
        Event::LinkDown { vnic } => json!({"vnic": vnic, "up": false}),
    }
}

fn attach_code(e: &AttachError) -> Code {
    match e {
        AttachError::UnknownVnic(_) => Code::UnknownVnic,
        AttachError::AlreadyAttached(_) => Code::Busy,
        AttachError::NotAttached(_) => Code::NotAttached,
        AttachError::OutOfRange { .. } => Code::OutOfRange,
        AttachError::Rings(_) | AttachError::Publish(_) => Code::Internal,
    }
}

impl Server {
    /// Bind both sockets and start accepting.
    pub fn start(cfg: &Config) -> Result<Server, ServerError> {
        let r = &cfg.raw;
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
            last_links: HashMap::new(),
            next_link_check: Instant::now(),
            next_server_heartbeat: Instant::now(),
            pending: Vec::new(),
            config_path: None,
        })
    }

    /// Handle events for up to `wait`, then run the periodic checks (heartbeat deadlines, link
    /// changes). Call it in a loop on the control thread.
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
        let mut events = std::mem::take(&mut self.pending);
        events.extend(app.health_tick());
        self.push_events(app, events);
        self.periodic(app);
    }

    /// Tell attached clients about failovers (LINK follows from the link check).
    fn push_events(&mut self, app: &Appliance, events: Vec<Event>) {
        for ev in events {
            let Event::Failover { vnic, .. } = &ev else {
                continue;
            };
            let ids: Vec<u64> = self
                .conns
                .iter()
                .filter(|(_, c)| matches!(&c.session, Session::Attached { vnic: v } if v == vnic))
                .map(|(i, _)| *i)
                .collect();
            let epoch = app.vnic_epoch(vnic).map(|e| e.0).unwrap_or(0);
            for id in ids {
                self.send(id, &proto::reply("FAILOVER", 0, epoch, event_body(&ev)));
            }
        }
    }

    fn send(&mut self, id: u64, msg: &Value) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let mut line = msg.to_string();
        line.push('\n');
        if c.stream.write_all(line.as_bytes()).is_err() {
            // Treated like a closed socket at the next periodic check.
            c.last_seen = Instant::now() - Duration::from_secs(3600);
        }
    }

    fn event(&mut self, app: &mut Appliance, ev: ConnEvent) {
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
                            self.admin(app, &req)
                        } else {
                            self.control(app, id, &req)
                        };
                        let epoch = self.epoch_of(app, id);
                        let msg = match out {
                            Ok((op, body)) => proto::reply(op, req.id, epoch, body),
                            Err(e) => proto::error(req.id, epoch, &e),
                        };
                        self.send(id, &msg);
                    }
                }
            }
        }
    }

    fn vnic_of(&self, id: u64) -> Option<&str> {
        match &self.conns.get(&id)?.session {
            Session::Hello { vnic } | Session::Attached { vnic } => Some(vnic),
            Session::New => None,
        }
    }

    fn epoch_of(&self, app: &Appliance, id: u64) -> u64 {
        self.vnic_of(id)
            .and_then(|v| app.vnic_epoch(v).ok())
            .map(|e| e.0)
            .unwrap_or(0)
    }

    /// One control-socket request. Nothing changes when it returns an error.
    fn control(
        &mut self,
        app: &mut Appliance,
        id: u64,
        req: &Request,
    ) -> Result<(&'static str, Value), ProtoError> {
        let (session, creds) = {
            let c = &self.conns[&id];
            (c.session.clone(), c.creds)
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
            (Op::Hello(h), Session::New) => {
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
                Ok((
                    "WELCOME",
                    json!({"version": version, "vnic": h.vnic, "epoch": epoch, "heartbeat_ms": self.heartbeat.as_millis() as u64, "resumed": h.token.is_some()}),
                ))
            }
            (Op::Hello(_), _) => Err(ProtoError::new(
                Code::AlreadyHello,
                "HELLO was already accepted on this session",
            )),
            (_, Session::New) => Err(ProtoError::new(Code::NoHello, "send HELLO first")),
            (Op::Caps, Session::Hello { vnic } | Session::Attached { vnic }) => {
                let c = app
                    .caps(vnic)
                    .map_err(|e| ProtoError::new(Code::UnknownVnic, e.to_string()))?;
                Ok(("CAPS", serde_json::to_value(c).unwrap_or(Value::Null)))
            }
            (Op::Attach(_), Session::Attached { .. }) => Err(ProtoError::new(
                Code::AlreadyAttached,
                "this session is already attached",
            )),
            (Op::Attach(a), Session::Hello { vnic }) => {
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
                let g = app
                    .attach(&vnic, req, owner)
                    .map_err(|e| ProtoError::new(attach_code(&e), e.to_string()))?;
                if let Some(c) = self.conns.get_mut(&id) {
                    c.session = Session::Attached { vnic: vnic.clone() };
                }
                // ATTACHED carries the link; push LINK only when it changes from here on.
                self.last_links
                    .insert(vnic.clone(), (g.link.up, g.link.active_backing.clone()));
                let mut body = serde_json::to_value(&g).unwrap_or(Value::Null);
                body["file_prefix"] = json!(app.shared_prefix());
                tracing::info!(vnic, pid = creds.pid, epoch = g.epoch, "attached");
                Ok(("ATTACHED", body))
            }
            (Op::Heartbeat, _) => Ok(("HEARTBEAT", json!({}))),
            (Op::Detach, Session::Hello { .. }) => {
                Err(ProtoError::new(Code::NotAttached, "not attached"))
            }
            (Op::Detach, Session::Attached { vnic }) => {
                let vnic = vnic.clone();
                let drained = app
                    .detach(&vnic)
                    .map_err(|e| ProtoError::new(attach_code(&e), e.to_string()))?;
                if let Some(c) = self.conns.get_mut(&id) {
                    c.session = Session::Hello { vnic: vnic.clone() };
                }
                tracing::info!(vnic, drained, "detached by the client");
                Ok(("DETACHED", json!({"drained": drained})))
            }
            (Op::RequestFailover(_), Session::Hello { .. }) => {
                Err(ProtoError::new(Code::NotAttached, "attach first"))
            }
            (Op::RequestFailover(r), Session::Attached { vnic }) => {
                let vnic = vnic.clone();
                let ev = app
                    .failover(
                        &vnic,
                        None,
                        &format!("requested by the client: {}", r.reason),
                    )
                    .map_err(failover_error)?;
                let body = event_body(&ev);
                self.pending.push(ev);
                Ok(("FAILOVER", body))
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
                | Op::AdminBacking(_),
                _,
            ) => Err(ProtoError::new(
                Code::UnknownOp,
                "admin op on the control socket",
            )),
        }
    }

    fn admin(
        &mut self,
        app: &mut Appliance,
        req: &Request,
    ) -> Result<(&'static str, Value), ProtoError> {
        let st = app.status();
        let vnics =
            |st: &crate::appliance::Status| serde_json::to_value(&st.vnics).unwrap_or(Value::Null);
        match &req.op {
            Op::Status => Ok((
                "STATUS",
                json!({"generation": st.generation, "config_generation": st.config_generation, "vnics": vnics(&st)}),
            )),
            Op::Stats => Ok(("STATS", serde_json::to_value(&st).unwrap_or(Value::Null))),
            Op::Show(a) => st
                .vnics
                .iter()
                .find(|v| v.name == a.vnic)
                .map(|v| ("SHOW", json!({"vnic": v})))
                .ok_or_else(|| {
                    ProtoError::new(Code::UnknownVnic, format!("unknown vNIC {:?}", a.vnic))
                }),
            Op::AdminFailover(f) => {
                let ev = app
                    .failover(&f.vnic, f.to.as_deref(), "requested by the administrator")
                    .map_err(failover_error)?;
                let body = event_body(&ev);
                self.pending.push(ev);
                Ok(("FAILOVER", body))
            }
            Op::Reload(f) => {
                let r = self.reload(app, f.path.as_deref().map(Path::new), "admin")?;
                Ok(("RELOADED", serde_json::to_value(r).unwrap_or(Value::Null)))
            }
            Op::ConfigShow => Ok((
                "CONFIG",
                json!({"generation": app.config_generation(), "config": app.config().raw, "history": app.reloads()}),
            )),
            Op::ConfigDiff(f) => {
                let path = self.config_file(f.path.as_deref().map(Path::new))?;
                let cfg = config::load(&path).map_err(|e| {
                    ProtoError::new(Code::InvalidConfig, format!("{}:\n{e}", path.display()))
                })?;
                let steps = app
                    .plan_reload(&cfg)
                    .map_err(|e| ProtoError::new(Code::InvalidConfig, e.to_string()))?;
                Ok((
                    "CONFIG_DIFF",
                    json!({"path": path, "steps": steps.iter().map(|s| s.to_string()).collect::<Vec<_>>()}),
                ))
            }
            Op::AdminRemove(r) => {
                let ev = app
                    .remove_backing(&r.vnic, &r.backing)
                    .map_err(failover_error)?;
                let body = json!({"vnic": r.vnic, "backing": r.backing, "removed": true, "failover": ev.as_ref().map(event_body)});
                if let Some(ev) = ev {
                    self.pending.push(ev);
                }
                Ok(("REMOVE_BACKING", body))
            }
            Op::AdminAuto(a) => {
                app.set_auto_failback(&a.vnic, a.enabled)
                    .map_err(failover_error)?;
                Ok((
                    "AUTO_FAILBACK",
                    json!({"vnic": a.vnic, "enabled": a.enabled}),
                ))
            }
            Op::AdminBacking(b) => {
                let ev = app
                    .set_backing_enabled(&b.vnic, &b.backing, b.enabled, b.force)
                    .map_err(failover_error)?;
                let body = json!({"vnic": b.vnic, "backing": b.backing, "enabled": b.enabled, "failover": ev.as_ref().map(event_body)});
                if let Some(ev) = ev {
                    self.pending.push(ev);
                }
                Ok(("BACKING", body))
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
                };
                let drained =
                    self.force_detach(app, &a.vnic, session, "detached by the administrator")?;
                Ok(("DETACHED", json!({"vnic": a.vnic, "drained": drained})))
            }
            _ => Err(ProtoError::new(
                Code::UnknownOp,
                "control op on the admin socket",
            )),
        }
    }

    /// Tell the client (if any), close its session, then detach and drain.
    fn force_detach(
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
                &proto::reply("DETACHED", 0, epoch + 1, json!({"reason": why})),
            );
            if let Some(c) = self.conns.remove(&s) {
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
            }
        }
        let drained = app
            .detach(vnic)
            .map_err(|e| ProtoError::new(attach_code(&e), e.to_string()))?;
        tracing::warn!(vnic, drained, "{why}");
        Ok(drained)
    }

    fn close(&mut self, app: &mut Appliance, id: u64, why: &str) {
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
        if let Session::Attached { vnic } = c.session {
            match app.detach(&vnic) {
                Ok(drained) => tracing::warn!(
                    vnic,
                    pid = c.creds.pid,
                    drained,
                    "client gone ({why}): detached"
                ),
                Err(e) => tracing::error!(vnic, "client gone ({why}) but detach failed: {e}"),
            }
        }
    }

    fn periodic(&mut self, app: &mut Appliance) {
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
                .iter()
                .filter(|(_, c)| matches!(c.session, Session::Attached { .. }))
                .map(|(i, _)| *i)
                .collect();
            for id in ids {
                let epoch = self.epoch_of(app, id);
                self.send(id, &proto::reply("HEARTBEAT", 0, epoch, json!({})));
            }
        }
        // Link changes of attached vNICs are pushed.
        if now >= self.next_link_check {
            self.next_link_check = now + Duration::from_millis(10);
            let attached: Vec<(u64, String)> = self
                .conns
                .iter()
                .filter_map(|(i, c)| match &c.session {
                    Session::Attached { vnic } => Some((*i, vnic.clone())),
                    _ => None,
                })
                .collect();
            for (id, vnic) in attached {
                let Ok(l) = app.link(&vnic) else { continue };
                let cur = (l.up, l.active_backing.clone());
                if self.last_links.get(&vnic) != Some(&cur) {
                    self.last_links.insert(vnic.clone(), cur);
                    let epoch = self.epoch_of(app, id);
                    self.send(
                        id,
                        &proto::reply(
                            "LINK",
                            0,
                            epoch,
                            json!({"up": l.up, "active_backing": l.active_backing}),
                        ),
                    );
                }
            }
        }
    }

    /// The file a reload reads: `path`, or the one vnicd was started with.
    fn config_file(&self, path: Option<&Path>) -> Result<PathBuf, ProtoError> {
        match (path, &self.config_path) {
            (Some(p), _) => Ok(p.to_path_buf()),
            (None, Some(p)) => Ok(p.clone()),
            (None, None) => Err(ProtoError::new(
                Code::InvalidConfig,
                "vnicd runs the embedded config: name a config file to reload",
            )),
        }
    }

    /// Remember the config file (SIGHUP and `vnicctl reload` without a file re-read it).
    pub fn set_config_path(&mut self, p: PathBuf) {
        self.config_path = Some(p);
    }

    /// Reload: parse and validate the file, prepare every new resource, tell and detach the
    /// clients of vNICs that go away or are recreated (`CONFIG_CHANGED`), commit. On any error
    /// nothing changes.
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
        let prepared = match app.prepare_reload(cfg) {
            Ok(p) => p,
            Err(err) => {
                app.record_failed_reload(&src, &err, started);
                let code = match err {
                    crate::appliance::ReloadError::Config(_) => Code::InvalidConfig,
                    _ => Code::ReloadFailed,
                };
                return Err(ProtoError::new(code, err.to_string()));
            }
        };
        for vnic in prepared.affected() {
            let ids: Vec<u64> = self
                .conns
                .iter()
                .filter(|(_, c)| matches!(&c.session, Session::Attached { vnic: v } | Session::Hello { vnic: v } if *v == vnic))
                .map(|(i, _)| *i)
                .collect();
            for id in ids {
                let epoch = app.vnic_epoch(&vnic).map(|e| e.0).unwrap_or(0);
                self.send(id, &proto::reply("CONFIG_CHANGED", 0, epoch, json!({"vnic": vnic, "reason": "the vNIC was removed or recreated by a config reload: attach again"})));
                self.close(app, id, "config reload");
            }
        }
        let r = app
            .commit_reload(prepared, &src)
            .map_err(|e| ProtoError::new(Code::ReloadFailed, e.to_string()))?;
        let raw = &app.config().raw;
        self.heartbeat = Duration::from_millis(raw.heartbeat_timeout_ms as u64);
        self.admin_uids = raw.admin_uids.clone();
        tracing::info!(generation = r.generation, steps = ?r.steps, took_us = r.took_us, "config reloaded");
        Ok(r)
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
