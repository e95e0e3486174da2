//! The running appliance: EAL, per-vNIC mempools and client rings, backing-device ports, data
//! cores and their forwarding tables. Bring-up and teardown happen here in the safe order.
use crate::config::{self, BackingConfig, Config, ConfigErrors, LaunchKind, MacAddr};
use serde::Serialize;
use std::sync::Arc;
use vnic_dataplane::{
    eal, mempool, CoreStats, Eal, FwdTable, IdleBackoff, InlineClient, InlineMode, Launch, Mempool,
    Port, PortConfig, QueueEntry, Ring, VnicSlot, VnicStats, Worker,
};

/// Rx/tx descriptors per VF queue.
pub const VF_DESC: u16 = 1024;
/// Per-lcore mempool cache.
pub const POOL_CACHE: u32 = 256;

/// Why the appliance could not start.
#[derive(Debug, thiserror::Error)]
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

/// State of one backing device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "reason")]
pub enum BackingState {
    /// Carrying the vNIC's traffic.
    Active,
    /// Started and ready to take over.
    Standby,
    /// Could not be brought up (reason).
    Failed(String),
}

struct Backing {
    cfg: BackingConfig,
    port: Option<Port>,
    state: BackingState,
}

struct Vnic {
    name: String,
    mac: MacAddr,
    queues: u16,
    core_idx: usize,
    slot: VnicSlot,
    active: Option<usize>,
    rings: Vec<(Arc<Ring>, Arc<Ring>)>,
    backing: Vec<Backing>,
    pool: Mempool,
}

struct Core {
    core: u32,
    worker: Worker,
}

/// Status of a backing device.
#[derive(Debug, Clone, Serialize)]
pub struct BackingStatus {
    pub name: String,
    pub devargs: String,
    pub priority: u32,
    pub port_label: String,
    #[serde(flatten)]
    pub state: BackingState,
    pub link_up: bool,
}

/// Status of a vNIC.
#[derive(Debug, Clone, Serialize)]
pub struct VnicStatus {
    pub name: String,
    pub mac: String,
    pub data_core: u32,
    pub active_backing: Option<String>,
    pub backing: Vec<BackingStatus>,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_drops: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_drops: u64,
    pub client_drops: u64,
    pub pool_in_use: u32,
    pub pool_size: u32,
}

/// Status of a data core.
#[derive(Debug, Clone, Serialize)]
pub struct CoreStatus {
    pub core: u32,
    pub launch: &'static str,
    pub table_generation: u64,
    pub loops: u64,
    pub busy_loops: u64,
    pub packets: u64,
    pub bursts: u64,
    pub busy_cycles: u64,
    pub idle_cycles: u64,
}

/// Whole-appliance status.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub generation: u64,
    pub dpdk_version: &'static str,
    pub eal_args: Vec<String>,
    pub tsc_hz: u64,
    pub vnics: Vec<VnicStatus>,
    pub cores: Vec<CoreStatus>,
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
    cores: Vec<Core>,
    vnics: Vec<Vnic>,
    config: Config,
    generation: u64,
    eal: Option<Eal>,
}

fn pool_size(v: &config::VnicConfig) -> u32 {
    let per_dev = v.queues * (VF_DESC as u32 * 2);
    let need =
        v.backing.len() as u32 * per_dev + v.queues * 2 * v.ring_depth + 4 * POOL_CACHE + 1024;
    // 2^n - 1 is the optimal size for the ring under a mempool.
    need.next_power_of_two().max(2048) - 1
}

fn data_room(mtu: u32) -> u16 {
    // Frame = MTU + Ethernet header + VLAN + FCS; keep the standard 2048 minimum.
    let frame = (mtu + 14 + 4 + 4).max(2048);
    (frame + 128).min(u16::MAX as u32) as u16
}

impl Appliance {
    /// Bring everything up. On error everything made so far is torn down again.
    pub fn start(config: Config, opts: &StartOptions) -> Result<Appliance, StartError> {
        let huge = opts
            .host_hugepages
            .unwrap_or_else(eal::host_hugepages_usable);
        let eal_opts = config::eal_options(&config, huge)?;
        let eal = Eal::init(&eal::eal_args(&eal_opts)).map_err(StartError::Eal)?;
        let mut app = Appliance {
            cores: Vec::new(),
            vnics: Vec::new(),
            config,
            generation: 0,
            eal: Some(eal),
        };
        app.bring_up(opts)?;
        Ok(app)
    }

    fn bring_up(&mut self, opts: &StartOptions) -> Result<(), StartError> {
        let socket = vnic_dataplane::socket_id();
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
            let core_idx = cfg
                .data_cores()
                .iter()
                .position(|d| d.core == cfg.vnic_cores[i])
                .unwrap_or(0);
            let err = |what: &'static str| {
                let vnic = v.name.clone();
                move |err| StartError::Vnic { vnic, what, err }
            };
            let pool = Mempool::new(
                &format!("mp_{}", v.name),
                pool_size(v),
                POOL_CACHE,
                data_room(v.mtu).max(mempool::DEFAULT_DATA_ROOM),
                socket,
            )
            .map_err(err("mempool"))?;
            let mut rings = Vec::new();
            for q in 0..v.queues {
                let rx = Ring::new(&format!("{}.rx{q}", v.name), v.ring_depth, socket)
                    .map_err(err("rx ring"))?;
                let tx = Ring::new(&format!("{}.tx{q}", v.name), v.ring_depth, socket)
                    .map_err(err("tx ring"))?;
                rings.push((Arc::new(rx), Arc::new(tx)));
            }
            let port_cfg = PortConfig {
                queues: v.queues as u16,
                rx_desc: VF_DESC,
                tx_desc: VF_DESC,
                mtu: Some(v.mtu as u16),
                promiscuous: true,
            };
            let backing = v
                .backing
                .iter()
                .map(|b| {
                    let opened = Port::open(&b.devargs).and_then(|mut p| {
                        p.configure(&port_cfg, &pool)?;
                        p.start()?;
                        Ok(p)
                    });
                    match opened {
                        Ok(p) => Backing {
                            cfg: b.clone(),
                            port: Some(p),
                            state: BackingState::Standby,
                        },
                        Err(e) => {
                            tracing::error!(vnic = %v.name, backing = %b.name, "backing device failed: {e}");
                            Backing {
                                cfg: b.clone(),
                                port: None,
                                state: BackingState::Failed(e.to_string()),
                            }
                        }
                    }
                })
                .collect::<Vec<_>>();
            // Best priority wins; config order breaks ties.
            let active = backing
                .iter()
                .enumerate()
                .filter(|(_, b)| b.port.is_some())
                .min_by_key(|(k, b)| (b.cfg.priority, *k))
                .map(|(k, _)| k);
            let mut vn = Vnic {
                name: v.name.clone(),
                mac: cfg.macs[i],
                queues: v.queues as u16,
                core_idx,
                slot: VnicSlot(i as u32),
                active,
                rings,
                backing,
                pool,
            };
            if let Some(a) = active {
                vn.backing[a].state = BackingState::Active;
            }
            self.vnics.push(vn);
        }
        self.publish_all(opts.inline_client)
    }

    fn publish_all(&mut self, inline: Option<InlineMode>) -> Result<(), StartError> {
        for (ci, core) in self.cores.iter_mut().enumerate() {
            let mut queues = Vec::new();
            let mut clients = Vec::new();
            for v in self.vnics.iter().filter(|v| v.core_idx == ci) {
                let Some(a) = v.active else { continue };
                let Some(port) = v.backing[a].port.as_ref() else {
                    continue;
                };
                for q in 0..v.queues {
                    let (rx, tx) = &v.rings[q as usize];
                    let (Some(rxq), Some(txq)) = (port.rx_queue(q), port.tx_queue(q)) else {
                        continue;
                    };
                    queues.push(QueueEntry::new(rxq, txq, rx.clone(), tx.clone(), v.slot));
                    if let Some(mode) = inline {
                        clients.push(InlineClient::new(
                            rx.clone(),
                            tx.clone(),
                            mode,
                            v.slot,
                            v.mac.0,
                        ));
                    }
                }
            }
            core.worker
                .publish(FwdTable::new(queues, clients))
                .map_err(|err| StartError::DataCore {
                    core: core.core,
                    err,
                })?;
        }
        self.generation += 1;
        Ok(())
    }

    /// The running config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Current status (counters summed over data cores).
    pub fn status(&self) -> Status {
        let eal = self.eal.as_ref();
        let vnics = self
            .vnics
            .iter()
            .map(|v| {
                let mut s = VnicStats::default();
                for c in &self.cores {
                    s += c.worker.vnic_stats(v.slot);
                }
                VnicStatus {
                    name: v.name.clone(),
                    mac: v.mac.to_string(),
                    data_core: self.cores[v.core_idx].core,
                    active_backing: v.active.map(|a| v.backing[a].cfg.name.clone()),
                    backing: v
                        .backing
                        .iter()
                        .map(|b| BackingStatus {
                            name: b.cfg.name.clone(),
                            devargs: b.cfg.devargs.clone(),
                            priority: b.cfg.priority,
                            port_label: b.cfg.port_label.clone(),
                            state: b.state.clone(),
                            link_up: b
                                .port
                                .as_ref()
                                .and_then(|p| p.link().ok())
                                .is_some_and(|l| l.up),
                        })
                        .collect(),
                    rx_packets: s.rx_packets,
                    rx_bytes: s.rx_bytes,
                    rx_drops: s.rx_drops,
                    tx_packets: s.tx_packets,
                    tx_bytes: s.tx_bytes,
                    tx_drops: s.tx_drops,
                    client_drops: s.client_drops,
                    pool_in_use: v.pool.in_use(),
                    pool_size: v.pool.size(),
                }
            })
            .collect();
        let cores = self
            .cores
            .iter()
            .map(|c| {
                let s: CoreStats = c.worker.core_stats();
                CoreStatus {
                    core: c.core,
                    launch: match c.worker.launch_kind() {
                        Launch::Lcore(_) => "lcore",
                        Launch::Thread(_) => "thread",
                    },
                    table_generation: c.worker.adopted_generation(),
                    loops: s.loops,
                    busy_loops: s.busy_loops,
                    packets: s.packets,
                    bursts: s.bursts,
                    busy_cycles: s.busy_cycles,
                    idle_cycles: s.idle_cycles,
                }
            })
            .collect();
        Status {
            generation: self.generation,
            dpdk_version: eal::dpdk_version(),
            eal_args: eal.map(|e| e.args().to_vec()).unwrap_or_default(),
            tsc_hz: eal::tsc_hz(),
            vnics,
            cores,
        }
    }

    /// The client rings of a vNIC queue (in-process clients and tests).
    pub fn client_rings(&self, vnic: &str, queue: u16) -> Option<(Arc<Ring>, Arc<Ring>)> {
        let v = self.vnics.iter().find(|v| v.name == vnic)?;
        v.rings.get(queue as usize).cloned()
    }

    /// The mempool of a vNIC (tests and clients that allocate).
    pub fn pool(&self, vnic: &str) -> Option<&Mempool> {
        self.vnics.iter().find(|v| v.name == vnic).map(|v| &v.pool)
    }

    /// Tear down in the safe order: data cores → ports → rings drained → pools (only when full)
    /// → EAL.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.teardown()
    }

    fn teardown(&mut self) -> ShutdownReport {
        // 1. Data cores: stop and join; their tables (and inline clients) are freed.
        for c in &mut self.cores {
            c.worker.stop();
        }
        self.cores.clear();
        // 2. Ports: stopped, closed, vdevs removed; PMDs return the mbufs they held.
        for v in &mut self.vnics {
            for b in &mut v.backing {
                if let Some(mut p) = b.port.take() {
                    if let Err(e) = p.stop() {
                        tracing::warn!(backing = %b.cfg.name, "{e}");
                    }
                    drop(p);
                }
            }
        }
        // 3. Rings drained (we hold the last references now).
        let mut drained = 0;
        for v in &mut self.vnics {
            for (rx, tx) in v.rings.drain(..) {
                drained += rx.drain() + tx.drain();
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

impl Drop for Appliance {
    fn drop(&mut self) {
        if self.eal.is_some() {
            self.teardown();
        }
    }
}
