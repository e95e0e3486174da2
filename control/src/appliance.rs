//! The running appliance: EAL, per-vNIC mempools and client rings, backing-device ports, data
//! cores and their forwarding tables. Bring-up and teardown happen here in the safe order.
use crate::config::{self, BackingConfig, Config, ConfigErrors, LaunchKind, MacAddr};
use crate::failover::{self, Candidate, Decision, Policy, Reason, SwitchRecord};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vnic_dataplane::{
    eal, mempool, Announce, CoreStats, Eal, FwdTable, IdleBackoff, InlineClient, InlineMode,
    Launch, Mempool, Port, PortConfig, QueueEntry, Ring, VnicSlot, VnicStats, Worker,
};

/// Rx/tx descriptors per VF queue.
pub const VF_DESC: u16 = 1024;
/// Per-lcore mempool cache.
pub const POOL_CACHE: u32 = 256;
/// Separate-process clients get EAL lcore ids from here up (vnicd's own are the CPU numbers).
pub const CLIENT_LCORE_BASE: u32 = 64;
/// How many distinct client lcore ids (DPDK's RTE_MAX_LCORE is 128 in Debian's build).
pub const CLIENT_LCORES: u32 = 64;

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
    #[error("vNIC {vnic}: attach: {err}")]
    Attach { vnic: String, err: AttachError },
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
    /// Not usable (reason): failed to come up, link down, tx stalled, removed.
    Failed(String),
    /// Taken out of service by the administrator.
    Disabled,
}

struct Backing {
    cfg: BackingConfig,
    port: Option<Port>,
    state: BackingState,
    link_up: bool,
    /// Since when it has been usable without interruption (for the fail-back hold-down).
    healthy_since: Option<Instant>,
    last_failure: Option<String>,
    /// When to try restarting a failed port next (a memif client redials this way).
    next_redial: Instant,
    /// Its link has been up at least once (before that it is still connecting, not failed).
    ever_up: bool,
    /// Restarts since the link was last up (backs the redial interval off).
    redials: u32,
    /// The device is gone: release its port once no table names it.
    release: bool,
}

impl Backing {
    fn usable(&self) -> bool {
        self.port.is_some()
            && self.link_up
            && matches!(self.state, BackingState::Active | BackingState::Standby)
    }
}

/// Who holds a vNIC's rings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Owner {
    /// An in-core client on the data core (`--inline-client`).
    Inline,
    /// A client session on the control socket.
    Client {
        session: u64,
        pid: i32,
        uid: u32,
        gid: u32,
    },
}

/// What a client asks for at ATTACH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachRequest {
    pub queues: u32,
    pub depth: u32,
    pub mtu: u32,
    pub promisc: bool,
}

/// What ATTACH grants.
#[derive(Debug, Clone, Serialize)]
pub struct AttachGrant {
    pub queues: u32,
    pub depth: u32,
    pub mtu: u32,
    pub promisc: bool,
    /// Per queue: (rx ring, tx ring) names, for `rte_ring_lookup` in the client.
    pub rings: Vec<QueueRings>,
    pub mempool: String,
    pub mac: String,
    pub link: LinkState,
    pub token: String,
    pub epoch: u64,
    /// EAL lcore id a separate-process client must use (mempool caches are per lcore id in
    /// shared memory, so every process needs its own).
    pub client_lcore: u32,
}

/// Ring names of one queue.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct QueueRings {
    pub rx: String,
    pub tx: String,
}

/// Link as a client sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LinkState {
    pub up: bool,
    pub active_backing: Option<String>,
}

/// Why ATTACH or DETACH was refused. Nothing changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    #[error("unknown vNIC {0:?}")]
    UnknownVnic(String),
    #[error("vNIC {0:?} is already attached")]
    AlreadyAttached(String),
    #[error("vNIC {0:?} is not attached")]
    NotAttached(String),
    #[error("{field} {value} out of range {range}")]
    OutOfRange {
        field: &'static str,
        value: u32,
        range: String,
    },
    #[error("cannot create client rings: {0}")]
    Rings(String),
    #[error("data core did not take the new forwarding table: {0}")]
    Publish(String),
}

struct Attachment {
    queues: u16,
    depth: u32,
    mtu: u32,
    promisc: bool,
    rings: Vec<(Arc<Ring>, Arc<Ring>)>,
    owner: Owner,
}

struct Vnic {
    name: String,
    mac: MacAddr,
    /// Configured maxima.
    max_queues: u16,
    max_depth: u32,
    mtu: u32,
    allow_spoofing: bool,
    allowed_uids: Vec<u32>,
    allowed_gids: Vec<u32>,
    core_idx: usize,
    slot: VnicSlot,
    active: Option<usize>,
    backing: Vec<Backing>,
    pool: Mempool,
    attach: Option<Attachment>,
    /// Bumped at every attach and detach (and later failover); replies carry it.
    epoch: u64,
    /// Re-attach token of the last attachment.
    token: Option<String>,
    policy: Policy,
    failovers: u64,
    last_switch: Option<SwitchRecord>,
    /// Automatic fail-backs inside the flap window.
    failbacks: VecDeque<Instant>,
    flap_suppressed: bool,
    /// vnicd → device frames (peer announcements), sent by the data core.
    announce_ring: Arc<Ring>,
    announce_left: u32,
    next_announce: Instant,
    /// Keep the announcer in the table until then (lets the last round drain).
    announce_until: Option<Instant>,
    ipv4: Vec<[u8; 4]>,
    /// tx-stall watch: (tx_packets, tx_drops) at the last check, and since when stalled.
    tx_seen: (u64, u64),
    stalled_since: Option<Instant>,
    last_check: Instant,
    /// Counter values its slot had before this vNIC took it (slots are reused after a reload
    /// removes a vNIC; only the data core writes counters, so they are offset, not reset).
    stats_base: VnicStats,
    /// Out of every table while it moves between data cores.
    parked: bool,
}

/// Something the control thread should tell clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Failover {
        vnic: String,
        from: Option<String>,
        to: String,
        reason: String,
    },
    LinkDown {
        vnic: String,
    },
}

/// Why a failover or an enable/disable request was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailoverError {
    #[error("unknown vNIC {0:?}")]
    UnknownVnic(String),
    #[error("vNIC {vnic:?} has no backing device {backing:?}")]
    UnknownBacking { vnic: String, backing: String },
    #[error("no other operational backing device for vNIC {0:?}")]
    NoStandby(String),
    #[error("backing device {0:?} is not operational (failed, disabled, or link down)")]
    NotOperational(String),
    #[error("backing device {0:?} is already active")]
    AlreadyActive(String),
    #[error("{0:?} is the active device and no other is operational: disabling it would take the vNIC's link down (use force)")]
    LastDevice(String),
    #[error("data core did not take the new table: {0}")]
    Publish(String),
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
    /// How long it has been usable without interruption (ms), if it is.
    pub healthy_ms: Option<u64>,
    pub last_failure: Option<String>,
}

/// Status of a vNIC.
#[derive(Debug, Clone, Serialize)]
pub struct VnicStatus {
    pub name: String,
    pub mac: String,
    /// "attached" or "detached".
    pub state: &'static str,
    pub client_pid: Option<i32>,
    pub owner: Option<Owner>,
    pub epoch: u64,
    pub queues: u32,
    pub ring_depth: u32,
    pub mtu: u32,
    pub promisc: bool,
    pub data_core: u32,
    pub active_backing: Option<String>,
    /// The vNIC's link: up when a backing device carries it.
    pub link_up: bool,
    pub failover_count: u64,
    pub auto_priority_failover: bool,
    pub last_switch: Option<SwitchRecord>,
    /// Fail-back wanted but held back by the flap limit.
    pub flap_suppressed: bool,
    pub backing: Vec<BackingStatus>,
    /// Counters summed over data cores (flattened into the JSON).
    #[serde(flatten)]
    pub stats: VnicStats,
    pub pool_in_use: u32,
    pub pool_size: u32,
}

/// Status of a data core.
#[derive(Debug, Clone, Serialize)]
pub struct CoreStatus {
    pub core: u32,
    pub launch: &'static str,
    pub table_generation: u64,
    /// The core's counters (flattened into the JSON).
    #[serde(flatten)]
    pub stats: CoreStats,
}

/// Whole-appliance status.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub generation: u64,
    pub config_generation: u64,
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
    /// Forwarding-table publications so far.
    generation: u64,
    /// Config generation: 0 at start, +1 per successful reload.
    config_generation: u64,
    /// Reload history, newest last (bounded).
    reloads: VecDeque<crate::reload::Reload>,
    /// vNICs built so far (keeps DPDK object names of recreated vNICs unique).
    incarnations: u64,
    /// The in-core client mode for `Owner::Inline` attachments.
    inline: Option<InlineMode>,
    eal: Option<Eal>,
}

/// Limits offered at CAPS.
#[derive(Debug, Clone, Serialize)]
pub struct Caps {
    pub max_queues: u32,
    pub min_depth: u32,
    pub max_depth: u32,
    pub min_mtu: u32,
    pub max_mtu: u32,
    pub offloads: Vec<String>,
    pub spoof_check: bool,
}

fn new_token() -> String {
    use std::io::Read;
    let mut b = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        // Fallback: std's per-process random hash keys plus the clock.
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        b[..8].copy_from_slice(&h.finish().to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn pool_size(v: &config::VnicConfig) -> u32 {
    if let Some(n) = v.mbufs {
        return n;
    }
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

/// Open, configure and start one backing device for a vNIC (its mempool, queues, MAC). A device
/// that cannot be probed or configured comes back `failed` without a port; one that cannot start
/// yet (a memif client whose server is not up) keeps its port and is restarted by health checks.
fn build_backing(
    vnic: &str,
    b: &BackingConfig,
    port_cfg: &PortConfig,
    pool: &Mempool,
    mac: MacAddr,
) -> Backing {
    let opened = Port::open(&b.devargs).and_then(|mut p| {
        p.configure(port_cfg, pool)?;
        // Hot standby: every device carries the vNIC's MAC before it is needed. Many VFs and
        // vdevs refuse (ENOTSUP); then the switch re-points only.
        if let Err(e) = p.set_mac(mac.0) {
            tracing::debug!(backing = %b.name, "MAC not programmed: {e}");
        }
        if let Err(e) = p.watch_removal() {
            tracing::debug!(backing = %b.name, "no removal events: {e}");
        }
        Ok(p)
    });
    let now = Instant::now();
    let mut bk = Backing {
        cfg: b.clone(),
        port: None,
        state: BackingState::Standby,
        link_up: false,
        healthy_since: None,
        last_failure: None,
        next_redial: now,
        ever_up: false,
        redials: 0,
        release: false,
    };
    let failed = |bk: &mut Backing, e: String| {
        tracing::error!(vnic, backing = %b.name, "backing device failed: {e}");
        bk.state = BackingState::Failed(e.clone());
        bk.last_failure = Some(e);
    };
    match opened {
        Err(e) => failed(&mut bk, e.to_string()),
        Ok(mut p) => {
            match p.start() {
                Ok(()) => {
                    bk.link_up = p.link().is_ok_and(|l| l.up);
                    bk.healthy_since = bk.link_up.then_some(now);
                    bk.ever_up = bk.link_up;
                }
                Err(e) => failed(&mut bk, e.to_string()),
            }
            bk.port = Some(p);
        }
    }
    bk
}

fn port_config(v: &config::VnicConfig) -> PortConfig {
    PortConfig {
        queues: v.queues as u16,
        rx_desc: VF_DESC,
        tx_desc: VF_DESC,
        mtu: Some(v.mtu as u16),
        promiscuous: true,
    }
}

fn policy(v: &config::VnicConfig) -> Policy {
    Policy {
        auto_priority_failover: v.auto_priority_failover,
        hold_down: Duration::from_millis(v.hold_down_ms as u64),
        flap_limit: v.flap_limit,
        flap_window: Duration::from_millis(v.flap_window_ms as u64),
        tx_stall: Duration::from_millis(v.tx_stall_ms as u64),
        announce_rounds: v.announce_rounds,
        announce_interval: Duration::from_millis(v.announce_interval_ms as u64),
    }
}

fn ipv4s(v: &config::VnicConfig) -> Vec<[u8; 4]> {
    v.ipv4
        .iter()
        .filter_map(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
        .map(|ip| ip.octets())
        .collect()
}

/// Build a vNIC: mempool, backing devices, announce ring. `incarnation` keeps DPDK object names
/// unique when a vNIC is recreated while its old objects may still exist.
fn build_vnic(
    v: &config::VnicConfig,
    mac: MacAddr,
    core_idx: usize,
    slot: VnicSlot,
    incarnation: u64,
) -> Result<Vnic, StartError> {
    let socket = vnic_dataplane::socket_id();
    let err = |what: &'static str| {
        let vnic = v.name.clone();
        move |err| StartError::Vnic { vnic, what, err }
    };
    let suffix = if incarnation == 0 {
        String::new()
    } else {
        format!(".{}", incarnation % 100_000)
    };
    let pool = Mempool::new(
        &format!("mp_{}{suffix}", v.name),
        pool_size(v),
        POOL_CACHE,
        data_room(v.mtu).max(mempool::DEFAULT_DATA_ROOM),
        socket,
    )
    .map_err(err("mempool"))?;
    let port_cfg = port_config(v);
    let backing: Vec<Backing> = v
        .backing
        .iter()
        .map(|b| build_backing(&v.name, b, &port_cfg, &pool, mac))
        .collect();
    // Best priority wins (config order breaks ties) among devices that started; a memif link may
    // still be connecting, so "up" is not required yet: health checks follow.
    let active = backing
        .iter()
        .enumerate()
        .filter(|(_, b)| b.port.is_some() && b.state == BackingState::Standby)
        .min_by_key(|(k, b)| (b.cfg.priority, *k))
        .map(|(k, _)| k);
    let announce_ring =
        Ring::new(&format!("{}.ann{suffix}", v.name), 64, socket).map_err(err("announce ring"))?;
    let mut vn = Vnic {
        name: v.name.clone(),
        mac,
        max_queues: v.queues as u16,
        max_depth: v.ring_depth,
        mtu: v.mtu,
        allow_spoofing: v.allow_spoofing,
        allowed_uids: v.allowed_uids.clone(),
        allowed_gids: v.allowed_gids.clone(),
        core_idx,
        slot,
        active,
        backing,
        pool,
        attach: None,
        epoch: 0,
        token: None,
        policy: policy(v),
        failovers: 0,
        last_switch: None,
        failbacks: VecDeque::new(),
        flap_suppressed: false,
        announce_ring: Arc::new(announce_ring),
        announce_left: 0,
        next_announce: Instant::now(),
        announce_until: None,
        ipv4: ipv4s(v),
        tx_seen: (0, 0),
        stalled_since: None,
        last_check: Instant::now(),
        stats_base: VnicStats::default(),
        parked: false,
    };
    if let Some(a) = active {
        vn.backing[a].state = BackingState::Active;
    }
    Ok(vn)
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
            config_generation: 0,
            reloads: VecDeque::new(),
            incarnations: 0,
            inline: None,
            eal: Some(eal),
        };
        app.bring_up(opts)?;
        Ok(app)
    }

    fn bring_up(&mut self, opts: &StartOptions) -> Result<(), StartError> {
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
            let vn = build_vnic(v, cfg.macs[i], core_idx, VnicSlot(i as u32), 0)?;
            self.vnics.push(vn);
        }
        if let Some(mode) = opts.inline_client {
            self.inline = Some(mode);
            for i in 0..self.vnics.len() {
                let v = &self.vnics[i];
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

    /// Rebuild and publish core `ci`'s table from the attached vNICs it serves.
    fn publish_core(&mut self, ci: usize) -> Result<u64, vnic_dataplane::Error> {
        let mut queues = Vec::new();
        let mut clients = Vec::new();
        let mut announce = Vec::new();
        let now = Instant::now();
        for v in self.vnics.iter().filter(|v| v.core_idx == ci && !v.parked) {
            let Some(a) = v.active else { continue };
            // A device that is not usable (failed, link down, being restarted) is never polled.
            if !v.backing[a].usable() {
                continue;
            }
            let Some(port) = v.backing[a].port.as_ref() else {
                continue;
            };
            if v.announce_until.is_some_and(|t| t > now) {
                if let Some(txq) = port.tx_queue(0) {
                    announce.push(Announce::new(v.announce_ring.clone(), txq));
                }
            }
            let Some(att) = v.attach.as_ref() else {
                continue;
            };
            for (q, (rx, tx)) in att.rings.iter().enumerate() {
                let q16 = q as u16;
                let (Some(rxq), Some(txq)) = (port.rx_queue(q16), port.tx_queue(q16)) else {
                    continue;
                };
                let mut e = QueueEntry::new(rxq, txq, rx.clone(), tx.clone(), v.slot);
                // Standby devices are received from too: frames still arriving on the old device
                // after a switch (before upstream relearns) reach the client.
                for (k, b) in v.backing.iter().enumerate() {
                    if k != a && b.state == BackingState::Standby && b.link_up {
                        if let Some(srx) = b.port.as_ref().and_then(|p| p.rx_queue(q16)) {
                            e = e.also_rx(srx);
                        }
                    }
                }
                if !v.allow_spoofing {
                    e = e.with_spoof_check(v.mac.0);
                }
                queues.push(e);
                if let (Owner::Inline, Some(mode)) = (&att.owner, self.inline) {
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
        let table = FwdTable::new(queues, clients).with_announce(announce);
        let g = self.cores[ci].worker.publish(table)?;
        self.generation += 1;
        Ok(g)
    }

    fn vnic_index(&self, name: &str) -> Result<usize, AttachError> {
        self.vnics
            .iter()
            .position(|v| v.name == name)
            .ok_or_else(|| AttachError::UnknownVnic(name.into()))
    }

    /// Limits a client may ask for (CAPS).
    pub fn caps(&self, vnic: &str) -> Result<Caps, AttachError> {
        let v = &self.vnics[self.vnic_index(vnic)?];
        Ok(Caps {
            max_queues: v.max_queues as u32,
            min_depth: 64,
            max_depth: v.max_depth,
            min_mtu: 68,
            max_mtu: v.mtu,
            offloads: vec![],
            spoof_check: !v.allow_spoofing,
        })
    }

    /// Whether these peer credentials may attach `vnic`.
    pub fn allowed(&self, vnic: &str, uid: u32, gid: u32) -> Result<bool, AttachError> {
        let v = &self.vnics[self.vnic_index(vnic)?];
        Ok(v.allowed_uids.contains(&uid) || v.allowed_gids.contains(&gid))
    }

    /// The vNIC's epoch and attached owner.
    pub fn vnic_epoch(
        &self,
        vnic: &str,
    ) -> Result<(u64, Option<Owner>, Option<String>), AttachError> {
        let v = &self.vnics[self.vnic_index(vnic)?];
        Ok((
            v.epoch,
            v.attach.as_ref().map(|a| a.owner.clone()),
            v.token.clone(),
        ))
    }

    /// Link state of a vNIC (its active backing device).
    pub fn link(&self, vnic: &str) -> Result<LinkState, AttachError> {
        let v = &self.vnics[self.vnic_index(vnic)?];
        let up = v.active.is_some_and(|a| v.backing[a].usable());
        Ok(LinkState {
            up,
            active_backing: v.active.map(|a| v.backing[a].cfg.name.clone()),
        })
    }

    /// Create the vNIC's client rings, bind queue i to VF queue i of the active backing device and
    /// publish the new table of its data core. Other vNICs keep forwarding throughout.
    pub fn attach(
        &mut self,
        vnic: &str,
        req: AttachRequest,
        owner: Owner,
    ) -> Result<AttachGrant, AttachError> {
        let i = self.vnic_index(vnic)?;
        let v = &self.vnics[i];
        if v.attach.is_some() {
            return Err(AttachError::AlreadyAttached(vnic.into()));
        }
        let range = |field: &'static str, value: u32, lo: u32, hi: u32| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                Err(AttachError::OutOfRange {
                    field,
                    value,
                    range: format!("{lo}..={hi}"),
                })
            }
        };
        range("queues", req.queues, 1, v.max_queues as u32)?;
        range("depth", req.depth, 64, v.max_depth)?;
        if !req.depth.is_power_of_two() {
            return Err(AttachError::OutOfRange {
                field: "depth",
                value: req.depth,
                range: "a power of two".into(),
            });
        }
        range("mtu", req.mtu, 68, v.mtu)?;
        let epoch = v.epoch + 1;
        let socket = vnic_dataplane::socket_id();
        let mut rings = Vec::new();
        let mut names = Vec::new();
        for q in 0..req.queues {
            // The epoch keeps names unique while an old ring may still be held by a client.
            let rxn = format!("{}.{}r{q}", v.name, epoch % 10_000);
            let txn = format!("{}.{}t{q}", v.name, epoch % 10_000);
            let rx = Ring::new(&rxn, req.depth, socket)
                .map_err(|e| AttachError::Rings(e.to_string()))?;
            let tx = Ring::new(&txn, req.depth, socket)
                .map_err(|e| AttachError::Rings(e.to_string()))?;
            rings.push((Arc::new(rx), Arc::new(tx)));
            names.push(QueueRings { rx: rxn, tx: txn });
        }
        let token = new_token();
        let core_idx = v.core_idx;
        let v = &mut self.vnics[i];
        v.attach = Some(Attachment {
            queues: req.queues as u16,
            depth: req.depth,
            mtu: req.mtu,
            promisc: req.promisc,
            rings,
            owner,
        });
        if let Err(e) = self.publish_core(core_idx) {
            // Roll back: the core never saw the rings (or still runs the old table).
            self.vnics[i].attach = None;
            return Err(AttachError::Publish(e.to_string()));
        }
        let v = &mut self.vnics[i];
        v.epoch = epoch;
        v.token = Some(token.clone());
        let mac = v.mac.to_string();
        let mempool = v.pool.name().to_string();
        Ok(AttachGrant {
            queues: req.queues,
            depth: req.depth,
            mtu: req.mtu,
            promisc: req.promisc,
            rings: names,
            mempool,
            mac,
            link: self.link(vnic)?,
            token,
            epoch,
            client_lcore: CLIENT_LCORE_BASE + (i as u32 % CLIENT_LCORES),
        })
    }

    /// Unpublish the vNIC, then drain its rings and return every mbuf. Returns mbufs drained.
    /// The client must have stopped using the rings (it asked, died, or was told).
    pub fn detach(&mut self, vnic: &str) -> Result<usize, AttachError> {
        let i = self.vnic_index(vnic)?;
        let Some(att) = self.vnics[i].attach.take() else {
            return Err(AttachError::NotAttached(vnic.into()));
        };
        let core_idx = self.vnics[i].core_idx;
        self.vnics[i].epoch += 1;
        if let Err(e) = self.publish_core(core_idx) {
            // The core may still read the old table: keep the rings (and their mbufs) alive
            // rather than free memory it may touch; report it.
            tracing::error!(vnic, "detach: {e}; rings kept");
            self.vnics[i].attach = Some(att);
            return Err(AttachError::Publish(e.to_string()));
        }
        let mut drained = 0;
        for (rx, tx) in &att.rings {
            if matches!(att.owner, Owner::Client { .. }) {
                // A client killed mid-move leaves a half-done in-place move: finish or undo it
                // so every mbuf is in a ring before the drain.
                let r = vnic_dataplane::ring::recover_client(rx, tx);
                if r != vnic_dataplane::ring::Recovery::Clean {
                    tracing::info!(
                        vnic,
                        ?r,
                        "repaired the rings of a client that died mid-move"
                    );
                }
            }
            drained += rx.drain() + tx.drain();
        }
        Ok(drained)
    }

    /// Health checks and the arbiter, run by the control thread every few milliseconds: link
    /// state of every started device, tx progress of the active one, restart of failed memif
    /// clients, switches, fail-back and peer announcements. Returns what clients should hear.
    pub fn health_tick(&mut self) -> Vec<Event> {
        let now = Instant::now();
        let mut events = Vec::new();
        let mut dirty = vec![false; self.cores.len()];
        for i in 0..self.vnics.len() {
            let stats = self.vnic_stats(i);
            let v = &mut self.vnics[i];
            let since_last = now.duration_since(v.last_check);
            v.last_check = now;
            let mut changed = false;
            let active = v.active;
            // 1. Per-device health.
            for (k, b) in v.backing.iter_mut().enumerate() {
                let Some(port) = b.port.as_mut() else {
                    continue;
                };
                let link = match port.link() {
                    Ok(l) => l.up,
                    Err(e) => {
                        if !matches!(b.state, BackingState::Failed(_)) {
                            b.state = BackingState::Failed(format!("device error: {e}"));
                            b.last_failure = Some(format!("device error: {e}"));
                            changed = true;
                        }
                        false
                    }
                };
                if link != b.link_up {
                    b.link_up = link;
                    b.healthy_since = link.then_some(now);
                    b.ever_up |= link;
                    if link {
                        b.redials = 0;
                    }
                    changed = true;
                }
                match &b.state {
                    BackingState::Active | BackingState::Standby if !link && b.ever_up => {
                        b.state = BackingState::Failed("link down".into());
                        b.last_failure = Some("link down".into());
                        changed = true;
                    }
                    BackingState::Failed(_) if link => {
                        // The active device coming back carries on as active (a vNIC whose
                        // only device recovered); any other rejoins as standby.
                        b.state = if active == Some(k) {
                            BackingState::Active
                        } else {
                            BackingState::Standby
                        };
                        changed = true;
                    }
                    BackingState::Failed(_)
                        if b.cfg.devargs.starts_with("net_memif") && now >= b.next_redial =>
                    {
                        // A memif client does not redial a restarted server by itself; a restart
                        // does. The device is in no table while failed, so no core polls it. The
                        // interval backs off (0.5, 1, 2, 4 s) so a slow handshake is not cut short.
                        b.redials = b.redials.saturating_add(1);
                        let wait = Duration::from_millis(500 << b.redials.min(4).saturating_sub(1));
                        b.next_redial = now + wait;
                        if port.restart().is_ok() {
                            tracing::debug!(backing = %b.cfg.name, "restarted, waiting for link");
                        }
                    }
                    _ => {}
                }
            }
            // 2. tx progress of the active device: every burst refused for tx_stall while up.
            let mut failure: Option<String> = None;
            if let Some(a) = v.active {
                if v.backing[a].usable() {
                    let (p0, d0) = v.tx_seen;
                    if stats.tx_drops > d0 && stats.tx_packets == p0 {
                        let t = *v.stalled_since.get_or_insert(now);
                        if now.duration_since(t) >= v.policy.tx_stall {
                            let b = &mut v.backing[a];
                            b.state = BackingState::Failed("tx stalled".into());
                            b.last_failure = Some("tx stalled".into());
                            changed = true;
                        }
                    } else if stats.tx_packets > p0 {
                        v.stalled_since = None;
                    }
                }
                if let BackingState::Failed(w) = &v.backing[a].state {
                    failure = Some(w.clone());
                }
            }
            v.tx_seen = (stats.tx_packets, stats.tx_drops);
            // 3. The arbiter.
            while v
                .failbacks
                .front()
                .is_some_and(|t| now.duration_since(*t) > v.policy.flap_window)
            {
                v.failbacks.pop_front();
            }
            let cands: Vec<Candidate> = v
                .backing
                .iter()
                .map(|b| Candidate {
                    priority: b.cfg.priority,
                    usable: b.usable(),
                    healthy_since: b.healthy_since,
                })
                .collect();
            let decision = failover::decide(
                &cands,
                v.active,
                failure.as_deref(),
                &v.policy,
                now,
                v.failbacks.len(),
            );
            v.flap_suppressed = decision == Decision::StaySuppressed;
            match decision {
                Decision::Switch { to, reason } => {
                    if reason == Reason::FailBack {
                        v.failbacks.push_back(now);
                    }
                    let detect = since_last.as_micros() as u64;
                    let ci = v.core_idx;
                    if let Some(ev) = self.switch(i, to, reason, detect) {
                        events.push(ev);
                    }
                    dirty[ci] = false; // switch() published already
                    continue;
                }
                // `active` keeps pointing at the failed device so its name stays in status; it
                // is out of the table because it is not usable.
                Decision::LinkDown if v.active.is_some() && changed => {
                    events.push(Event::LinkDown {
                        vnic: v.name.clone(),
                    });
                }
                _ => {}
            }
            // 4. Announcements in flight.
            let v = &mut self.vnics[i];
            if v.announce_left > 0 && now >= v.next_announce {
                v.announce_left -= 1;
                v.next_announce = now + v.policy.announce_interval;
                let mut frames = vec![failover::rarp(v.mac.0)];
                frames.extend(v.ipv4.iter().map(|ip| failover::garp(v.mac.0, *ip)));
                for f in frames {
                    if let Some(m) = v.pool.alloc_with(&f) {
                        let _ = v.announce_ring.enqueue_one(m);
                    }
                }
            }
            if v.announce_until.is_some_and(|t| now >= t) {
                v.announce_until = None;
                changed = true;
            }
            if changed {
                dirty[v.core_idx] = true;
            }
        }
        for (ci, d) in dirty.into_iter().enumerate() {
            if d {
                if let Err(e) = self.publish_core(ci) {
                    tracing::error!(core = ci, "health: cannot publish: {e}");
                }
            }
        }
        self.release_removed();
        events
    }

    /// Close and remove the ports of removed devices. Only called after the tables that no longer
    /// name them have been adopted (publish waits for that).
    fn release_removed(&mut self) {
        for v in &mut self.vnics {
            for b in &mut v.backing {
                if b.release {
                    if let Some(p) = b.port.take() {
                        tracing::warn!(vnic = %v.name, backing = %b.cfg.name, "releasing removed device");
                        drop(p);
                    }
                }
            }
        }
    }

    /// Hot-remove a backing device at run time (`rte_dev_remove` for a vdev): switch away first
    /// if it is active, withdraw it from the data core, then close and remove it. It stays
    /// `failed: removed` until a config reload brings it back.
    pub fn remove_backing(
        &mut self,
        vnic: &str,
        backing: &str,
    ) -> Result<Option<Event>, FailoverError> {
        let (i, k) = self.backing_index(vnic, backing)?;
        let mut ev = None;
        if self.vnics[i].active == Some(k) {
            match self.planned(vnic, None, &format!("{backing} removed")) {
                Ok(e) => ev = Some(e),
                Err(FailoverError::NoStandby(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let b = &mut self.vnics[i].backing[k];
        b.state = BackingState::Failed("removed by the administrator".into());
        b.last_failure = Some("removed by the administrator".into());
        b.link_up = false;
        b.healthy_since = None;
        b.release = true;
        let ci = self.vnics[i].core_idx;
        self.publish_core(ci)
            .map_err(|e| FailoverError::Publish(e.to_string()))?;
        self.release_removed();
        Ok(ev)
    }

    fn vnic_stats(&self, i: usize) -> VnicStats {
        self.slot_stats(self.vnics[i].slot)
            .since(&self.vnics[i].stats_base)
    }

    /// Raw counters of a slot, summed over data cores.
    fn slot_stats(&self, slot: VnicSlot) -> VnicStats {
        let mut s = VnicStats::default();
        for c in &self.cores {
            s += c.worker.vnic_stats(slot);
        }
        s
    }

    /// Make backing device `to` the active one of vNIC `i`: the old one becomes standby (or stays
    /// failed), the data core adopts the new table at a burst boundary, and the MAC is announced
    /// on the new device. Returns the event for clients.
    fn switch(&mut self, i: usize, to: usize, reason: Reason, detection_us: u64) -> Option<Event> {
        let t = Instant::now();
        let v = &mut self.vnics[i];
        let from = v.active;
        if let Some(f) = from {
            if v.backing[f].state == BackingState::Active {
                v.backing[f].state = BackingState::Standby;
            }
        }
        v.backing[to].state = BackingState::Active;
        v.active = Some(to);
        if from.is_some() {
            // The first activation of a vNIC is not a failover.
            v.failovers += 1;
        }
        v.epoch += 1;
        v.stalled_since = None;
        if v.policy.announce_rounds > 0 {
            v.announce_left = v.policy.announce_rounds;
            v.next_announce = t;
            v.announce_until = Some(
                t + v.policy.announce_interval * (v.policy.announce_rounds + 1)
                    + Duration::from_millis(20),
            );
        }
        let ci = v.core_idx;
        if let Err(e) = self.publish_core(ci) {
            tracing::error!("failover publish: {e}");
        }
        let v = &mut self.vnics[i];
        let from_name = from.map(|f| v.backing[f].cfg.name.clone());
        let to_name = v.backing[to].cfg.name.clone();
        let rec = SwitchRecord {
            from: from_name.clone(),
            to: to_name.clone(),
            reason: reason.to_string(),
            detection_us,
            switch_us: t.elapsed().as_micros() as u64,
            at_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        };
        tracing::warn!(vnic = %v.name, from = ?from_name, to = %to_name, %reason, detection_us, switch_us = rec.switch_us, "failover");
        v.last_switch = Some(rec);
        Some(Event::Failover {
            vnic: v.name.clone(),
            from: from_name,
            to: to_name,
            reason: reason.to_string(),
        })
    }

    fn failover_index(&self, vnic: &str) -> Result<usize, FailoverError> {
        self.vnics
            .iter()
            .position(|v| v.name == vnic)
            .ok_or_else(|| FailoverError::UnknownVnic(vnic.into()))
    }

    fn backing_index(&self, vnic: &str, backing: &str) -> Result<(usize, usize), FailoverError> {
        let i = self.failover_index(vnic)?;
        let k = self.vnics[i]
            .backing
            .iter()
            .position(|b| b.cfg.name == backing)
            .ok_or_else(|| FailoverError::UnknownBacking {
                vnic: vnic.into(),
                backing: backing.into(),
            })?;
        Ok((i, k))
    }

    /// Planned switch (make-before-break): to `to`, or to the best other operational device.
    /// Frames still arriving on the old device keep being received, so nothing is lost. As on
    /// PowerVM, choosing a worse-priority device by hand turns automatic fail-back off for the
    /// vNIC (else it would undo the choice at once); [`Appliance::set_auto_failback`] turns it on.
    pub fn failover(
        &mut self,
        vnic: &str,
        to: Option<&str>,
        why: &str,
    ) -> Result<Event, FailoverError> {
        let ev = self.planned(vnic, to, why)?;
        let i = self.failover_index(vnic)?;
        let v = &mut self.vnics[i];
        let a = v.active.unwrap_or(0);
        let best_prio = v
            .backing
            .iter()
            .filter(|b| b.usable())
            .map(|b| b.cfg.priority)
            .min()
            .unwrap_or(0);
        if v.policy.auto_priority_failover && v.backing[a].cfg.priority > best_prio {
            v.policy.auto_priority_failover = false;
            tracing::warn!(
                vnic,
                "manual failover to a lower priority: automatic fail-back turned off"
            );
        }
        Ok(ev)
    }

    /// Turn automatic fail-back on or off for a vNIC.
    pub fn set_auto_failback(&mut self, vnic: &str, on: bool) -> Result<(), FailoverError> {
        let i = self.failover_index(vnic)?;
        self.vnics[i].policy.auto_priority_failover = on;
        Ok(())
    }

    fn planned(&mut self, vnic: &str, to: Option<&str>, why: &str) -> Result<Event, FailoverError> {
        let i = self.failover_index(vnic)?;
        let target = match to {
            Some(b) => {
                let (_, k) = self.backing_index(vnic, b)?;
                let v = &self.vnics[i];
                if v.active == Some(k) {
                    return Err(FailoverError::AlreadyActive(b.into()));
                }
                if !v.backing[k].usable() {
                    return Err(FailoverError::NotOperational(b.into()));
                }
                k
            }
            None => {
                let v = &self.vnics[i];
                let c: Vec<Candidate> = v
                    .backing
                    .iter()
                    .map(|b| Candidate {
                        priority: b.cfg.priority,
                        usable: b.usable(),
                        healthy_since: b.healthy_since,
                    })
                    .collect();
                failover::best(&c, v.active).ok_or_else(|| FailoverError::NoStandby(vnic.into()))?
            }
        };
        self.switch(i, target, Reason::Planned(why.into()), 0)
            .ok_or_else(|| FailoverError::Publish("switch failed".into()))
    }

    /// Take a backing device out of service (switching away first if it is active), or put it
    /// back (it becomes standby, or failed until its link is up).
    pub fn set_backing_enabled(
        &mut self,
        vnic: &str,
        backing: &str,
        enabled: bool,
        force: bool,
    ) -> Result<Option<Event>, FailoverError> {
        let (i, k) = self.backing_index(vnic, backing)?;
        let mut ev = None;
        if enabled {
            let b = &mut self.vnics[i].backing[k];
            if b.state == BackingState::Disabled {
                b.state = if b.port.is_some() {
                    BackingState::Standby
                } else {
                    BackingState::Failed("not started".into())
                };
                b.healthy_since = b.link_up.then_some(Instant::now());
            }
        } else {
            if self.vnics[i].active == Some(k) {
                match self.planned(
                    vnic,
                    None,
                    &format!("{backing} disabled by the administrator"),
                ) {
                    Ok(e) => ev = Some(e),
                    Err(FailoverError::NoStandby(_)) if force => {}
                    Err(FailoverError::NoStandby(_)) => {
                        return Err(FailoverError::LastDevice(backing.into()))
                    }
                    Err(e) => return Err(e),
                }
            }
            self.vnics[i].backing[k].state = BackingState::Disabled;
        }
        let ci = self.vnics[i].core_idx;
        self.publish_core(ci)
            .map_err(|e| FailoverError::Publish(e.to_string()))?;
        Ok(ev)
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

    /// Current status (counters summed over data cores).
    pub fn status(&self) -> Status {
        let eal = self.eal.as_ref();
        let vnics = self
            .vnics
            .iter()
            .map(|v| {
                let s = self.slot_stats(v.slot).since(&v.stats_base);
                VnicStatus {
                    name: v.name.clone(),
                    mac: v.mac.to_string(),
                    state: if v.attach.is_some() {
                        "attached"
                    } else {
                        "detached"
                    },
                    client_pid: v.attach.as_ref().and_then(|a| match a.owner {
                        Owner::Client { pid, .. } => Some(pid),
                        Owner::Inline => None,
                    }),
                    owner: v.attach.as_ref().map(|a| a.owner.clone()),
                    epoch: v.epoch,
                    queues: v.attach.as_ref().map(|a| a.queues as u32).unwrap_or(0),
                    ring_depth: v.attach.as_ref().map(|a| a.depth).unwrap_or(0),
                    mtu: v.attach.as_ref().map(|a| a.mtu).unwrap_or(v.mtu),
                    promisc: v.attach.as_ref().is_some_and(|a| a.promisc),
                    data_core: self.cores[v.core_idx].core,
                    active_backing: v.active.map(|a| v.backing[a].cfg.name.clone()),
                    link_up: v.active.is_some_and(|a| v.backing[a].usable()),
                    failover_count: v.failovers,
                    auto_priority_failover: v.policy.auto_priority_failover,
                    last_switch: v.last_switch.clone(),
                    flap_suppressed: v.flap_suppressed,
                    backing: v
                        .backing
                        .iter()
                        .map(|b| BackingStatus {
                            name: b.cfg.name.clone(),
                            devargs: b.cfg.devargs.clone(),
                            priority: b.cfg.priority,
                            port_label: b.cfg.port_label.clone(),
                            state: b.state.clone(),
                            link_up: b.link_up,
                            healthy_ms: b.healthy_since.map(|t| t.elapsed().as_millis() as u64),
                            last_failure: b.last_failure.clone(),
                        })
                        .collect(),
                    stats: s,
                    pool_in_use: v.pool.in_use(),
                    pool_size: v.pool.size(),
                }
            })
            .collect();
        let cores = self
            .cores
            .iter()
            .map(|c| CoreStatus {
                core: c.core,
                launch: match c.worker.launch_kind() {
                    Launch::Lcore(_) => "lcore",
                    Launch::Thread(_) => "thread",
                },
                table_generation: c.worker.adopted_generation(),
                stats: c.worker.core_stats(),
            })
            .collect();
        Status {
            generation: self.generation,
            config_generation: self.config_generation,
            dpdk_version: eal::dpdk_version(),
            eal_args: eal.map(|e| e.args().to_vec()).unwrap_or_default(),
            tsc_hz: eal::tsc_hz(),
            vnics,
            cores,
        }
    }

    /// The client rings of an attached vNIC queue (in-process clients and tests).
    pub fn client_rings(&self, vnic: &str, queue: u16) -> Option<(Arc<Ring>, Arc<Ring>)> {
        let v = self.vnics.iter().find(|v| v.name == vnic)?;
        v.attach.as_ref()?.rings.get(queue as usize).cloned()
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
        for v in &self.vnics {
            drained += v.announce_ring.drain();
        }
        for v in &mut self.vnics {
            if let Some(att) = v.attach.take() {
                for (rx, tx) in att.rings {
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

impl Drop for Appliance {
    fn drop(&mut self) {
        if self.eal.is_some() {
            self.teardown();
        }
    }
}

/// Why a reload was refused. When it is returned, nothing running changed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadError {
    #[error("invalid config:\n{0}")]
    Config(ConfigErrors),
    #[error("step \"{step}\" failed: {cause}; nothing was changed")]
    Step { step: String, cause: String },
}

/// A reload whose new resources exist but are not in service yet. Dropping it releases them.
pub struct PreparedReload {
    config: Config,
    steps: Vec<crate::reload::Step>,
    new_vnics: Vec<Vnic>,
    new_backing: Vec<(String, Backing)>,
    started: Instant,
}

impl PreparedReload {
    /// vNICs whose clients lose their attachment (removed or recreated).
    pub fn affected(&self) -> Vec<String> {
        use crate::reload::Step;
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::RemoveVnic { vnic } | Step::RecreateVnic { vnic, .. } => Some(vnic.clone()),
                _ => None,
            })
            .collect()
    }
    /// The plan.
    pub fn steps(&self) -> &[crate::reload::Step] {
        &self.steps
    }
}

impl Appliance {
    /// The reload history.
    pub fn reloads(&self) -> Vec<crate::reload::Reload> {
        self.reloads.iter().cloned().collect()
    }

    /// The current config generation.
    pub fn config_generation(&self) -> u64 {
        self.config_generation
    }

    /// Plan only (for `config diff`).
    pub fn plan_reload(&self, new: &Config) -> Result<Vec<crate::reload::Step>, ReloadError> {
        crate::reload::plan(&self.config, new).map_err(ReloadError::Config)
    }

    fn free_slot(&self, taken: &[VnicSlot]) -> Option<VnicSlot> {
        (0..config::MAX_VNICS as u32)
            .map(VnicSlot)
            .find(|s| !self.vnics.iter().any(|v| v.slot == *s) && !taken.contains(s))
    }

    /// Phase 1: plan and build every new resource. On error everything built is released and the
    /// running appliance is untouched.
    pub fn prepare_reload(&mut self, new: Config) -> Result<PreparedReload, ReloadError> {
        use crate::reload::Step;
        let started = Instant::now();
        let steps = crate::reload::plan(&self.config, &new).map_err(ReloadError::Config)?;
        let mut new_vnics = Vec::new();
        let mut new_backing = Vec::new();
        let mut taken = Vec::new();
        for st in &steps {
            let fail = |cause: String| ReloadError::Step {
                step: st.to_string(),
                cause,
            };
            match st {
                Step::AddVnic { vnic } => {
                    let i = new
                        .raw
                        .vnics
                        .iter()
                        .position(|v| &v.name == vnic)
                        .ok_or_else(|| fail("not in the new config".into()))?;
                    let vc = &new.raw.vnics[i];
                    let core_idx = new
                        .data_cores()
                        .iter()
                        .position(|d| d.core == new.vnic_cores[i])
                        .unwrap_or(0);
                    let slot = self.free_slot(&taken).ok_or_else(|| {
                        fail(format!("all {} vNIC slots in use", config::MAX_VNICS))
                    })?;
                    self.incarnations += 1;
                    let mut v = build_vnic(vc, new.macs[i], core_idx, slot, self.incarnations)
                        .map_err(|e| fail(e.to_string()))?;
                    if let Some(b) = v.backing.iter().find(|b| b.port.is_none()) {
                        // A device that cannot even be probed is a bad config, not a fault.
                        return Err(fail(format!(
                            "backing device {}: {}",
                            b.cfg.name,
                            b.last_failure.clone().unwrap_or_default()
                        )));
                    }
                    v.stats_base = self.slot_stats(slot);
                    taken.push(slot);
                    new_vnics.push(v);
                }
                Step::AddBacking { vnic, backing } => {
                    let vc = new
                        .raw
                        .vnics
                        .iter()
                        .find(|v| &v.name == vnic)
                        .ok_or_else(|| fail("vNIC not in the new config".into()))?;
                    let bc = vc
                        .backing
                        .iter()
                        .find(|b| &b.name == backing)
                        .ok_or_else(|| fail("backing device not in the new config".into()))?;
                    let running = self
                        .vnics
                        .iter()
                        .find(|v| &v.name == vnic)
                        .ok_or_else(|| fail("vNIC not running".into()))?;
                    let b = build_backing(vnic, bc, &port_config(vc), &running.pool, running.mac);
                    if b.port.is_none() {
                        return Err(fail(b.last_failure.clone().unwrap_or_default()));
                    }
                    new_backing.push((vnic.clone(), b));
                }
                _ => {}
            }
        }
        Ok(PreparedReload {
            config: new,
            steps,
            new_vnics,
            new_backing,
            started,
        })
    }

    /// Phase 2: put the prepared reload in service. Removed and recreated vNICs are detached
    /// (their clients should have been told already), moved vNICs change cores without loss,
    /// everything else is updated in place. Returns the history entry.
    pub fn commit_reload(
        &mut self,
        p: PreparedReload,
        source: &str,
    ) -> Result<crate::reload::Reload, ReloadError> {
        use crate::reload::Step;
        let PreparedReload {
            config: new,
            steps,
            mut new_vnics,
            mut new_backing,
            started,
        } = p;
        let mut dropped_vnics = Vec::new();
        let mut dropped_ports = Vec::new();
        // 1. vNICs that go away (or are replaced): detach, take out of the list.
        for st in &steps {
            if let Step::RemoveVnic { vnic } | Step::RecreateVnic { vnic, .. } = st {
                if self
                    .vnics
                    .iter()
                    .any(|v| &v.name == vnic && v.attach.is_some())
                {
                    let _ = self.detach(vnic);
                }
                if let Some(i) = self.vnics.iter().position(|v| &v.name == vnic) {
                    dropped_vnics.push(self.vnics.remove(i));
                }
            }
        }
        // 2. In-place changes.
        for st in &steps {
            match st {
                Step::MoveVnic { vnic, to_core, .. } => {
                    if let Some(v) = self.vnics.iter_mut().find(|v| &v.name == vnic) {
                        v.parked = true;
                        v.core_idx = new
                            .data_cores()
                            .iter()
                            .position(|d| d.core == *to_core)
                            .unwrap_or(0);
                    }
                }
                Step::RemoveBacking { vnic, backing } => {
                    let Some(i) = self.vnics.iter().position(|v| &v.name == vnic) else {
                        continue;
                    };
                    let Some(k) = self.vnics[i]
                        .backing
                        .iter()
                        .position(|b| &b.cfg.name == backing)
                    else {
                        continue;
                    };
                    if self.vnics[i].active == Some(k) {
                        let _ = self.planned(vnic, None, &format!("{backing} removed by a reload"));
                    }
                    let v = &mut self.vnics[i];
                    let b = v.backing.remove(k);
                    v.active = match v.active {
                        Some(a) if a == k => None,
                        Some(a) if a > k => Some(a - 1),
                        a => a,
                    };
                    dropped_ports.extend(b.port);
                }
                Step::AddBacking { vnic, backing } => {
                    if let Some(pos) = new_backing
                        .iter()
                        .position(|(v, b)| v == vnic && &b.cfg.name == backing)
                    {
                        let (_, b) = new_backing.remove(pos);
                        if let Some(v) = self.vnics.iter_mut().find(|v| &v.name == vnic) {
                            v.backing.push(b);
                        }
                    }
                }
                Step::UpdateVnic { vnic, .. } => {
                    let (Some(v), Some(vc)) = (
                        self.vnics.iter_mut().find(|v| &v.name == vnic),
                        new.raw.vnics.iter().find(|v| &v.name == vnic),
                    ) else {
                        continue;
                    };
                    v.allowed_uids = vc.allowed_uids.clone();
                    v.allowed_gids = vc.allowed_gids.clone();
                    v.allow_spoofing = vc.allow_spoofing;
                    v.policy = policy(vc);
                    v.ipv4 = ipv4s(vc);
                    for b in &mut v.backing {
                        if let Some(bc) = vc
                            .backing
                            .iter()
                            .find(|c| c.name == b.cfg.name && c.devargs == b.cfg.devargs)
                        {
                            b.cfg = bc.clone();
                        }
                    }
                }
                _ => {}
            }
        }
        // Backing lists follow the config order (priority ties break on it).
        for v in &mut self.vnics {
            if let Some(vc) = new.raw.vnics.iter().find(|c| c.name == v.name) {
                let active_name = v.active.map(|a| v.backing[a].cfg.name.clone());
                v.backing.sort_by_key(|b| {
                    vc.backing
                        .iter()
                        .position(|c| c.name == b.cfg.name)
                        .unwrap_or(usize::MAX)
                });
                v.active = active_name.and_then(|n| v.backing.iter().position(|b| b.cfg.name == n));
            }
        }
        // 3. New vNICs.
        self.vnics.append(&mut new_vnics);
        // 4. Publish: first every core without the moving vNICs (no two cores ever poll one
        //    queue), then with them on their new cores. Only then release what went away.
        for ci in 0..self.cores.len() {
            if let Err(e) = self.publish_core(ci) {
                tracing::error!(core = ci, "reload: publish: {e}");
            }
        }
        if self.vnics.iter().any(|v| v.parked) {
            let cores: Vec<usize> = self
                .vnics
                .iter()
                .filter(|v| v.parked)
                .map(|v| v.core_idx)
                .collect();
            for v in &mut self.vnics {
                v.parked = false;
            }
            for ci in cores {
                if let Err(e) = self.publish_core(ci) {
                    tracing::error!(core = ci, "reload: publish: {e}");
                }
            }
        }
        for v in &mut dropped_vnics {
            v.announce_ring.drain();
        }
        let old_cfg = self.config.clone();
        let recreated: Vec<String> = dropped_vnics
            .iter()
            .filter(|v| {
                steps
                    .iter()
                    .any(|s| matches!(s, Step::RecreateVnic { vnic, .. } if *vnic == v.name))
            })
            .map(|v| v.name.clone())
            .collect();
        drop(dropped_vnics);
        drop(dropped_ports);
        // 5. Recreated vNICs are built now: their devices were the old vNIC's until a moment ago.
        //    If one cannot be built, the old one is built again from the running config.
        for name in &recreated {
            match self.build_from(&new, name) {
                Ok(()) => {}
                Err(e) => {
                    let restored = self.build_from(&old_cfg, name).is_ok();
                    let err = ReloadError::Step {
                        step: format!("recreate vNIC {name}"),
                        cause: format!(
                            "{e}; the vNIC was {}",
                            if restored {
                                "restored as it was"
                            } else {
                                "lost: reload again"
                            }
                        ),
                    };
                    self.record_failed_reload(source, &err, started);
                    return Err(err);
                }
            }
        }
        self.config = new;
        self.config_generation += 1;
        let r = crate::reload::Reload {
            generation: self.config_generation,
            at_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            source: source.into(),
            ok: true,
            steps: steps.iter().map(|s| s.to_string()).collect(),
            error: None,
            took_us: started.elapsed().as_micros() as u64,
        };
        self.record(r.clone());
        Ok(r)
    }

    /// Build vNIC `name` as `cfg` describes it, put it in service (unattached).
    fn build_from(&mut self, cfg: &Config, name: &str) -> Result<(), String> {
        let i = cfg
            .raw
            .vnics
            .iter()
            .position(|v| v.name == name)
            .ok_or("not in the config")?;
        let vc = &cfg.raw.vnics[i];
        let core_idx = cfg
            .data_cores()
            .iter()
            .position(|d| d.core == cfg.vnic_cores[i])
            .unwrap_or(0);
        let slot = self.free_slot(&[]).ok_or("no free vNIC slot")?;
        self.incarnations += 1;
        let mut v = build_vnic(vc, cfg.macs[i], core_idx, slot, self.incarnations)
            .map_err(|e| e.to_string())?;
        if let Some(b) = v.backing.iter().find(|b| b.port.is_none()) {
            return Err(format!(
                "backing device {}: {}",
                b.cfg.name,
                b.last_failure.clone().unwrap_or_default()
            ));
        }
        v.stats_base = self.slot_stats(slot);
        self.vnics.push(v);
        self.publish_core(core_idx).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Record a reload that failed (nothing changed).
    pub fn record_failed_reload(&mut self, source: &str, err: &ReloadError, started: Instant) {
        self.record(crate::reload::Reload {
            generation: self.config_generation,
            at_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            source: source.into(),
            ok: false,
            steps: vec![],
            error: Some(err.to_string()),
            took_us: started.elapsed().as_micros() as u64,
        });
    }

    fn record(&mut self, r: crate::reload::Reload) {
        if self.reloads.len() == 64 {
            self.reloads.pop_front();
        }
        self.reloads.push_back(r);
    }
}
