//! The client ↔ vnicd control protocol (and the admin protocol, same framing).
//!
//! One JSON object per line, at most [`MAX_MESSAGE`] bytes. Requests:
//! `{"v":1,"id":N,"op":"...","epoch":E?, ...fields}`. Every reply carries the request `id` and the
//! vNIC's `epoch`; pushes (`LINK`, `HEARTBEAT`, `DETACHED`, `CONFIG_CHANGED`, `FAILOVER`, `ERROR`)
//! carry `id: 0`. Malformed input gets an `ERROR` reply with a `code` and changes nothing.
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Protocol versions this server speaks.
pub const VERSIONS: &[u32] = &[1];
/// Longest message (bytes, newline excluded).
pub const MAX_MESSAGE: usize = 4096;

/// Machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Malformed,
    TooLarge,
    UnsupportedVersion,
    UnknownOp,
    BadRequest,
    NoHello,
    AlreadyHello,
    NotAttached,
    AlreadyAttached,
    UnknownVnic,
    NotAuthorized,
    Busy,
    OutOfRange,
    StaleEpoch,
    BadToken,
    NotSupported,
    NoStandby,
    UnknownBacking,
    NotOperational,
    InvalidConfig,
    ReloadFailed,
    /// The destination cannot take the vNIC (no device for a label, name or MAC in use, ...).
    CannotTake,
    /// The other appliance's admin socket cannot be reached.
    Unreachable,
    /// The vNIC is in a migration already (or not in one, for its later steps).
    Migrating,
    Internal,
}

impl Code {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Malformed => "malformed",
            Code::TooLarge => "too_large",
            Code::UnsupportedVersion => "unsupported_version",
            Code::UnknownOp => "unknown_op",
            Code::BadRequest => "bad_request",
            Code::NoHello => "no_hello",
            Code::AlreadyHello => "already_hello",
            Code::NotAttached => "not_attached",
            Code::AlreadyAttached => "already_attached",
            Code::UnknownVnic => "unknown_vnic",
            Code::NotAuthorized => "not_authorized",
            Code::Busy => "busy",
            Code::OutOfRange => "out_of_range",
            Code::StaleEpoch => "stale_epoch",
            Code::BadToken => "bad_token",
            Code::NotSupported => "not_supported",
            Code::NoStandby => "no_standby",
            Code::UnknownBacking => "unknown_backing",
            Code::NotOperational => "not_operational",
            Code::InvalidConfig => "invalid_config",
            Code::ReloadFailed => "reload_failed",
            Code::CannotTake => "cannot_take",
            Code::Unreachable => "unreachable",
            Code::Migrating => "migrating",
            Code::Internal => "internal",
        }
    }
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError {
    pub code: Code,
    pub message: String,
}

impl ProtoError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ProtoError {
            code,
            message: message.into(),
        }
    }
}

/// HELLO fields.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub versions: Vec<u32>,
    pub vnic: String,
    #[serde(default)]
    pub token: Option<String>,
}

/// ATTACH fields.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Attach {
    pub queues: u32,
    pub depth: u32,
    pub mtu: u32,
    #[serde(default)]
    pub promisc: bool,
}

/// REQUEST_FAILOVER fields.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RequestFailover {
    pub reason: String,
}

/// Admin FAILOVER fields.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminFailover {
    pub vnic: String,
    #[serde(default)]
    pub to: Option<String>,
}

/// Admin BACKING fields (enable/disable a backing device).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminBacking {
    pub vnic: String,
    pub backing: String,
    pub enabled: bool,
    #[serde(default)]
    pub force: bool,
}

/// Admin RELOAD / CONFIG_DIFF fields.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfigFile {
    #[serde(default)]
    pub path: Option<String>,
}

/// Admin REMOVE_BACKING fields.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminRemove {
    pub vnic: String,
    pub backing: String,
}

/// Admin AUTO_FAILBACK fields.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminAuto {
    pub vnic: String,
    pub enabled: bool,
}

/// `{"vnic": ...}` for admin ops.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VnicArg {
    pub vnic: String,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Hello(Hello),
    Caps,
    Attach(Attach),
    Heartbeat,
    Detach,
    RequestFailover(RequestFailover),
    // admin
    Status,
    Stats,
    Show(VnicArg),
    AdminDetach(VnicArg),
    AdminFailover(AdminFailover),
    AdminBacking(AdminBacking),
    AdminAuto(AdminAuto),
    AdminRemove(AdminRemove),
    Reload(AdminConfigFile),
    ConfigShow,
    ConfigDiff(AdminConfigFile),
    // mobility: vnicctl → source
    Migrate(crate::mobility::Migrate),
    Migration(crate::mobility::MigrateVnic),
    Migrations,
    // mobility: source → destination
    MigratePrepare(Box<crate::mobility::Prepare>),
    MigrateStatus(crate::mobility::MigrateVnic),
    MigrateCutover(crate::mobility::Cutover),
    MigrateAbort(crate::mobility::MigrateVnic),
}

/// A request with its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    pub epoch: Option<u64>,
    pub op: Op,
}

fn fields<T: for<'de> Deserialize<'de>>(
    op: &str,
    rest: Map<String, Value>,
) -> Result<T, ProtoError> {
    serde_json::from_value(Value::Object(rest))
        .map_err(|e| ProtoError::new(Code::BadRequest, format!("{op}: {e}")))
}

fn empty(op: &str, rest: &Map<String, Value>) -> Result<(), ProtoError> {
    match rest.keys().next() {
        None => Ok(()),
        Some(k) => Err(ProtoError::new(
            Code::BadRequest,
            format!("{op}: unknown field `{k}`"),
        )),
    }
}

/// Parse one line. On error, the request id (when it could be read) comes back with it so the
/// error reply can name it.
pub fn parse(line: &[u8], admin: bool) -> Result<Request, (u64, ProtoError)> {
    if line.len() > MAX_MESSAGE {
        return Err((
            0,
            ProtoError::new(
                Code::TooLarge,
                format!("message of {} bytes, at most {MAX_MESSAGE}", line.len()),
            ),
        ));
    }
    let v: Value = serde_json::from_slice(line).map_err(|e| {
        (
            0,
            ProtoError::new(Code::Malformed, format!("not JSON: {e}")),
        )
    })?;
    let Value::Object(mut m) = v else {
        return Err((
            0,
            ProtoError::new(Code::Malformed, "a message must be a JSON object"),
        ));
    };
    let id = match m.remove("id") {
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or(0),
        Some(_) => {
            return Err((
                0,
                ProtoError::new(Code::Malformed, "`id` must be a non-negative integer"),
            ))
        }
        None => return Err((0, ProtoError::new(Code::Malformed, "missing `id`"))),
    };
    let fail = |c: Code, m: String| (id, ProtoError::new(c, m));
    match m.remove("v") {
        Some(Value::Number(n))
            if n.as_u64()
                .is_some_and(|v| VERSIONS.contains(&(v as u32)) && v <= u32::MAX as u64) => {}
        Some(v) => {
            return Err(fail(
                Code::UnsupportedVersion,
                format!("protocol version {v} not supported; supported: {VERSIONS:?}"),
            ))
        }
        None => return Err(fail(Code::Malformed, "missing `v`".into())),
    }
    let op = match m.remove("op") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(fail(Code::Malformed, "`op` must be a string".into())),
        None => return Err(fail(Code::Malformed, "missing `op`".into())),
    };
    let epoch = match m.remove("epoch") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(_) => {
            return Err(fail(
                Code::Malformed,
                "`epoch` must be a non-negative integer".into(),
            ))
        }
    };
    let op = match (op.as_str(), admin) {
        ("HELLO", false) => Op::Hello(fields("HELLO", m).map_err(|e| (id, e))?),
        ("CAPS", false) => empty("CAPS", &m).map(|_| Op::Caps).map_err(|e| (id, e))?,
        ("ATTACH", false) => Op::Attach(fields("ATTACH", m).map_err(|e| (id, e))?),
        ("HEARTBEAT", false) => empty("HEARTBEAT", &m)
            .map(|_| Op::Heartbeat)
            .map_err(|e| (id, e))?,
        ("DETACH", false) => empty("DETACH", &m)
            .map(|_| Op::Detach)
            .map_err(|e| (id, e))?,
        ("REQUEST_FAILOVER", false) => {
            Op::RequestFailover(fields("REQUEST_FAILOVER", m).map_err(|e| (id, e))?)
        }
        ("STATUS", true) => empty("STATUS", &m)
            .map(|_| Op::Status)
            .map_err(|e| (id, e))?,
        ("STATS", true) => empty("STATS", &m).map(|_| Op::Stats).map_err(|e| (id, e))?,
        ("SHOW", true) => Op::Show(fields("SHOW", m).map_err(|e| (id, e))?),
        ("DETACH", true) => Op::AdminDetach(fields("DETACH", m).map_err(|e| (id, e))?),
        ("FAILOVER", true) => Op::AdminFailover(fields("FAILOVER", m).map_err(|e| (id, e))?),
        ("BACKING", true) => Op::AdminBacking(fields("BACKING", m).map_err(|e| (id, e))?),
        ("AUTO_FAILBACK", true) => Op::AdminAuto(fields("AUTO_FAILBACK", m).map_err(|e| (id, e))?),
        ("REMOVE_BACKING", true) => {
            Op::AdminRemove(fields("REMOVE_BACKING", m).map_err(|e| (id, e))?)
        }
        ("RELOAD", true) => Op::Reload(fields("RELOAD", m).map_err(|e| (id, e))?),
        ("CONFIG_SHOW", true) => empty("CONFIG_SHOW", &m)
            .map(|_| Op::ConfigShow)
            .map_err(|e| (id, e))?,
        ("CONFIG_DIFF", true) => Op::ConfigDiff(fields("CONFIG_DIFF", m).map_err(|e| (id, e))?),
        ("MIGRATE", true) => Op::Migrate(fields("MIGRATE", m).map_err(|e| (id, e))?),
        ("MIGRATION", true) => Op::Migration(fields("MIGRATION", m).map_err(|e| (id, e))?),
        ("MIGRATIONS", true) => empty("MIGRATIONS", &m)
            .map(|_| Op::Migrations)
            .map_err(|e| (id, e))?,
        ("MIGRATE_PREPARE", true) => {
            Op::MigratePrepare(Box::new(fields("MIGRATE_PREPARE", m).map_err(|e| (id, e))?))
        }
        ("MIGRATE_STATUS", true) => {
            Op::MigrateStatus(fields("MIGRATE_STATUS", m).map_err(|e| (id, e))?)
        }
        ("MIGRATE_CUTOVER", true) => {
            Op::MigrateCutover(fields("MIGRATE_CUTOVER", m).map_err(|e| (id, e))?)
        }
        ("MIGRATE_ABORT", true) => {
            Op::MigrateAbort(fields("MIGRATE_ABORT", m).map_err(|e| (id, e))?)
        }
        (other, _) => {
            return Err(fail(
                Code::UnknownOp,
                format!(
                    "unknown op {other:?} on the {} socket",
                    if admin { "admin" } else { "control" }
                ),
            ))
        }
    };
    Ok(Request { id, epoch, op })
}

/// A reply: `op`, the request id, the epoch, and the op's typed body (a struct of
/// [`crate::msg`]; its fields follow the envelope).
pub fn reply(op: &str, id: u64, epoch: u64, body: &impl Serialize) -> Value {
    let mut m = match serde_json::to_value(body) {
        Ok(Value::Object(m)) => m,
        Ok(Value::Null) | Err(_) => Map::new(),
        Ok(other) => {
            let mut m = Map::new();
            m.insert("data".into(), other);
            m
        }
    };
    m.insert("v".into(), json!(VERSIONS[VERSIONS.len() - 1]));
    m.insert("id".into(), json!(id));
    m.insert("op".into(), json!(op));
    m.insert("epoch".into(), json!(epoch));
    Value::Object(m)
}

/// An ERROR reply (or push, with id 0).
pub fn error(id: u64, epoch: u64, e: &ProtoError) -> Value {
    reply(
        "ERROR",
        id,
        epoch,
        &crate::msg::ErrorBody {
            code: e.code.as_str().into(),
            message: e.message.clone(),
        },
    )
}

/// One message as a line on the wire.
pub fn encode(msg: &Value) -> String {
    let mut line = msg.to_string();
    line.push('\n');
    line
}

/// A request line: the envelope (`v`, `id`, `op`) and the request's fields.
pub fn request_line(op: &str, id: u64, fields: Value) -> String {
    let mut msg = match fields {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    msg.insert("v".into(), json!(VERSIONS[VERSIONS.len() - 1]));
    msg.insert("id".into(), json!(id));
    msg.insert("op".into(), json!(op));
    encode(&Value::Object(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> (u64, ProtoError) {
        parse(s.as_bytes(), false).unwrap_err()
    }

    #[test]
    fn good_requests() {
        let r = parse(
            br#"{"v":1,"id":7,"op":"HELLO","versions":[1,2],"vnic":"v0"}"#,
            false,
        )
        .unwrap();
        assert_eq!(r.id, 7);
        assert_eq!(
            r.op,
            Op::Hello(Hello {
                versions: vec![1, 2],
                vnic: "v0".into(),
                token: None
            })
        );
        let r = parse(
            br#"{"v":1,"id":8,"op":"ATTACH","queues":1,"depth":256,"mtu":1500,"epoch":3}"#,
            false,
        )
        .unwrap();
        assert_eq!(r.epoch, Some(3));
        assert!(matches!(
            r.op,
            Op::Attach(Attach {
                queues: 1,
                depth: 256,
                mtu: 1500,
                promisc: false
            })
        ));
        let r = parse(br#"{"v":1,"id":9,"op":"SHOW","vnic":"a"}"#, true).unwrap();
        assert_eq!(r.op, Op::Show(VnicArg { vnic: "a".into() }));
    }

    #[test]
    fn bad_requests_get_codes() {
        assert_eq!(err("{nope").1.code, Code::Malformed);
        assert_eq!(err("[1,2]").1.code, Code::Malformed);
        assert_eq!(err(r#"{"v":1,"op":"CAPS"}"#).1.code, Code::Malformed);
        let (id, e) = err(r#"{"v":9,"id":4,"op":"CAPS"}"#);
        assert_eq!((id, e.code), (4, Code::UnsupportedVersion));
        let (id, e) = err(r#"{"v":1,"id":5,"op":"FLY"}"#);
        assert_eq!((id, e.code), (5, Code::UnknownOp));
        let (_, e) = err(r#"{"v":1,"id":5,"op":"ATTACH","queues":1,"depth":64}"#);
        assert_eq!(e.code, Code::BadRequest);
        assert!(e.message.contains("missing field `mtu`"), "{}", e.message);
        let (_, e) = err(r#"{"v":1,"id":5,"op":"CAPS","x":1}"#);
        assert!(e.message.contains("unknown field `x`"));
        let (_, e) = err(r#"{"v":1,"id":5,"op":"ATTACH","queues":-1,"depth":64,"mtu":1500}"#);
        assert_eq!(e.code, Code::BadRequest);
        // admin ops are not on the control socket and vice versa
        assert_eq!(
            err(r#"{"v":1,"id":1,"op":"STATUS"}"#).1.code,
            Code::UnknownOp
        );
        assert_eq!(
            parse(
                br#"{"v":1,"id":1,"op":"HELLO","versions":[1],"vnic":"a"}"#,
                true
            )
            .unwrap_err()
            .1
            .code,
            Code::UnknownOp
        );
        let big = format!(
            r#"{{"v":1,"id":1,"op":"HELLO","versions":[1],"vnic":"{}"}}"#,
            "a".repeat(5000)
        );
        assert_eq!(err(&big).1.code, Code::TooLarge);
    }

    #[test]
    fn replies_carry_id_and_epoch() {
        let r = reply("WELCOME", 3, 9, &json!({"version": 1}));
        assert_eq!(r["id"], 3);
        assert_eq!(r["epoch"], 9);
        assert_eq!(r["op"], "WELCOME");
        assert_eq!(r["version"], 1);
        let e = error(3, 9, &ProtoError::new(Code::Busy, "x"));
        assert_eq!(
            (e["op"].as_str(), e["code"].as_str()),
            (Some("ERROR"), Some("busy"))
        );
    }
}
