//! Mobility: a live vNIC moves from one appliance (the source, A) to another (the destination,
//! B), keeping its identity. `vnicctl migrate` asks A (`MIGRATE`); A speaks to B's admin socket
//! (`MIGRATE_PREPARE`, `MIGRATE_STATUS`, `MIGRATE_CUTOVER`, `MIGRATE_ABORT`) and tells a shm
//! client where to start its successor (the `MIGRATE` push). Every phase change is recorded with
//! its time on both sides ([`Migration`]).
use crate::status::VnicCounts;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Admin `MIGRATE` (vnicctl → A): move `vnic` to the appliance whose admin socket is `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Migrate {
    pub vnic: String,
    /// The destination's admin socket (on real hosts a forwarded one: `ssh -L`).
    pub to: String,
    /// Source `port_label` → destination `port_label` (default: the same label).
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    /// Prepare on the destination, report whether it can take the vNIC, release.
    #[serde(default)]
    pub dry_run: bool,
}

/// What the destination needs to rebuild the vNIC: its config as the source runs it (identity,
/// queues, policy, credentials, IPv4 addresses, client transport), and its session state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VnicExport {
    /// The source's `vnics[]` entry (a document: the destination validates it as its own).
    pub config: serde_json::Value,
    /// The client's re-attach token (its successor resumes with it).
    #[serde(default)]
    pub token: Option<String>,
    pub epoch: u64,
    /// Counters so far (the destination's continue from them).
    pub counters: VnicCounts,
    /// The source, for the destination's records.
    pub from: String,
}

/// `MIGRATE_PREPARE` (A → B).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prepare {
    pub export: VnicExport,
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    #[serde(default)]
    pub dry_run: bool,
}

/// One backing device of the moving vNIC and the one the destination gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackingMap {
    /// Source device and its port label.
    pub from: String,
    pub from_label: String,
    /// Destination device (a spare) and its port label.
    pub to: String,
    pub to_label: String,
    pub priority: u32,
}

/// `PREPARED` (B → A): the vNIC is built on B (`incoming`: not announced, not forwarding), or,
/// for a dry run, could be and was released again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepared {
    pub vnic: String,
    pub dry_run: bool,
    pub backing: Vec<BackingMap>,
    /// Where the client reaches it on B: the control socket (shm) or the vhost-user / memif
    /// socket.
    pub control_socket: String,
    pub client_socket: Option<String>,
    /// Milliseconds until B releases it if the client has not arrived.
    pub deadline_ms: u64,
}

/// `MIGRATE_STATUS`, `MIGRATION` and `MIGRATE_ABORT` name a vNIC (abort with a reason).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateVnic {
    pub vnic: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `MIGRATE_CUTOVER` (A → B): A has stopped forwarding; B starts and announces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cutover {
    pub vnic: String,
    /// A's final counters.
    pub counters: VnicCounts,
    /// The vNIC's epoch on A (`epoch` is the envelope's).
    pub vnic_epoch: u64,
}

/// The push a shm client gets: start a successor on `control_socket` (vnicd B), resumed with
/// `token`; keep serving here until `DETACHED` says the vNIC has moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigratePush {
    pub vnic: String,
    pub control_socket: String,
    pub token: String,
}

/// Which way a migration goes, seen from the appliance that records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Out,
    In,
}

/// A migration's phases. Out (A): `prepare` → `client-moving` → `cutover` → `done` (the vNIC is
/// `migrated-out` and released). In (B): `prepare` → `incoming` → `cutover` → `done`. Either
/// side may end in `failed` (the reason in `error`; A keeps forwarding, B releases) or, for a
/// dry run, `released`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Prepare,
    ClientMoving,
    Incoming,
    Cutover,
    Done,
    Released,
    Failed,
}

impl Phase {
    /// No more changes come.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Done | Phase::Released | Phase::Failed)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare",
            Phase::ClientMoving => "client-moving",
            Phase::Incoming => "incoming",
            Phase::Cutover => "cutover",
            Phase::Done => "done",
            Phase::Released => "released",
            Phase::Failed => "failed",
        }
    }
}

/// One phase change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseChange {
    pub phase: Phase,
    pub at_unix_ms: u64,
    /// Microseconds since the migration began.
    pub after_us: u64,
}

/// A migration as one appliance saw it (status JSON, `vnicctl show`, the `MIGRATION` reply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    pub vnic: String,
    pub direction: Direction,
    /// The other appliance (its admin socket, as given).
    pub peer: String,
    pub transport: String,
    pub dry_run: bool,
    pub phase: Phase,
    pub phases: Vec<PhaseChange>,
    pub error: Option<String>,
    pub backing: Vec<BackingMap>,
    /// Where the client goes on the destination.
    pub client_socket: Option<String>,
    /// The destination: the client has arrived (attached or connected there).
    pub client_arrived: bool,
    /// Out: from A stopping forwarding until B said it forwards (µs).
    pub cutover_us: Option<u64>,
    /// Out: mbufs of the vNIC's pool still out when it was released here (must be 0).
    pub released_pool_in_use: Option<u32>,
}

/// Admin `MIGRATIONS`: every migration this appliance remembers, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migrations {
    pub migrations: Vec<Migration>,
}
