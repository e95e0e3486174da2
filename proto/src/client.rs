//! The client library: a session on vnicd's control socket (HELLO, CAPS, ATTACH, HEARTBEAT,
//! DETACH) or its admin socket. Replies are matched to requests by id and decoded into the typed
//! messages of [`crate::msg`]; pushes (id 0) are kept for [`Client::pushes`]. The raw JSON of
//! any message stays available for tools and protocol tests ([`Client::request`],
//! [`Client::recv_json`], [`Client::pushes_json`]).
use crate::msg::{
    Attached, AutoFailback, BackingReply, ConfigChanged, ConfigDiff, ConfigReply, Detached,
    ErrorBody, Failover, Reload, Show, StatusReply, Welcome,
};
use crate::status::{Caps, LinkState, Status, VnicStatus};
use crate::wire;
use crossbeam::channel::{unbounded, Receiver, RecvTimeoutError};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Client-side errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("no reply to {op} within {ms} ms")]
    Timeout { op: String, ms: u64 },
    #[error("vnicd closed the session")]
    Closed,
    #[error("vnicd refused {op}: {code}: {message}")]
    Refused {
        op: String,
        code: String,
        message: String,
    },
    #[error("{op}: vnicd sent a reply this client cannot read: {why}")]
    BadReply { op: String, why: String },
}

impl ClientError {
    /// The server's error code, for a refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The envelope every message from vnicd carries.
#[derive(Debug, Clone, Deserialize)]
struct Envelope {
    #[serde(default)]
    id: u64,
    #[serde(default)]
    op: String,
    #[serde(default)]
    epoch: Option<u64>,
}

/// One line from vnicd: its envelope and the text, decoded on demand.
#[derive(Debug, Clone)]
struct Line {
    env: Envelope,
    text: String,
}

impl Line {
    fn new(text: String) -> Line {
        // A line that is not a JSON object cannot come from vnicd; it stays visible (op GARBAGE).
        let env = serde_json::from_str(&text).unwrap_or(Envelope {
            id: 0,
            op: "GARBAGE".into(),
            epoch: None,
        });
        Line { env, text }
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|_| json!({"op": "GARBAGE", "line": self.text}))
    }
    fn body<T: DeserializeOwned>(&self, op: &str) -> Result<T, ClientError> {
        serde_json::from_str(&self.text).map_err(|e| ClientError::BadReply {
            op: op.into(),
            why: e.to_string(),
        })
    }
}

/// A push from vnicd (a message with id 0).
#[derive(Debug, Clone, PartialEq)]
pub enum Push {
    Heartbeat,
    Link(LinkState),
    Failover(Failover),
    Detached(Detached),
    ConfigChanged(ConfigChanged),
    /// The vNIC is moving to another appliance: start a successor there.
    Migrate(crate::mobility::MigratePush),
    Error(ErrorBody),
    /// Anything this client does not know (a newer server), with its op.
    Other(String),
}

impl Push {
    fn from_line(l: &Line) -> Push {
        let op = l.env.op.as_str();
        let typed = match op {
            "HEARTBEAT" => Some(Push::Heartbeat),
            "LINK" => l.body(op).ok().map(Push::Link),
            "FAILOVER" => l.body(op).ok().map(Push::Failover),
            "DETACHED" => l.body(op).ok().map(Push::Detached),
            "CONFIG_CHANGED" => l.body(op).ok().map(Push::ConfigChanged),
            "MIGRATE" => l.body(op).ok().map(Push::Migrate),
            "ERROR" => l.body(op).ok().map(Push::Error),
            _ => None,
        };
        typed.unwrap_or_else(|| Push::Other(op.into()))
    }
}

/// A session on the control or admin socket.
pub struct Client {
    stream: UnixStream,
    rx: Receiver<String>,
    next_id: u64,
    pushes: VecDeque<Line>,
    /// The vNIC epoch from the last reply.
    pub epoch: u64,
    /// Reply timeout.
    pub timeout: Duration,
}

impl Client {
    /// Connect to one of vnicd's sockets.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path)?;
        let read = stream.try_clone()?;
        let (tx, rx) = unbounded();
        std::thread::Builder::new()
            .name("vnic-client-rx".into())
            .spawn(move || {
                for line in BufReader::new(read).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Client {
            stream,
            rx,
            next_id: 1,
            pushes: VecDeque::new(),
            epoch: 0,
            timeout: Duration::from_secs(2),
        })
    }

    /// Send raw bytes (tests of malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    fn recv_line(&mut self, op: &str, within: Duration) -> Result<Line, ClientError> {
        match self.rx.recv_timeout(within) {
            Ok(t) => Ok(Line::new(t)),
            Err(RecvTimeoutError::Timeout) => Err(ClientError::Timeout {
                op: op.into(),
                ms: self.timeout.as_millis() as u64,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(ClientError::Closed),
        }
    }

    /// The next message of any kind (reply or push) as raw JSON, waiting up to the timeout.
    pub fn recv_json(&mut self) -> Result<Value, ClientError> {
        if let Some(p) = self.pushes.pop_front() {
            return Ok(p.json());
        }
        let t = self.timeout;
        Ok(self.recv_line("message", t)?.json())
    }

    /// Send a request and wait for its reply line; ERROR replies become
    /// [`ClientError::Refused`].
    fn call(&mut self, op: &str, fields: Value) -> Result<Line, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let line = wire::request_line(op, id, fields);
        self.stream.write_all(line.as_bytes())?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let l = self.recv_line(op, deadline.saturating_duration_since(Instant::now()))?;
            if l.env.id != id {
                self.pushes.push_back(l);
                continue;
            }
            if let Some(e) = l.env.epoch {
                self.epoch = e;
            }
            if l.env.op == "ERROR" {
                let e: ErrorBody = l.body(op)?;
                return Err(ClientError::Refused {
                    op: op.into(),
                    code: e.code,
                    message: e.message,
                });
            }
            return Ok(l);
        }
    }

    /// Send a request and decode its reply as `T`.
    pub fn call_typed<T: DeserializeOwned>(
        &mut self,
        op: &str,
        fields: Value,
    ) -> Result<T, ClientError> {
        self.call(op, fields)?.body(op)
    }

    /// Send a request and return its reply as raw JSON (tools and protocol tests).
    pub fn request(&mut self, op: &str, fields: Value) -> Result<Value, ClientError> {
        Ok(self.call(op, fields)?.json())
    }

    /// HELLO: negotiate the version and name the vNIC (optionally resuming with a token).
    pub fn hello(&mut self, vnic: &str, token: Option<&str>) -> Result<Welcome, ClientError> {
        let mut f = json!({"versions": wire::VERSIONS, "vnic": vnic});
        if let Some(t) = token {
            f["token"] = json!(t);
        }
        self.call_typed("HELLO", f)
    }

    /// CAPS.
    pub fn caps(&mut self) -> Result<Caps, ClientError> {
        self.call_typed("CAPS", json!({}))
    }

    /// ATTACH: the grant names the rings, the mempool, the MAC and a re-attach token.
    pub fn attach(
        &mut self,
        queues: u32,
        depth: u32,
        mtu: u32,
        promisc: bool,
    ) -> Result<Attached, ClientError> {
        self.call_typed(
            "ATTACH",
            json!({"queues": queues, "depth": depth, "mtu": mtu, "promisc": promisc}),
        )
    }

    /// HEARTBEAT.
    pub fn heartbeat(&mut self) -> Result<(), ClientError> {
        self.call("HEARTBEAT", json!({})).map(|_| ())
    }

    /// DETACH.
    pub fn detach(&mut self) -> Result<Detached, ClientError> {
        self.call_typed("DETACH", json!({}))
    }

    /// REQUEST_FAILOVER (control socket).
    pub fn request_failover(&mut self, reason: &str) -> Result<Failover, ClientError> {
        self.call_typed("REQUEST_FAILOVER", json!({"reason": reason}))
    }

    /// Pushes received so far, oldest first.
    pub fn pushes(&mut self) -> Vec<Push> {
        self.take_pushes().iter().map(Push::from_line).collect()
    }

    /// Pushes received so far as raw JSON, oldest first.
    pub fn pushes_json(&mut self) -> Vec<Value> {
        self.take_pushes().iter().map(Line::json).collect()
    }

    fn take_pushes(&mut self) -> Vec<Line> {
        while let Ok(t) = self.rx.try_recv() {
            self.pushes.push_back(Line::new(t));
        }
        self.pushes.drain(..).collect()
    }

    // Admin socket.

    /// STATUS: one entry per vNIC.
    pub fn status(&mut self) -> Result<StatusReply, ClientError> {
        self.call_typed("STATUS", json!({}))
    }
    /// STATS: everything (vNICs, data cores, EAL).
    pub fn stats(&mut self) -> Result<Status, ClientError> {
        self.call_typed("STATS", json!({}))
    }
    /// SHOW one vNIC.
    pub fn show(&mut self, vnic: &str) -> Result<VnicStatus, ClientError> {
        self.call_typed::<Show>("SHOW", json!({"vnic": vnic}))
            .map(|s| s.vnic)
    }
    /// Detach a vNIC's client (admin DETACH).
    pub fn admin_detach(&mut self, vnic: &str) -> Result<Detached, ClientError> {
        self.call_typed("DETACH", json!({"vnic": vnic}))
    }
    /// Planned switch (admin FAILOVER).
    pub fn failover(&mut self, vnic: &str, to: Option<&str>) -> Result<Failover, ClientError> {
        self.call_typed("FAILOVER", json!({"vnic": vnic, "to": to}))
    }
    /// Reload the config vnicd runs, or `path`.
    pub fn reload(&mut self, path: Option<&str>) -> Result<Reload, ClientError> {
        self.call_typed("RELOAD", json!({"path": path}))
    }
    /// The running config and the reload history.
    pub fn config_show(&mut self) -> Result<ConfigReply, ClientError> {
        self.call_typed("CONFIG_SHOW", json!({}))
    }
    /// What a reload of `path` (or of the running file) would do.
    pub fn config_diff(&mut self, path: Option<&str>) -> Result<ConfigDiff, ClientError> {
        self.call_typed("CONFIG_DIFF", json!({"path": path}))
    }
    /// Enable or disable a backing device.
    pub fn set_backing(
        &mut self,
        vnic: &str,
        backing: &str,
        enabled: bool,
        force: bool,
    ) -> Result<BackingReply, ClientError> {
        self.call_typed(
            "BACKING",
            json!({"vnic": vnic, "backing": backing, "enabled": enabled, "force": force}),
        )
    }
    /// Hot-remove a backing device.
    pub fn remove_backing(
        &mut self,
        vnic: &str,
        backing: &str,
    ) -> Result<BackingReply, ClientError> {
        self.call_typed("REMOVE_BACKING", json!({"vnic": vnic, "backing": backing}))
    }
    /// Move a vNIC to the appliance whose admin socket is `to` (`map`: source port label →
    /// destination port label). The reply is the migration's record as it starts; follow it
    /// with [`Client::migration`].
    pub fn migrate(
        &mut self,
        vnic: &str,
        to: &str,
        map: &std::collections::BTreeMap<String, String>,
        dry_run: bool,
    ) -> Result<crate::mobility::Migration, ClientError> {
        self.call_typed(
            "MIGRATE",
            json!({"vnic": vnic, "to": to, "map": map, "dry_run": dry_run}),
        )
    }
    /// The latest migration of a vNIC on this appliance.
    pub fn migration(&mut self, vnic: &str) -> Result<crate::mobility::Migration, ClientError> {
        self.call_typed("MIGRATION", json!({"vnic": vnic}))
    }
    /// Every migration this appliance remembers.
    pub fn migrations(&mut self) -> Result<crate::mobility::Migrations, ClientError> {
        self.call_typed("MIGRATIONS", json!({}))
    }
    /// Automatic fail-back on or off.
    pub fn auto_failback(&mut self, vnic: &str, on: bool) -> Result<AutoFailback, ClientError> {
        self.call_typed("AUTO_FAILBACK", json!({"vnic": vnic, "enabled": on}))
    }
}
