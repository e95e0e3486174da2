//! The source's side of a move, as a frontend: it speaks to the destination's admin socket
//! (one connection per move, on its own thread, so the control thread never waits on another
//! appliance) and turns the replies into commands: prepared → the client moves → cutover →
//! done, or failed (the vNIC forwards here as before; the destination releases what it built
//! when told, or when this connection closes).
use crate::appliance::{Appliance, Command, Outcome};
use crossbeam::channel::{unbounded, Receiver, Sender, TryRecvError};
use serde_json::Value;
use std::time::{Duration, Instant};
use vnic_proto::client::{Client, ClientError};
use vnic_proto::mobility::{Migration, Phase, Prepare, Prepared};

/// How much longer than the destination's deadline the source waits for the client.
const GRACE: Duration = Duration::from_secs(1);
/// How often the destination is asked whether the client has arrived.
const ARRIVAL_POLL: Duration = Duration::from_millis(1);

/// A move asked for on the admin socket: the connection to the destination and what to send.
pub struct OutMove {
    pub vnic: String,
    pub client: Client,
    pub prepare: Prepare,
}

/// The destination's admin session, on its own thread.
struct Peer {
    req: Sender<(&'static str, Value)>,
    rep: Receiver<Result<Value, String>>,
}

impl Peer {
    fn spawn(mut client: Client, vnic: &str) -> Option<Peer> {
        let (req, req_rx) = unbounded::<(&'static str, Value)>();
        let (rep_tx, rep) = unbounded();
        std::thread::Builder::new()
            .name(format!("vnic-move-{vnic}"))
            .spawn(move || {
                for (op, body) in req_rx {
                    let r = client.request(op, body).map_err(|e| match e {
                        ClientError::Refused { .. } => e.to_string(),
                        other => format!("the destination's session ended: {other}"),
                    });
                    if rep_tx.send(r).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        Some(Peer { req, rep })
    }
    fn send(&self, op: &'static str, body: Value) -> bool {
        self.req.send((op, body)).is_ok()
    }
}

enum Step {
    Preparing,
    /// Waiting for the client to arrive at the destination.
    Arriving {
        deadline: Instant,
        next_poll: Instant,
        asked: bool,
    },
    /// Stopped here, waiting for the destination to forward.
    CuttingOver {
        t0: Instant,
    },
}

struct Move {
    vnic: String,
    peer: Peer,
    step: Step,
}

/// Moves in flight from this appliance.
#[derive(Default)]
pub struct MobilityFrontend {
    moves: Vec<Move>,
}

fn parse<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("the destination's {what} reply: {e}"))
}

impl MobilityFrontend {
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves in flight.
    pub fn active(&self) -> usize {
        self.moves.len()
    }

    /// Take on a move: send the export to the destination.
    pub fn start(&mut self, app: &mut Appliance, m: OutMove) {
        let body = serde_json::to_value(&m.prepare).unwrap_or(Value::Null);
        let Some(peer) = Peer::spawn(m.client, &m.vnic) else {
            fail(app, &m.vnic, "cannot start the migration thread".into());
            return;
        };
        peer.send("MIGRATE_PREPARE", body);
        self.moves.push(Move {
            vnic: m.vnic,
            peer,
            step: Step::Preparing,
        });
    }

    /// Follow every move one step, as far as the destination's replies allow.
    pub fn poll(&mut self, app: &mut Appliance) {
        let mut i = 0;
        while i < self.moves.len() {
            if advance(app, &mut self.moves[i]) {
                // Dropping the move closes the destination's session.
                self.moves.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }
}

/// The move failed before the destination took over: forward here as before.
fn fail(app: &mut Appliance, vnic: &str, why: String) {
    let _ = app.apply(Command::MigrateFailed {
        vnic: vnic.into(),
        why,
    });
}

/// One step of a move; true when it is over.
fn advance(app: &mut Appliance, m: &mut Move) -> bool {
    let reply = match m.peer.rep.try_recv() {
        Ok(r) => Some(r),
        Err(TryRecvError::Empty) => None,
        Err(TryRecvError::Disconnected) => {
            fail(app, &m.vnic, "the destination's session ended".into());
            return true;
        }
    };
    let now = Instant::now();
    match &mut m.step {
        Step::Preparing => {
            let Some(r) = reply else { return false };
            let prepared: Prepared = match r.and_then(|v| parse(v, "PREPARED")) {
                Ok(p) => p,
                Err(e) => {
                    fail(app, &m.vnic, format!("the destination refused: {e}"));
                    return true;
                }
            };
            let needs_client = match app.apply(Command::MigratePrepared {
                vnic: m.vnic.clone(),
                prepared: prepared.clone(),
            }) {
                Ok(Outcome::ClientMoves(c)) => c,
                Ok(_) => false,
                Err(e) => {
                    abort(app, m, e.to_string());
                    return true;
                }
            };
            if prepared.dry_run {
                return true;
            }
            if needs_client {
                // The destination's own deadline comes first (and says why); this one is for a
                // destination that stops answering.
                m.step = Step::Arriving {
                    deadline: now + Duration::from_millis(prepared.deadline_ms) + GRACE,
                    next_poll: now,
                    asked: false,
                };
                false
            } else {
                cutover(app, m)
            }
        }
        Step::Arriving {
            deadline,
            next_poll,
            asked,
        } => {
            if let Some(r) = reply {
                *asked = false;
                let rec: Migration = match r {
                    Err(e) => {
                        fail(app, &m.vnic, e);
                        return true;
                    }
                    Ok(v) => match parse(v, "MIGRATION") {
                        Ok(x) => x,
                        Err(e) => {
                            fail(app, &m.vnic, format!("the destination: {e}"));
                            return true;
                        }
                    },
                };
                if rec.phase == Phase::Failed {
                    let why = rec.error.unwrap_or_default();
                    fail(app, &m.vnic, format!("the destination released it: {why}"));
                    return true;
                }
                if rec.client_arrived {
                    return cutover(app, m);
                }
            }
            if now >= *deadline {
                let why = "the client did not arrive at the destination in time";
                abort(app, m, why.into());
                return true;
            }
            if !*asked && now >= *next_poll {
                *asked = m.peer.send(
                    "MIGRATE_STATUS",
                    serde_json::json!({ "vnic": m.vnic.clone() }),
                );
                *next_poll = now + ARRIVAL_POLL;
            }
            false
        }
        Step::CuttingOver { t0 } => {
            let Some(r) = reply else { return false };
            let took = t0.elapsed().as_micros() as u64;
            match r {
                Ok(_) => {
                    if let Err(e) = app.apply(Command::MigrateDone {
                        vnic: m.vnic.clone(),
                        cutover_us: took,
                    }) {
                        tracing::error!(vnic = %m.vnic, "releasing after cutover: {e}");
                    }
                }
                Err(e) => {
                    // The destination did not take over: forward here again.
                    abort(app, m, format!("cutover refused by the destination: {e}"));
                }
            }
            true
        }
    }
}

/// The move fails here and the destination is told to release what it built.
fn abort(app: &mut Appliance, m: &Move, why: String) {
    m.peer.send(
        "MIGRATE_ABORT",
        serde_json::json!({ "vnic": m.vnic, "reason": why }),
    );
    fail(app, &m.vnic, why);
}

/// Stop here (the client's last frames go to the VF) and tell the destination to forward.
fn cutover(app: &mut Appliance, m: &mut Move) -> bool {
    let t0 = Instant::now();
    let c = match app.apply(Command::MigrateStop {
        vnic: m.vnic.clone(),
    }) {
        Ok(Outcome::Stopped(c)) => c,
        Ok(_) => return true,
        Err(e) => {
            abort(app, m, e.to_string());
            return true;
        }
    };
    let body = serde_json::to_value(&c).unwrap_or(Value::Null);
    if !m.peer.send("MIGRATE_CUTOVER", body) {
        fail(app, &m.vnic, "the destination's session ended".into());
        return true;
    }
    m.step = Step::CuttingOver { t0 };
    false
}
