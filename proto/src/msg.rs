//! Reply bodies and pushes, typed. Every reply also carries the envelope `v`, `id`, `op` and the
//! vNIC's `epoch` ([`crate::wire::reply`]); the bodies here are what follows it.
use crate::status::{Caps, LinkState, QueueRings, VnicStatus};
use serde::{Deserialize, Serialize};

/// `WELCOME`: the HELLO was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub version: u32,
    pub vnic: String,
    /// A client silent for this long is detached.
    pub heartbeat_ms: u64,
    /// The HELLO carried the vNIC's token (the client resumes its vNIC).
    pub resumed: bool,
    /// The shared memory to join (as in `ATTACHED`), so a separate-process client can be
    /// ready before it attaches: once attached it is served at once (a moving client's
    /// successor is ready when the move cuts over).
    #[serde(default)]
    pub file_prefix: Option<String>,
    /// The EAL lcore id it must use (as in `ATTACHED`).
    #[serde(default)]
    pub client_lcore: Option<u32>,
}

/// `CAPS`: what a client may ask for.
pub type CapsReply = Caps;

/// `ATTACHED`: what ATTACH granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    pub queues: u32,
    pub depth: u32,
    pub mtu: u32,
    pub promisc: bool,
    /// Per queue: (rx ring, tx ring) names, for `rte_ring_lookup` in the client.
    pub rings: Vec<QueueRings>,
    pub mempool: String,
    pub mac: String,
    pub link: LinkState,
    /// Re-attach token (HELLO with it resumes this vNIC).
    pub token: String,
    /// EAL lcore id a separate-process client must use.
    pub client_lcore: u32,
    /// The shared-memory file prefix to join as a DPDK secondary; `None` when vnicd runs
    /// in memory (in-process clients only).
    pub file_prefix: Option<String>,
}

/// `DETACHED`: the reply to DETACH (client: `drained`; admin: `vnic` and `drained`) or a push
/// telling the client it was detached (`reason`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detached {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vnic: Option<String>,
    /// Mbufs drained from the client's rings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `FAILOVER`: a switch of the active backing device (reply to a failover request, and a push).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failover {
    pub vnic: String,
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
}

/// `LINK` push: the vNIC's link as its client sees it.
pub type Link = LinkState;

/// `CONFIG_CHANGED` push: a reload removed or recreated the vNIC; the session is closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChanged {
    pub vnic: String,
    pub reason: String,
}

/// `ERROR`: a refused request (or a push with id 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// `HEARTBEAT` (both ways; empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {}

/// Admin `STATUS`: one line per vNIC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    pub generation: u64,
    pub config_generation: u64,
    pub vnics: Vec<VnicStatus>,
    /// vNICs that moved away (state `migrated-out`).
    #[serde(default)]
    pub migrated_out: Vec<crate::status::MigratedOut>,
}

/// Admin `SHOW`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Show {
    pub vnic: VnicStatus,
}

/// One entry of the reload history; also the `RELOADED` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reload {
    /// The config generation after this reload (unchanged when it failed).
    pub generation: u64,
    pub at_unix_ms: u64,
    pub source: String,
    pub ok: bool,
    pub steps: Vec<String>,
    pub error: Option<String>,
    pub took_us: u64,
}

/// Admin `CONFIG`: the running config (as written, defaults filled in) and the reload history.
/// The config is a document to show or save, so it travels as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigReply {
    pub generation: u64,
    pub config: serde_json::Value,
    pub history: Vec<Reload>,
}

/// Admin `CONFIG_DIFF`: what a reload of `path` would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigDiff {
    pub path: String,
    pub steps: Vec<String>,
}

/// Admin `BACKING` (enable/disable) and `REMOVE_BACKING`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackingReply {
    pub vnic: String,
    pub backing: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<bool>,
    /// The switch it caused, if the device was active.
    pub failover: Option<Failover>,
}

/// Admin `AUTO_FAILBACK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoFailback {
    pub vnic: String,
    pub enabled: bool,
}
