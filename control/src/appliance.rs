//! The appliance: the thin owner of the model (vNICs), the data cores and the EAL. Bring-up and
//! teardown happen here in the safe order; features live in their own rooms (`vnic`, `publish`,
//! `health`, `switch`, `reload`, `status`) as `impl Appliance` blocks.
use crate::config::{self, Config, ConfigErrors, LaunchKind};
use crate::vnic::{build_vnic, Vnic};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;
use vnic_dataplane::{eal, Eal, IdleBackoff, InlineMode, Launch, Mempool, Ring, VnicSlot, Worker};

pub use crate::reload::{PreparedReload, ReloadError};
pub use crate::status::{BackingStatus, CoreStatus, Status, VnicStatus};
pub use crate::switch::FailoverError;
pub use crate::vnic::{AttachError, AttachRequest, Owner};
pub use crate::vnic::{
    AttachGrant, BackingState, Caps, LinkState, QueueRings, CLIENT_LCORES, CLIENT_LCORE_BASE,
    POOL_CACHE, VF_DESC,
};

/// Why the appliance could not start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StartError {
    #[error("config: {0}")]
    Config(#[from] ConfigErrors),
    #[error("EAL: {0}")]
    Eal(vnic_dataplane::Error),
    #[error("data core {core}: {err}")]
    DataCore {
        core: u32,
        err: vnic_dataplane::Error,
    },
    #[error("vNIC {vnic}: attach: {err}")]
    Attach { vnic: String, err: AttachError },
    #[error("vNIC {vnic}: {err}")]
    Client {
        vnic: String,
        err: crate::vnic::EndpointError,
    },
    #[error("vNIC {vnic}: {what}: {err}")]
    Vnic {
        vnic: String,
        what: &'static str,
        err: vnic_dataplane::Error,
    },
}

/// Options that are not part of the config file.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Serve every vNIC queue with an in-core client on its data core (demo and benchmarks).
    pub inline_client: Option<InlineMode>,
    /// Override the host hugepage probe (tests); `None` means probe the host.
    pub host_hugepages: Option<bool>,
}

/// What clients hear of: queued where the model changes, drained through one queue by every
/// frontend ([`Appliance::drain_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The active backing device changed.
    Failover {
        vnic: String,
        from: Option<String>,
        to: String,
        reason: String,
    },
    /// The vNIC's link as its client sees it changed: up or down, or carried by another device.
    Link { vnic: String, link: LinkState },
    /// A reload removed or rebuilt the vNIC: its clients' sessions are over (attach again).
    Withdrawn { vnic: String },
    /// The vNIC is moving to another appliance: its shm client starts a successor there.
    Migrate {
        vnic: String,
        control_socket: String,
        token: String,
    },
    /// The vNIC moved to `to` and was released here: its clients' sessions are over.
    Migrated { vnic: String, to: String },
}

/// What a frontend asks of the appliance: every change to the model comes in as one of these.
#[derive(Debug, Clone)]
pub enum Command {
    /// Give a client the vNIC's rings.
    Attach {
        vnic: String,
        req: AttachRequest,
        owner: Owner,
    },
    /// Take them back (drained, every mbuf returned).
    Detach { vnic: String },
    /// Planned switch, to `to` or to the best other operational device.
    Failover {
        vnic: String,
        to: Option<String>,
        why: String,
    },
    /// Take a backing device out of service, or put it back.
    SetBacking {
        vnic: String,
        backing: String,
        enabled: bool,
        force: bool,
    },
    /// Hot-remove a backing device.
    RemoveBacking { vnic: String, backing: String },
    /// Automatic fail-back on or off.
    SetAutoFailback { vnic: String, on: bool },
    /// Put a new config in service (only the differences change).
    Reload { config: Box<Config>, source: String },
    /// A vhost-user or memif client connected: serve it.
    Connect {
        vnic: String,
        side: crate::vnic::Side,
        owner: Owner,
    },
    /// It went away: stop serving it (nothing to drain: those transports copy).
    Disconnect { vnic: String },
    /// A client of this vNIC was refused (recorded for status; the transport refused it).
    Refused { vnic: String, why: String },
    /// The vhost frontend enabled or disabled queues: re-map the vNIC's queues.
    Requeue { vnic: String },
    /// Source: begin moving a vNIC (its export comes back).
    MigrateOut {
        vnic: String,
        to: String,
        dry_run: bool,
    },
    /// Source: the destination prepared it; tell its client.
    MigratePrepared {
        vnic: String,
        prepared: crate::mobility::Prepared,
    },
    /// Source: cut over (send what the client has, stop forwarding).
    MigrateStop { vnic: String },
    /// Source: the destination forwards; release the vNIC here.
    MigrateDone { vnic: String, cutover_us: u64 },
    /// Source: the move failed before the destination took over; forward as before.
    MigrateFailed { vnic: String, why: String },
    /// Destination: build an arriving vNIC (`peer` names the source).
    MigrateIn {
        prepare: Box<crate::mobility::Prepare>,
        peer: String,
    },
    /// Destination: the source stopped; forward and announce.
    MigrateCutover { cutover: crate::mobility::Cutover },
    /// Destination: release an arriving vNIC.
    MigrateAbort { vnic: String, why: String },
}

/// What a command did (the events it caused are in the queue too).
#[derive(Debug, Clone)]
pub enum Outcome {
    Attached(AttachGrant),
    Detached {
        drained: usize,
    },
    /// The switch a failover made.
    Switched(Event),
    /// Done; the switch it caused, if any (disabling or removing the active device).
    Changed(Option<Event>),
    Reloaded(crate::reload::Reload),
    /// A client side connected (the epoch it starts).
    Connected {
        epoch: u64,
    },
    /// A move began: the vNIC as the destination needs it.
    Exported(Box<crate::mobility::VnicExport>),
    /// The destination prepared the vNIC (or, for a dry run, could).
    Prepared(crate::mobility::Prepared),
    /// Source, prepared: whether a client must arrive at the destination before cutover.
    ClientMoves(bool),
    /// Source, cut over: what the destination takes over.
    Stopped(crate::mobility::Cutover),
    /// A migration's record after the step.
    Migration(Box<crate::mobility::Migration>),
}

/// Why a command was refused (each says whether anything changed).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error(transparent)]
    Failover(#[from] FailoverError),
    #[error(transparent)]
    Reload(#[from] ReloadError),
    #[error(transparent)]
    Mobility(#[from] crate::mobility::MobilityError),
}

/// Wall-clock milliseconds since the Unix epoch, for records (0 if the clock is before it).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Most events held for frontends that have not drained them (the oldest go first).
const MAX_EVENTS: usize = 4096;

pub(crate) struct Core {
    pub(crate) core: u32,
    pub(crate) worker: Worker,
}

/// What teardown found.
#[derive(Debug, Clone, Serialize)]
pub struct ShutdownReport {
    /// Mbufs drained from client rings.
    pub drained_from_rings: usize,
    /// (pool, size, in use at the end): in use must be 0.
    pub pools: Vec<(String, u32, u32)>,
}

impl ShutdownReport {
    /// Mbufs not returned to their pools.
    pub fn leaked(&self) -> u32 {
        self.pools.iter().map(|p| p.2).sum()
    }
}

/// The running appliance. Fields drop in the safe order if `shutdown` was not called.
pub struct Appliance {
    pub(crate) cores: Vec<Core>,
    pub(crate) vnics: Vec<Vnic>,
    pub(crate) config: Config,
    /// Forwarding-table publications so far.
    pub(crate) generation: u64,
    /// Config generation: 0 at start, +1 per successful reload.
    pub(crate) config_generation: u64,
    /// Reload history, newest last (bounded).
    pub(crate) reloads: VecDeque<crate::reload::Reload>,
    /// vNICs built so far (keeps DPDK object names of recreated vNICs unique).
    pub(crate) incarnations: u64,
    /// The in-core client mode for `Owner::Inline` attachments.
    pub(crate) inline: Option<InlineMode>,
    pub(crate) eal: Option<Eal>,
    /// Events not yet drained by the frontends, oldest first.
    pub(crate) events: VecDeque<Event>,
    /// Migrations in either direction, oldest first (bounded).
    pub(crate) migrations: VecDeque<crate::mobility::Record>,
    /// vNICs of our config that moved away (a reload does not bring them back).
    pub(crate) departed: Vec<crate::mobility::Departed>,
    /// vNICs that moved here (in the running config, not in the file; reloads keep them).
    pub(crate) adopted: Vec<String>,
    /// Event counters for the status and the metrics.
    pub(crate) tally: vnic_proto::status::Tally,
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if self.eal.is_some() {
            self.teardown();
        }
    }
}

impl Appliance {
    /// Stop data core `core` (fault injection for tests: a core that no longer takes tables).
    #[cfg(feature = "testing")]
    pub fn stop_data_core(&mut self, core: u32) -> bool {
        match self.cores.iter_mut().find(|c| c.core == core) {
            Some(c) => {
                c.worker.stop();
                true
            }
            None => false,
        }
    }

    /// Carry out one command: the one way frontends change the model.
    pub fn apply(&mut self, cmd: Command) -> Result<Outcome, CommandError> {
        let out = self.carry_out(cmd)?;
        match out {
            Outcome::Attached(_) | Outcome::Connected { .. } => self.tally.attaches += 1,
            Outcome::Detached { .. } => self.tally.detaches += 1,
            _ => {}
        }
        Ok(out)
    }

    fn carry_out(&mut self, cmd: Command) -> Result<Outcome, CommandError> {
        Ok(match cmd {
            Command::Attach { vnic, req, owner } => {
                Outcome::Attached(self.attach(&vnic, req, owner)?)
            }
            Command::Detach { vnic } => Outcome::Detached {
                drained: self.detach(&vnic)?,
            },
            Command::Failover { vnic, to, why } => {
                Outcome::Switched(self.failover(&vnic, to.as_deref(), &why)?)
            }
            Command::SetBacking {
                vnic,
                backing,
                enabled,
                force,
            } => Outcome::Changed(self.set_backing_enabled(&vnic, &backing, enabled, force)?),
            Command::RemoveBacking { vnic, backing } => {
                Outcome::Changed(self.remove_backing(&vnic, &backing)?)
            }
            Command::SetAutoFailback { vnic, on } => {
                self.set_auto_failback(&vnic, on)?;
                Outcome::Changed(None)
            }
            Command::Reload { config, source } => Outcome::Reloaded(self.reload(*config, &source)?),
            Command::Connect { vnic, side, owner } => Outcome::Connected {
                epoch: self.connect(&vnic, side, owner)?,
            },
            Command::Disconnect { vnic } => Outcome::Detached {
                drained: self.detach(&vnic)?,
            },
            Command::Refused { vnic, why } => {
                self.note_refused(&vnic, why)?;
                Outcome::Changed(None)
            }
            Command::Requeue { vnic } => {
                self.requeue(&vnic)?;
                Outcome::Changed(None)
            }
            Command::MigrateOut { vnic, to, dry_run } => {
                Outcome::Exported(Box::new(self.begin_outgoing(&vnic, &to, dry_run)?))
            }
            Command::MigratePrepared { vnic, prepared } => {
                Outcome::ClientMoves(self.outgoing_prepared(&vnic, &prepared)?)
            }
            Command::MigrateStop { vnic } => Outcome::Stopped(self.stop_outgoing(&vnic)?),
            Command::MigrateDone { vnic, cutover_us } => {
                Outcome::Migration(Box::new(self.finish_outgoing(&vnic, cutover_us)?))
            }
            Command::MigrateFailed { vnic, why } => {
                self.fail_outgoing(&vnic, &why)?;
                Outcome::Changed(None)
            }
            Command::MigrateIn { prepare, peer } => {
                Outcome::Prepared(self.prepare_incoming(*prepare, &peer)?)
            }
            Command::MigrateCutover { cutover } => {
                Outcome::Migration(Box::new(self.cutover_incoming(cutover)?))
            }
            Command::MigrateAbort { vnic, why } => {
                Outcome::Migration(Box::new(self.abort_incoming(&vnic, &why)?))
            }
        })
    }

    /// Queue an event for the frontends.
    pub(crate) fn emit(&mut self, e: Event) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// Queue a [`Event::Link`] for every vNIC whose link changed since the last one queued.
    pub(crate) fn note_links(&mut self) {
        for i in 0..self.vnics.len() {
            let link = self.vnics[i].link();
            if link != self.vnics[i].told_link {
                self.vnics[i].told_link = link.clone();
                let vnic = self.vnics[i].name.clone();
                self.emit(Event::Link { vnic, link });
            }
        }
    }

    /// Everything that happened since the last call, oldest first: the one event stream every
    /// frontend reads.
    pub fn drain_events(&mut self) -> Vec<Event> {
        self.note_links();
        self.events.drain(..).collect()
    }

    /// Bring everything up. On error everything made so far is torn down again.
    pub fn start(config: Config, opts: &StartOptions) -> Result<Appliance, StartError> {
        let huge = opts
            .host_hugepages
            .unwrap_or_else(eal::host_hugepages_usable);
        crate::eal_options::check_build_limits(&config)?;
        let eal_opts = crate::eal_options::eal_options(&config, huge)?;
        let eal = Eal::init(&eal::eal_args(&eal_opts)).map_err(StartError::Eal)?;
        let mut app = Appliance {
            cores: Vec::new(),
            vnics: Vec::new(),
            config,
            generation: 0,
            config_generation: 0,
            reloads: VecDeque::new(),
            incarnations: 0,
            inline: None,
            eal: Some(eal),
            events: VecDeque::new(),
            migrations: VecDeque::new(),
            departed: Vec::new(),
            adopted: Vec::new(),
            tally: Default::default(),
        };
        app.bring_up(opts)?;
        Ok(app)
    }

    pub(crate) fn bring_up(&mut self, opts: &StartOptions) -> Result<(), StartError> {
        let cfg = self.config.clone();
        for d in cfg.data_cores() {
            let launch = match d.launch {
                LaunchKind::Lcore => Launch::Lcore(d.core),
                LaunchKind::Thread => Launch::Thread(d.core),
            };
            let idle = if d.idle_sleep_us > 0 {
                IdleBackoff::new(256, d.idle_sleep_us)
            } else {
                IdleBackoff::OFF
            };
            let worker = Worker::launch(launch, config::MAX_VNICS as u32, idle)
                .map_err(|err| StartError::DataCore { core: d.core, err })?;
            self.cores.push(Core {
                core: d.core,
                worker,
            });
        }
        for (i, v) in cfg.vnics().iter().enumerate() {
            let core_idx = cfg.vnic_core_index(i);
            let mut vn = build_vnic(v, cfg.mac(i), core_idx, VnicSlot(i as u32), 0)?;
            let pc = vn.client_port_config();
            let opened = vn.open_endpoint(&pc);
            self.vnics.push(vn);
            opened.map_err(|err| StartError::Client {
                vnic: v.name.clone(),
                err,
            })?;
        }
        if let Some(mode) = opts.inline_client {
            self.inline = Some(mode);
            for i in 0..self.vnics.len() {
                let v = &self.vnics[i];
                // Only shm vNICs have rings an in-core client can serve.
                if v.client != config::ClientConfig::Shm {
                    continue;
                }
                let req = AttachRequest {
                    queues: v.max_queues as u32,
                    depth: v.max_depth,
                    mtu: v.mtu,
                    promisc: false,
                };
                let name = v.name.clone();
                self.attach(&name, req, Owner::Inline)
                    .map_err(|e| StartError::Attach {
                        vnic: name.clone(),
                        err: e,
                    })?;
            }
        }
        Ok(())
    }

    /// Names of all vNICs.
    pub fn vnic_names(&self) -> Vec<String> {
        self.vnics.iter().map(|v| v.name.clone()).collect()
    }

    /// The shared-memory file prefix separate-process clients join, when the EAL runs with one
    /// (hugepages and `eal.file_prefix`); `None` otherwise.
    pub fn shared_prefix(&self) -> Option<String> {
        let args = self.eal.as_ref()?.args();
        let i = args.iter().position(|a| a == "--file-prefix")?;
        args.get(i + 1).cloned()
    }

    /// The running config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The client rings of an attached vNIC queue (in-process clients and tests).
    pub fn client_rings(&self, vnic: &str, queue: u16) -> Option<(Arc<Ring>, Arc<Ring>)> {
        let v = self.vnics.iter().find(|v| v.name == vnic)?;
        v.attach.as_ref()?.rings().get(queue as usize).cloned()
    }

    /// The mempool of a vNIC (tests and clients that allocate).
    pub fn pool(&self, vnic: &str) -> Option<&Mempool> {
        self.vnics.iter().find(|v| v.name == vnic).map(|v| &*v.pool)
    }

    /// Tear down in the safe order: data cores → ports → rings drained → pools (only when full)
    /// → EAL.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.teardown()
    }

    pub(crate) fn teardown(&mut self) -> ShutdownReport {
        // 1. Data cores: stop and join; their tables (and inline clients) are freed.
        for c in &mut self.cores {
            c.worker.stop();
        }
        self.cores.clear();
        // 2. Ports: stopped, closed, vdevs removed; PMDs return the mbufs they held. Client
        // sides too: vhost sockets unregistered (no core runs, so their devices go at once),
        // memif server ports closed.
        for v in &mut self.vnics {
            v.stop_devices();
        }
        // 3. Rings drained (we hold the last references now).
        let mut drained = 0;
        for v in &self.vnics {
            drained += v.announce_ring.drain();
        }
        for v in &mut self.vnics {
            if let Some(att) = v.attach.take() {
                for (rx, tx) in att.rings() {
                    drained += rx.drain() + tx.drain();
                }
            }
        }
        // 4. Pools: checked, then freed only when full (Mempool's Drop enforces it).
        let pools = self
            .vnics
            .iter()
            .map(|v| (v.pool.name().to_string(), v.pool.size(), v.pool.in_use()))
            .collect();
        self.vnics.clear();
        // 5. EAL.
        self.eal.take();
        ShutdownReport {
            drained_from_rings: drained,
            pools,
        }
    }
}
