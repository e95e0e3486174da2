//! Client side of the control protocol: connect, HELLO, CAPS, ATTACH, HEARTBEAT, DETACH.
//! Replies are matched to requests by id; pushes (id 0) are kept for [`Client::pushes`].
use crate::proto;
use crossbeam::channel::{unbounded, Receiver, RecvTimeoutError};
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

/// A control-socket session.
pub struct Client {
    stream: UnixStream,
    rx: Receiver<Value>,
    next_id: u64,
    pushes: VecDeque<Value>,
    /// The vNIC epoch from the last reply.
    pub epoch: u64,
    /// Reply timeout.
    pub timeout: Duration,
}

impl Client {
    /// Connect to vnicd's control socket.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path)?;
        let read = stream.try_clone()?;
        let (tx, rx) = unbounded();
        std::thread::Builder::new()
            .name("vnic-client-rx".into())
            .spawn(move || {
                for line in BufReader::new(read).lines() {
                    let Ok(line) = line else { break };
                    // A line that is not JSON cannot come from vnicd; keep it visible as a push.
                    let v = serde_json::from_str(&line)
                        .unwrap_or_else(|_| json!({"op": "GARBAGE", "line": line}));
                    if tx.send(v).is_err() {
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

    /// Next message of any kind (reply or push), waiting up to the timeout.
    pub fn recv_any(&mut self) -> Result<Value, ClientError> {
        if let Some(p) = self.pushes.pop_front() {
            return Ok(p);
        }
        match self.rx.recv_timeout(self.timeout) {
            Ok(v) => Ok(v),
            Err(RecvTimeoutError::Timeout) => Err(ClientError::Timeout {
                op: "message".into(),
                ms: self.timeout.as_millis() as u64,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(ClientError::Closed),
        }
    }

    /// Send a request and wait for its reply; ERROR replies become [`ClientError::Refused`].
    pub fn request(&mut self, op: &str, fields: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = match fields {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        msg.insert(
            "v".into(),
            json!(proto::VERSIONS[proto::VERSIONS.len() - 1]),
        );
        msg.insert("id".into(), json!(id));
        msg.insert("op".into(), json!(op));
        let mut line = Value::Object(msg).to_string();
        line.push('\n');
        self.stream.write_all(line.as_bytes())?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = match self.rx.recv_timeout(left) {
                Ok(v) => v,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(ClientError::Timeout {
                        op: op.into(),
                        ms: self.timeout.as_millis() as u64,
                    })
                }
                Err(RecvTimeoutError::Disconnected) => return Err(ClientError::Closed),
            };
            if v["id"].as_u64() != Some(id) {
                self.pushes.push_back(v);
                continue;
            }
            if let Some(e) = v["epoch"].as_u64() {
                self.epoch = e;
            }
            if v["op"] == "ERROR" {
                return Err(ClientError::Refused {
                    op: op.into(),
                    code: v["code"].as_str().unwrap_or("").into(),
                    message: v["message"].as_str().unwrap_or("").into(),
                });
            }
            return Ok(v);
        }
    }

    /// HELLO: negotiate the version and name the vNIC (optionally resuming with a token).
    pub fn hello(&mut self, vnic: &str, token: Option<&str>) -> Result<Value, ClientError> {
        let mut f = json!({"versions": proto::VERSIONS, "vnic": vnic});
        if let Some(t) = token {
            f["token"] = json!(t);
        }
        self.request("HELLO", f)
    }

    /// CAPS.
    pub fn caps(&mut self) -> Result<Value, ClientError> {
        self.request("CAPS", json!({}))
    }

    /// ATTACH: the grant names the rings, the mempool, the MAC and a re-attach token.
    pub fn attach(
        &mut self,
        queues: u32,
        depth: u32,
        mtu: u32,
        promisc: bool,
    ) -> Result<Value, ClientError> {
        self.request(
            "ATTACH",
            json!({"queues": queues, "depth": depth, "mtu": mtu, "promisc": promisc}),
        )
    }

    /// HEARTBEAT.
    pub fn heartbeat(&mut self) -> Result<(), ClientError> {
        self.request("HEARTBEAT", json!({})).map(|_| ())
    }

    /// DETACH.
    pub fn detach(&mut self) -> Result<Value, ClientError> {
        self.request("DETACH", json!({}))
    }

    /// Pushes received so far (LINK, HEARTBEAT, DETACHED, ERROR, ...), oldest first.
    pub fn pushes(&mut self) -> Vec<Value> {
        while let Ok(v) = self.rx.try_recv() {
            self.pushes.push_back(v);
        }
        self.pushes.drain(..).collect()
    }
}
