//! Mobility (PowerVM's LPM for vNICs): a live vNIC moves to another appliance keeping its
//! identity. Make-before-break: the destination builds the vNIC (`incoming`: not forwarding,
//! not announced) before anything changes here; the client moves (a successor process, a QEMU
//! live migration, a restarted container); at cutover the source sends what its client still
//! has, stops, and the destination forwards and announces. Any failure before cutover leaves
//! the source as it was.
//!
//! `incoming.rs` is the destination's half, `outgoing.rs` the source's; the source's sequence
//! (talking to the destination) is driven by `frontend::mobility`.
mod incoming;
mod outgoing;

use crate::appliance::{unix_ms, Appliance};
use crate::config::VnicConfig;
pub(crate) use crate::vnic::Moving;
use std::time::Instant;
pub use vnic_proto::mobility::{
    BackingMap, Cutover, Direction, MigratePush, Migration, Phase, PhaseChange, Prepare, Prepared,
    VnicExport,
};

/// Why a move could not be made (nothing changed where it was refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MobilityError {
    /// The destination cannot take the vNIC.
    #[error("{0}")]
    CannotTake(String),
    #[error("unknown vNIC {0:?}")]
    UnknownVnic(String),
    /// The vNIC is in another phase of a move (or in none, for a later step).
    #[error("{0}")]
    Phase(String),
    #[error("{0}")]
    Failed(String),
}

/// A vNIC that left: its own config (devices it gets back if it returns) and where it went.
#[derive(Debug, Clone)]
pub(crate) struct Departed {
    pub(crate) cfg: VnicConfig,
    pub(crate) to: String,
}

/// A migration's record and its clock.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) m: Migration,
    pub(crate) started: Instant,
    /// The destination: it was a vNIC of its own that came back (its tombstone).
    pub(crate) came_home: Option<Departed>,
}

/// Most migrations remembered (oldest forgotten first; in-flight ones are never dropped).
const MAX_RECORDS: usize = 64;

impl Record {
    /// A migration beginning now, in phase `prepare`.
    pub(crate) fn begin(
        vnic: &str,
        direction: Direction,
        peer: &str,
        transport: &str,
        dry_run: bool,
    ) -> Record {
        Record::new(Migration {
            vnic: vnic.into(),
            direction,
            peer: peer.into(),
            transport: transport.into(),
            dry_run,
            phase: Phase::Prepare,
            phases: Vec::new(),
            error: None,
            backing: Vec::new(),
            client_socket: None,
            client_arrived: false,
            cutover_us: None,
            released_pool_in_use: None,
        })
    }

    fn new(m: Migration) -> Record {
        let mut r = Record {
            m,
            started: Instant::now(),
            came_home: None,
        };
        let p = r.m.phase;
        r.m.phases.clear();
        r.enter(p);
        r
    }
    /// Enter `phase` (logged with its time).
    pub(crate) fn enter(&mut self, phase: Phase) {
        let after_us = self.started.elapsed().as_micros() as u64;
        self.m.phase = phase;
        self.m.phases.push(PhaseChange {
            phase,
            at_unix_ms: unix_ms(),
            after_us,
        });
        let dir = match self.m.direction {
            Direction::Out => "out",
            Direction::In => "in",
        };
        tracing::info!(vnic = %self.m.vnic, direction = dir, peer = %self.m.peer, phase = phase.as_str(), after_us, "migration");
    }
    pub(crate) fn fail(&mut self, why: &str) {
        self.m.error = Some(why.to_string());
        self.enter(Phase::Failed);
        tracing::warn!(vnic = %self.m.vnic, "migration failed: {why}");
    }
}

impl Appliance {
    /// Every migration remembered, oldest first.
    pub fn migrations(&self) -> Vec<Migration> {
        self.migrations.iter().map(|r| r.m.clone()).collect()
    }

    /// The latest migration of `vnic` (either direction).
    pub fn migration(&self, vnic: &str) -> Option<Migration> {
        self.migration_record(vnic).map(|r| r.m.clone())
    }

    pub(crate) fn migration_record(&self, vnic: &str) -> Option<&Record> {
        self.migrations.iter().rev().find(|r| r.m.vnic == vnic)
    }

    pub(crate) fn record_mut(&mut self, vnic: &str) -> Option<&mut Record> {
        self.migrations.iter_mut().rev().find(|r| r.m.vnic == vnic)
    }

    pub(crate) fn push_record(&mut self, r: Record) {
        if self.migrations.len() >= MAX_RECORDS {
            if let Some(i) = self.migrations.iter().position(|r| r.m.phase.is_final()) {
                self.migrations.remove(i);
            }
        }
        self.migrations.push_back(r);
    }

    /// vNICs that left this appliance and have not come back.
    pub fn departed(&self) -> Vec<(String, String)> {
        self.departed
            .iter()
            .map(|d| (d.cfg.name.clone(), d.to.clone()))
            .collect()
    }

    /// The index of `vnic`, as a mobility error.
    pub(crate) fn moving_index(&self, vnic: &str) -> Result<usize, MobilityError> {
        self.vnic_index(vnic)
            .map_err(|_| MobilityError::UnknownVnic(vnic.into()))
    }

    /// The record of `vnic`'s migration in progress.
    pub(crate) fn current(&mut self, vnic: &str) -> Result<&mut Record, MobilityError> {
        self.record_mut(vnic)
            .ok_or_else(|| MobilityError::Phase(format!("vNIC {vnic:?} is not migrating")))
    }

    /// Take `vnic` out of the running config (it left, or never arrived); its entry.
    pub(crate) fn forget_config(&mut self, vnic: &str) -> Option<VnicConfig> {
        let mut raw = self.config.raw().clone();
        let k = raw.vnics.iter().position(|c| c.name == vnic)?;
        let cfg = raw.vnics.remove(k);
        // Removing a vNIC from a valid config leaves a valid one.
        if let Ok(c) = raw.validate() {
            self.config = c;
        }
        Some(cfg)
    }

    /// Whether `vnic` is not forwarding here because it is arriving (not cut over yet).
    pub(crate) fn is_incoming(&self, i: usize) -> bool {
        matches!(self.vnics[i].moving, Moving::In { .. })
    }
}
