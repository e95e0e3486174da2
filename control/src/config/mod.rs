//! The JSON config: parsed strictly (`deny_unknown_fields`), then validated into typed values.
//! Every error names the JSON path and the rule it breaks; validation reports all errors at once.
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

mod validate;
pub use validate::{check_devargs, device_name, is_pci_address};

/// Most backing devices per vNIC (PowerVM's limit).
pub const MAX_BACKING: usize = 6;
/// Most vNICs per appliance.
pub const MAX_VNICS: usize = 1024;
/// Most queues per vNIC.
pub const MAX_QUEUES: u16 = 16;
/// Longest vNIC or backing-device name (DPDK ring names derive from it).
pub const MAX_NAME: usize = 16;

/// One config error: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// JSON path, e.g. `vnics[0].backing[1].priority`; `$` for the document.
    pub path: String,
    /// The rule broken.
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.msg)
    }
}

/// All errors of one config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// A single error.
    pub fn one(path: impl Into<String>, msg: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            path: path.into(),
            msg: msg.into(),
        }])
    }
    /// True if some error is at `path` and its message contains `needle` (for tests and tools).
    pub fn has(&self, path: &str, needle: &str) -> bool {
        self.0
            .iter()
            .any(|e| e.path == path && e.msg.contains(needle))
    }
}

/// Hugepage policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Hugepages {
    /// Use hugepages when the host has free ones on a mounted hugetlbfs, else `--no-huge`.
    #[default]
    Auto,
    /// Require hugepages.
    On,
    /// Never use hugepages.
    Off,
}

/// How a data core's thread is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LaunchKind {
    /// An EAL worker lcore (`rte_eal_remote_launch`).
    #[default]
    Lcore,
    /// A pinned std thread registered with `rte_thread_register`.
    Thread,
}

/// `eal` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EalSection {
    /// CPUs for EAL lcores (main core and data cores).
    pub cores: Vec<u32>,
    /// The control thread's CPU.
    pub main_core: u32,
    /// Memory in MiB (64..=65536).
    pub memory_mb: u32,
    /// `auto` (default), `on` or `off`.
    pub hugepages: Hugepages,
    /// Shared-memory prefix. Set it so client processes can attach as DPDK secondaries; unset
    /// means `--in-memory` (nothing left on disk).
    pub file_prefix: Option<String>,
    /// EAL log level 0..=8.
    pub log_level: u32,
    /// Extra EAL arguments, appended verbatim.
    pub extra_args: Vec<String>,
}

impl Default for EalSection {
    fn default() -> Self {
        EalSection {
            cores: vec![0, 1],
            main_core: 0,
            memory_mb: 512,
            hugepages: Hugepages::Auto,
            file_prefix: None,
            log_level: 4,
            extra_args: vec![],
        }
    }
}

/// One data core.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataCore {
    /// CPU / lcore id.
    pub core: u32,
    /// `lcore` (default) or `thread`.
    #[serde(default)]
    pub launch: LaunchKind,
    /// Idle back-off ceiling in µs; 0 = pure busy polling (production default).
    #[serde(default)]
    pub idle_sleep_us: u32,
}

/// A backing device: one VF (PCI address or vdev devargs) that can carry a vNIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackingConfig {
    /// Name, unique within the appliance.
    pub name: String,
    /// `0000:03:00.1` or a vdev string such as `net_memif0,role=client,socket=/run/x.sock`.
    pub devargs: String,
    /// 1..=100, lower wins (default 50).
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// Physical port label: no two backing devices of one vNIC may share one. A vNIC that
    /// moves to another appliance gets a device with the same label there (or the one
    /// `vnicctl migrate --map` names).
    pub port_label: String,
    /// Program the vNIC's MAC into the device (default true: a VF carries its vNIC's address).
    /// `false` for a `net_tap` port on a Linux bridge: the tap's kernel side is the switch
    /// port, and a bridge treats its ports' own addresses as local.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub program_mac: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}

fn default_priority() -> u32 {
    50
}

/// A client vNIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VnicConfig {
    /// Name, unique, `[A-Za-z0-9_-]`, at most 16 characters.
    pub name: String,
    /// Unicast MAC, `02:00:00:00:00:01`.
    pub mac: String,
    /// 68..=9600 (default 1500).
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// 1..=16 (default 1).
    #[serde(default = "default_queues")]
    pub queues: u32,
    /// Client ring depth, a power of two 64..=32768 (default 1024).
    #[serde(default = "default_depth")]
    pub ring_depth: u32,
    /// The data core serving it (default: the first).
    #[serde(default)]
    pub data_core: Option<u32>,
    /// Backing devices, 1..=6.
    pub backing: Vec<BackingConfig>,
    /// Client uids allowed to attach (peer credentials of the control socket). Default: root.
    #[serde(default = "default_uids")]
    pub allowed_uids: Vec<u32>,
    /// Client gids allowed to attach (either list matching is enough).
    #[serde(default)]
    pub allowed_gids: Vec<u32>,
    /// Let the client send frames with any source MAC (default: drop and count them).
    #[serde(default)]
    pub allow_spoofing: bool,
    /// Return to a better-priority device once it has been healthy for `hold_down_ms`.
    #[serde(default = "default_true")]
    pub auto_priority_failover: bool,
    /// Healthy time before an automatic fail-back (0..=600000 ms, default 2000).
    #[serde(default = "default_hold_down")]
    pub hold_down_ms: u32,
    /// At most this many automatic fail-backs per `flap_window_ms` (1..=1000, default 3); then
    /// the vNIC stays put and reports it.
    #[serde(default = "default_flap_limit")]
    pub flap_limit: u32,
    /// Window of the flap limit (1000..=3600000 ms, default 60000).
    #[serde(default = "default_flap_window")]
    pub flap_window_ms: u32,
    /// The active device has failed when its tx queue refuses every burst for this long while
    /// its link is up (1..=60000 ms, default 100).
    #[serde(default = "default_tx_stall")]
    pub tx_stall_ms: u32,
    /// Fast reroute: the data core itself fails the active device over to the best standby when
    /// its tx queue has refused every frame for this long while the link reads up (a dead peer,
    /// a queue that stopped draining); a congested device accepts some frames in any such
    /// window. 0 turns it off (0..=1000000 µs, default 200).
    #[serde(default = "default_tx_refuse")]
    pub tx_refuse_us: u32,
    /// Peer announcements after a switch: RARP, plus gratuitous ARP for each of `ipv4`
    /// (0..=10 rounds, default 3).
    #[serde(default = "default_announce_rounds")]
    pub announce_rounds: u32,
    /// Gap between announcement rounds (1..=10000 ms, default 50).
    #[serde(default = "default_announce_interval")]
    pub announce_interval_ms: u32,
    /// The client's IPv4 addresses, for gratuitous ARP after a switch.
    #[serde(default)]
    pub ipv4: Vec<String>,
    /// Mbufs in the vNIC's pool (1023..=1048575). Default: enough for every device's descriptors
    /// and the client rings (8191 for one device and the default ring depth).
    #[serde(default)]
    pub mbufs: Option<u32>,
    /// How the client reaches the vNIC (default: `{"transport": "shm"}`).
    #[serde(default)]
    pub client: ClientConfig,
}

/// A vNIC's client transport.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "transport", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ClientConfig {
    /// A DPDK secondary process on vnicd's hugepages, through the control socket: zero copy.
    #[default]
    Shm,
    /// vhost-user (QEMU virtio-net, `net_virtio_user`): vnicd is the backend.
    VhostUser {
        /// The vhost-user socket (absolute path).
        socket: String,
        /// `server` (default): vnicd listens; `client`: vnicd dials the frontend's socket and
        /// re-dials when it comes back.
        #[serde(default)]
        mode: VhostMode,
    },
    /// memif (`net_memif`, VPP, libmemif): vnicd is the memif server.
    Memif {
        /// The memif control socket (absolute path).
        socket: String,
        /// Interface id on the socket (default 0).
        #[serde(default)]
        id: u32,
        /// Shared secret the client must present (at most 24 characters).
        #[serde(default)]
        secret: Option<String>,
    },
}

impl ClientConfig {
    /// The transport's name as configured (`shm`, `vhost-user`, `memif`).
    pub fn transport(&self) -> &'static str {
        match self {
            ClientConfig::Shm => "shm",
            ClientConfig::VhostUser { .. } => "vhost-user",
            ClientConfig::Memif { .. } => "memif",
        }
    }
    /// The socket file it serves, if any.
    pub fn socket(&self) -> Option<&str> {
        match self {
            ClientConfig::Shm => None,
            ClientConfig::VhostUser { socket, .. } | ClientConfig::Memif { socket, .. } => {
                Some(socket)
            }
        }
    }
}

/// Who dials on a vhost-user socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VhostMode {
    #[default]
    Server,
    Client,
}

fn default_uids() -> Vec<u32> {
    vec![0]
}
fn default_true() -> bool {
    true
}
fn default_hold_down() -> u32 {
    2000
}
fn default_flap_limit() -> u32 {
    3
}
fn default_flap_window() -> u32 {
    60_000
}
fn default_tx_stall() -> u32 {
    100
}
fn default_tx_refuse() -> u32 {
    200
}
fn default_announce_rounds() -> u32 {
    3
}
fn default_announce_interval() -> u32 {
    50
}

fn default_mtu() -> u32 {
    1500
}
fn default_queues() -> u32 {
    1
}
fn default_depth() -> u32 {
    1024
}

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub eal: EalSection,
    /// Data cores (default: one, on CPU 1).
    #[serde(default = "default_data_cores")]
    pub data_cores: Vec<DataCore>,
    /// Client control socket path.
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    /// File mode of the control socket, octal string (default "0660").
    #[serde(default = "default_socket_mode")]
    pub control_socket_mode: String,
    /// Group owning the control socket (default: unchanged).
    #[serde(default)]
    pub control_socket_gid: Option<u32>,
    /// Admin socket path (mode 0600: root only by default).
    #[serde(default = "default_admin_socket")]
    pub admin_socket: PathBuf,
    /// Uids allowed on the admin socket (default: root).
    #[serde(default = "default_uids")]
    pub admin_uids: Vec<u32>,
    /// A client silent for this long is detached (20..=60000 ms, default 1000).
    #[serde(default = "default_heartbeat")]
    pub heartbeat_timeout_ms: u32,
    /// Status line interval in ms (100..=60000, default 1000).
    #[serde(default = "default_stats_interval")]
    pub stats_interval_ms: u32,
    /// Reload by itself when the config file changes (inotify). A half-written file fails
    /// validation and changes nothing; the complete one is applied.
    #[serde(default)]
    pub watch_config: bool,
    /// vNICs (at most 1024).
    pub vnics: Vec<VnicConfig>,
    /// Taking vNICs that move here from another appliance (`vnicctl migrate`).
    #[serde(default, skip_serializing_if = "MobilityConfig::is_default")]
    pub mobility: MobilityConfig,
    /// Prometheus / OpenMetrics exposition (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
}

/// Where vnicd serves `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `IP:PORT` (TCP, e.g. `127.0.0.1:9469`) or `unix:/ABSOLUTE/PATH`.
    pub listen: String,
}

/// A parsed `metrics.listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsListen {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl MetricsConfig {
    /// The listen address, or why it is not one.
    pub fn parse_listen(&self) -> Result<MetricsListen, String> {
        let l = self.listen.as_str();
        if let Some(p) = l.strip_prefix("unix:") {
            validate::check_socket_path(p).map_err(|m| format!("unix socket {m}"))?;
            return Ok(MetricsListen::Unix(PathBuf::from(p)));
        }
        l.parse().map(MetricsListen::Tcp).map_err(|_| {
            format!(
                "{l:?} is neither IP:PORT (e.g. \"127.0.0.1:9469\", \"[::1]:9469\") nor unix:/PATH"
            )
        })
    }
}

/// What this appliance offers vNICs that move in from another one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MobilityConfig {
    /// Free VFs an arriving vNIC's backing devices are taken from, by `port_label` (the HMC
    /// maps backing devices by physical port the same way). A spare in use appears as a backing
    /// device of the vNIC that took it; it is free again when that vNIC leaves.
    #[serde(default)]
    pub spares: Vec<SpareConfig>,
    /// Where the vhost-user and memif sockets of arriving vNICs are made (`<dir>/<vnic>.vhost`,
    /// `<dir>/<vnic>.memif`). Needed to take such vNICs.
    #[serde(default)]
    pub socket_dir: Option<String>,
    /// How long a prepared vNIC waits for its client to arrive before it is released
    /// (100..=600000 ms, default 30000).
    #[serde(default = "default_arrive_timeout")]
    pub arrive_timeout_ms: u32,
}

impl Default for MobilityConfig {
    fn default() -> MobilityConfig {
        MobilityConfig {
            spares: Vec::new(),
            socket_dir: None,
            arrive_timeout_ms: default_arrive_timeout(),
        }
    }
}

impl MobilityConfig {
    fn is_default(&self) -> bool {
        *self == MobilityConfig::default()
    }
}

fn default_arrive_timeout() -> u32 {
    30_000
}

/// A free VF for arriving vNICs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpareConfig {
    /// Name it takes as a backing device (unique within the appliance).
    pub name: String,
    pub devargs: String,
    /// The physical port it is on.
    pub port_label: String,
    /// As for a backing device.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub program_mac: bool,
}

fn default_data_cores() -> Vec<DataCore> {
    vec![DataCore {
        core: 1,
        launch: LaunchKind::Lcore,
        idle_sleep_us: 0,
    }]
}
fn default_control_socket() -> PathBuf {
    PathBuf::from("/run/vnicd/control.sock")
}
fn default_stats_interval() -> u32 {
    1000
}
fn default_socket_mode() -> String {
    "0660".into()
}
fn default_admin_socket() -> PathBuf {
    PathBuf::from("/run/vnicd/admin.sock")
}
fn default_heartbeat() -> u32 {
    1000
}

/// Parse an octal file mode such as "0660".
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let m = u32::from_str_radix(s, 8)
        .map_err(|_| format!("{s:?} is not an octal file mode such as \"0660\""))?;
    if m > 0o777 {
        return Err(format!("{s:?} has bits beyond 0777"));
    }
    Ok(m)
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl std::str::FromStr for MacAddr {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err("must be six hex octets separated by ':' (02:00:00:00:00:01)");
        }
        let mut m = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err("each octet must be two hex digits");
            }
            m[i] = u8::from_str_radix(p, 16).map_err(|_| "octets must be hex digits")?;
        }
        if m[0] & 1 == 1 {
            return Err("must be unicast (a multicast bit is set in the first octet)");
        }
        if m == [0; 6] {
            return Err("must not be all zeros");
        }
        Ok(MacAddr(m))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A validated config. Only [`parse`] / [`RawConfig::validate`] make one, so its fields are
/// private: what validation derived (MACs, placements) cannot drift from what it checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    raw: RawConfig,
    /// Parsed MAC per vNIC (same order as `raw.vnics`).
    macs: Vec<MacAddr>,
    /// The data core of each vNIC (same order).
    vnic_cores: Vec<u32>,
}

impl Config {
    /// The config as written (defaults filled in).
    pub fn raw(&self) -> &RawConfig {
        &self.raw
    }
    /// vNIC `i`'s MAC.
    pub fn mac(&self, i: usize) -> MacAddr {
        self.macs[i]
    }
    /// vNIC `i`'s data core (CPU).
    pub fn vnic_core(&self, i: usize) -> u32 {
        self.vnic_cores[i]
    }
    /// vNIC `i`'s data core as an index into [`Config::data_cores`] (validation made sure it is
    /// one of them).
    pub fn vnic_core_index(&self, i: usize) -> usize {
        let core = self.vnic_cores[i];
        self.data_cores()
            .iter()
            .position(|d| d.core == core)
            .unwrap_or(0)
    }
    /// vNICs.
    pub fn vnics(&self) -> &[VnicConfig] {
        &self.raw.vnics
    }
    /// Data cores.
    pub fn data_cores(&self) -> &[DataCore] {
        &self.raw.data_cores
    }
}

/// Parse and validate JSON text.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    // `//` and `/* */` comments (JSONC, as editors write it) become spaces, byte for byte; the
    // newlines inside block comments are put back so that the line and column of a syntax error
    // stay those of the file.
    let mut plain = Vec::with_capacity(text.len());
    std::io::Read::read_to_end(
        &mut json_comments::StripComments::with_settings(
            json_comments::CommentSettings::c_style(),
            text.as_bytes(),
        ),
        &mut plain,
    )
    .map_err(|e| ConfigErrors::one("$", format!("unterminated comment: {e}")))?;
    for (p, o) in plain.iter_mut().zip(text.as_bytes()) {
        if *o == b'\n' {
            *p = b'\n';
        }
    }
    let plain = String::from_utf8(plain)
        .map_err(|_| ConfigErrors::one("$", "not UTF-8 once comments are removed"))?;
    let de = &mut serde_json::Deserializer::from_str(&plain);
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let path = if path.is_empty() || path == "." {
            "$".to_string()
        } else {
            path
        };
        let msg = match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!(
                    "syntax error at line {} column {}: {}",
                    inner.line(),
                    inner.column(),
                    strip_pos(&inner)
                )
            }
            _ => format!(
                "{} (line {} column {})",
                strip_pos(&inner),
                inner.line(),
                inner.column()
            ),
        };
        ConfigErrors::one(path, msg)
    })?;
    raw.validate()
}

/// Read, parse and validate a file.
pub fn load(path: &std::path::Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::one("$", format!("cannot read {}: {e}", path.display())))?;
    parse(&text)
}

fn strip_pos(e: &serde_json::Error) -> String {
    // serde_json appends " at line L column C"; we print position ourselves.
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The embedded default config (`configs/demo.json`).
pub const DEMO_CONFIG: &str = include_str!("../../../configs/demo.json");
