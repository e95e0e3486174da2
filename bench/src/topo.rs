//! The line-rate topologies: `vnic-gen` (paced generator, memif servers, CPU 0) ↔ memif ↔ a
//! device under test (memif clients, CPU 1), and what is measured on each: MRR per frame size,
//! NDR/PDR by binary search, latency at shares of NDR, and the DUT core's cycles per packet.
//!
//! Devices under test, all forwarding between the same two memif ports on the same CPU:
//! - `vnicd` (pvp): two vNICs, one backing device each, each with a `vnic-client reflect`
//!   process (the real client path: VF → client rx ring → client → client tx ring → VF). On two
//!   CPUs the clients share CPU 1 with the data core, which backs off when idle.
//! - `vnicd-inline`: the same vNICs with the in-core bounce client (no client process).
//! - `testpmd-io`: `dpdk-testpmd --forward-mode=io` (the software limit of this topology).
//! - `ovs-dpdk`: Open vSwitch with DPDK, `in_port` flows.
//!
//! The PV topologies (vsperf's and CSIT's PVP fitted to two CPUs): the generator owns both ends,
//! the wire side (a memif port to the device under test's backing device) and the client side (a
//! `net_virtio_user` port for vhost-user, a memif client port for memif); the device under test
//! forwards between them on CPU 1. Devices: vnicd (one vNIC, the client side its vhost-user or
//! memif transport), `dpdk-testpmd --forward-mode=io` between `net_memif` and `net_vhost` or two
//! `net_memif` ports (the software limit), Open vSwitch with DPDK with a `dpdkvhostuserclient`
//! port (or a memif port) and the memif wire port. Every frame crosses the device once.
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vnic_bench::gen::{Gen, Latency, TrialResult};
use vnic_bench::ovs::Ovs;
use vnic_bench::procs::Guard;
use vnic_bench::search::{self, SearchOpts, SearchResult};
use vnic_bench::testpmd::{Testpmd, TestpmdOpts};
use vnic_bench::vnicd::{self, Res};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topo {
    Vnicd,
    VnicdInline,
    TestpmdIo,
    OvsDpdk,
    PvVhostVnicd,
    PvVhostTestpmdIo,
    PvVhostOvsDpdk,
    PvMemifVnicd,
    PvMemifTestpmdIo,
    PvMemifOvsDpdk,
}

/// Topologies whose figures are compared with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// Generator ↔ two memif wires ↔ DUT (vnicd with shm clients).
    Wire,
    PvVhost,
    PvMemif,
}

/// Who forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DutKind {
    Vnicd,
    VnicdInline,
    Testpmd,
    Ovs,
}

impl Topo {
    pub const ALL: [Topo; 10] = [
        Topo::Vnicd,
        Topo::VnicdInline,
        Topo::TestpmdIo,
        Topo::OvsDpdk,
        Topo::PvVhostVnicd,
        Topo::PvVhostTestpmdIo,
        Topo::PvVhostOvsDpdk,
        Topo::PvMemifVnicd,
        Topo::PvMemifTestpmdIo,
        Topo::PvMemifOvsDpdk,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Topo::Vnicd => "vnicd",
            Topo::VnicdInline => "vnicd-inline",
            Topo::TestpmdIo => "testpmd-io",
            Topo::OvsDpdk => "ovs-dpdk",
            Topo::PvVhostVnicd => "pv-vhost-vnicd",
            Topo::PvVhostTestpmdIo => "pv-vhost-testpmd-io",
            Topo::PvVhostOvsDpdk => "pv-vhost-ovs-dpdk",
            Topo::PvMemifVnicd => "pv-memif-vnicd",
            Topo::PvMemifTestpmdIo => "pv-memif-testpmd-io",
            Topo::PvMemifOvsDpdk => "pv-memif-ovs-dpdk",
        }
    }
    pub fn family(self) -> Family {
        match self {
            Topo::Vnicd | Topo::VnicdInline | Topo::TestpmdIo | Topo::OvsDpdk => Family::Wire,
            Topo::PvVhostVnicd | Topo::PvVhostTestpmdIo | Topo::PvVhostOvsDpdk => Family::PvVhost,
            Topo::PvMemifVnicd | Topo::PvMemifTestpmdIo | Topo::PvMemifOvsDpdk => Family::PvMemif,
        }
    }
    pub fn dut(self) -> DutKind {
        match self {
            Topo::Vnicd | Topo::PvVhostVnicd | Topo::PvMemifVnicd => DutKind::Vnicd,
            Topo::VnicdInline => DutKind::VnicdInline,
            Topo::TestpmdIo | Topo::PvVhostTestpmdIo | Topo::PvMemifTestpmdIo => DutKind::Testpmd,
            Topo::OvsDpdk | Topo::PvVhostOvsDpdk | Topo::PvMemifOvsDpdk => DutKind::Ovs,
        }
    }
    /// A baseline (what vnicd is compared against), not vnicd.
    pub fn is_base(self) -> bool {
        matches!(self.dut(), DutKind::Testpmd | DutKind::Ovs)
    }
}

/// Where and how.
#[derive(Clone)]
pub struct TopoEnv {
    pub vnicd: PathBuf,
    pub dir: PathBuf,
    pub huge: bool,
    pub gen_cpu: u32,
    pub dut_cpu: u32,
    /// CPU of the `vnic-client` processes (pvp): the DUT's CPU on a 2-CPU host.
    pub client_cpu: u32,
}

/// What one round measures on a topology.
#[derive(Debug, Clone)]
pub struct Plan {
    /// (label, frame lengths cycled) for MRR.
    pub sizes: Vec<(String, Vec<u16>)>,
    /// Labels of `sizes` that get an NDR/PDR search.
    pub search_sizes: Vec<String>,
    /// Shares of NDR (of the first searched size) to measure latency at.
    pub latency_at: Vec<f64>,
    pub mrr_seconds: f64,
    pub short_seconds: f64,
    pub final_seconds: f64,
    pub latency_seconds: f64,
    pub warmup: f64,
    pub precision: f64,
}

/// The device under test, running.
pub struct Dut {
    /// vnicd's `packets` counts hops; frames cross it twice in the wire topology (VF → client
    /// → VF), once in a PV one.
    hops_per_frame: f64,
    vnicd: Option<Guard>,
    clients: Vec<Guard>,
    testpmd: Option<Testpmd>,
    ovs: Option<Ovs>,
    admin: PathBuf,
}

/// A DUT's drop counters by its own names for them.
pub type Drops = std::collections::BTreeMap<String, u64>;

/// Cost and drop counters snapshot taken before a trial.
pub enum Mark {
    Vnicd(serde_json::Value),
    Testpmd,
    Ovs(Drops),
    Other,
}

/// What the DUT's core spent on a trial, and what the DUT itself counted as dropped.
#[derive(Debug, Clone, Default)]
pub struct DutCost {
    pub cycles_per_packet: Option<f64>,
    pub idle_share: Option<f64>,
    /// The DUT's own drop counters over the trial, by its names for them (`None`: not read).
    pub drops: Option<Drops>,
}

/// vnicd's drop counters summed over vNICs.
fn vnicd_drops(st: &serde_json::Value) -> Drops {
    let mut m = Drops::new();
    for v in st["vnics"].as_array().into_iter().flatten() {
        for k in ["rx_drops", "tx_drops", "client_drops", "spoof_drops"] {
            *m.entry(k.to_string()).or_default() += v[k].as_u64().unwrap_or(0);
        }
    }
    m
}

/// `b - a` per counter.
fn delta(a: &Drops, b: Drops) -> Drops {
    b.into_iter()
        .map(|(k, v)| {
            let d = v.saturating_sub(a.get(&k).copied().unwrap_or(0));
            (k, d)
        })
        .collect()
}

impl Dut {
    /// Start the DUT on memif client ports `ports`, or for a PV topology on the wire port and
    /// the client side (`ports[0]`, `ports[1]`).
    pub fn start(env: &TopoEnv, topo: Topo, ports: &[String]) -> Res<Dut> {
        let admin = env.dir.join("admin.sock");
        let mut d = Dut {
            hops_per_frame: if topo.family() == Family::Wire {
                2.0
            } else {
                1.0
            },
            vnicd: None,
            clients: Vec::new(),
            testpmd: None,
            ovs: None,
            admin: admin.clone(),
        };
        match topo {
            Topo::PvVhostVnicd | Topo::PvMemifVnicd => {
                let client = if topo == Topo::PvVhostVnicd {
                    json!({"transport": "vhost-user", "socket": ports[1]})
                } else {
                    json!({"transport": "memif", "socket": ports[1]})
                };
                let cfg = json!({
                    "eal": {"cores": [env.gen_cpu, env.dut_cpu], "main_core": env.gen_cpu, "memory_mb": 512},
                    "data_cores": [{"core": env.dut_cpu, "idle_sleep_us": 0}],
                    "control_socket": env.dir.join("control.sock"),
                    "admin_socket": admin,
                    "stats_interval_ms": 60000,
                    "vnics": [{
                        // The generator's client-side port sends from 02:00:00:00:10:02: the
                        // vNIC's MAC, so the spoof check passes (and runs).
                        "name": "vnic0", "mac": "02:00:00:00:10:02", "client": client,
                        "backing": [{"name": "vf0", "devargs": ports[0], "port_label": "p0"}]
                    }]
                });
                let mut g =
                    vnicd::spawn(&env.vnicd, &env.dir.join("vnicd.json"), &cfg, &[], false)?;
                vnicd::wait_for(&admin, &mut g, "vnicd", Duration::from_secs(20), |_| true)?;
                d.vnicd = Some(g);
            }
            Topo::PvVhostTestpmdIo | Topo::PvMemifTestpmdIo => {
                let cl = if topo == Topo::PvVhostTestpmdIo {
                    format!("net_vhost0,iface={},queues=1", ports[1])
                } else {
                    format!(
                        "net_memif1,role=server,socket={},socket-abstract=no,id=0",
                        ports[1]
                    )
                };
                let mut o = TestpmdOpts::io(
                    env.dut_cpu,
                    env.gen_cpu,
                    vec![ports[0].clone(), cl],
                    env.huge,
                    "paired",
                );
                o.extra.push("--record-core-cycles".into());
                let mut t = Testpmd::spawn(&o)?;
                t.cmd("start")?;
                d.testpmd = Some(t);
            }
            Topo::PvVhostOvsDpdk | Topo::PvMemifOvsDpdk => {
                let cl = if topo == Topo::PvVhostOvsDpdk {
                    format!("{}{}", vnic_bench::ovs::VHOST_USER_CLIENT, ports[1])
                } else {
                    format!(
                        "net_memif1,role=server,socket={},socket-abstract=no,id=0",
                        ports[1]
                    )
                };
                d.ovs = Some(Ovs::start(
                    &env.dir.join("ovs"),
                    &[ports[0].clone(), cl],
                    env.dut_cpu,
                    env.gen_cpu,
                )?);
            }
            Topo::TestpmdIo => {
                let mut o =
                    TestpmdOpts::io(env.dut_cpu, env.gen_cpu, ports.to_vec(), env.huge, "paired");
                o.extra.push("--record-core-cycles".into());
                let mut t = Testpmd::spawn(&o)?;
                t.cmd("start")?;
                d.testpmd = Some(t);
            }
            Topo::OvsDpdk => {
                d.ovs = Some(Ovs::start(
                    &env.dir.join("ovs"),
                    ports,
                    env.dut_cpu,
                    env.gen_cpu,
                )?);
            }
            Topo::Vnicd | Topo::VnicdInline => {
                let pvp = topo == Topo::Vnicd;
                let mut eal = json!({"cores": [env.gen_cpu, env.dut_cpu], "main_core": env.gen_cpu, "memory_mb": 512});
                if pvp {
                    // The clients are DPDK secondaries: they need shared hugepage memory.
                    eal["hugepages"] = "on".into();
                    eal["file_prefix"] = format!("vnicb{}", std::process::id()).into();
                }
                let cfg = json!({
                    "eal": eal,
                    // With client processes on its CPU the data core must back off when idle.
                    "data_cores": [{"core": env.dut_cpu, "idle_sleep_us": if pvp && env.client_cpu == env.dut_cpu { 50 } else { 0 }}],
                    "control_socket": env.dir.join("control.sock"),
                    "admin_socket": admin,
                    "stats_interval_ms": 60000,
                    "vnics": ports.iter().enumerate().map(|(i, p)| json!({
                        "name": format!("vnic{i}"),
                        "mac": format!("02:00:00:00:00:{:02x}", i + 1),
                        // bounce returns frames as they came: their source MAC is not the vNIC's
                        "allow_spoofing": !pvp,
                        "backing": [{"name": format!("vf{i}"), "devargs": p, "port_label": format!("p{i}")}]
                    })).collect::<Vec<_>>()
                });
                let mut args = vec![];
                if !pvp {
                    args.extend(["--inline-client", "bounce"]);
                }
                let mut g =
                    vnicd::spawn(&env.vnicd, &env.dir.join("vnicd.json"), &cfg, &args, false)?;
                vnicd::wait_for(&admin, &mut g, "vnicd", Duration::from_secs(20), |_| true)?;
                if pvp {
                    for i in 0..ports.len() {
                        d.clients.push(vnicd::client(
                            &env.vnicd,
                            "reflect",
                            &format!("vnic{i}"),
                            &env.dir.join("control.sock"),
                            env.client_cpu,
                            &[],
                            vnicd::Output::Drop,
                        )?);
                    }
                    vnicd::wait_all_attached(&admin, &mut g)?;
                }
                d.vnicd = Some(g);
            }
        }
        Ok(d)
    }

    /// Is every process of the DUT still running?
    pub fn alive(&mut self) -> bool {
        self.vnicd.as_mut().is_none_or(|g| g.running())
            && self.clients.iter_mut().all(|c| c.running())
            && self.testpmd.as_mut().is_none_or(|t| t.running())
            && self.ovs.as_mut().is_none_or(|o| o.running())
    }

    /// Start a cost measurement.
    pub fn mark(&mut self) -> Res<Mark> {
        if let Some(t) = self.testpmd.as_mut() {
            // testpmd reports cycles/packet per start..stop period.
            t.cmd("stop")?;
            t.cmd("start")?;
            return Ok(Mark::Testpmd);
        }
        if let Some(o) = &self.ovs {
            o.clear_stats()?;
            return Ok(Mark::Ovs(o.drops()?));
        }
        if self.vnicd.is_some() {
            return Ok(Mark::Vnicd(vnicd::admin(&self.admin, "STATS", json!({}))?));
        }
        Ok(Mark::Other)
    }

    /// The DUT core's cost (cycles per forwarded frame, idle share) and the DUT's drops since
    /// `m`.
    pub fn cost(&mut self, m: Mark) -> Res<DutCost> {
        if let (Some(t), Mark::Testpmd) = (self.testpmd.as_mut(), &m) {
            let f = t.stop_forward_stats()?;
            t.cmd("start")?;
            return Ok(DutCost {
                cycles_per_packet: f.cycles_per_packet,
                idle_share: None,
                drops: Some(Drops::from([
                    ("rx_dropped".to_string(), f.rx_dropped),
                    ("tx_dropped".to_string(), f.tx_dropped),
                ])),
            });
        }
        if let (Some(o), Mark::Ovs(a)) = (&self.ovs, &m) {
            let (cpp, idle) = o.pmd_cost()?;
            return Ok(DutCost {
                cycles_per_packet: cpp,
                idle_share: idle,
                drops: Some(delta(a, o.drops()?)),
            });
        }
        if let Mark::Vnicd(a) = m {
            let b = vnicd::admin(&self.admin, "STATS", json!({}))?;
            let f = |v: &serde_json::Value, k: &str| v["cores"][0][k].as_f64().unwrap_or(0.0);
            let d = |k: &str| f(&b, k) - f(&a, k);
            // `packets` counts hops (VF→client and client→VF).
            let (p, busy, loops, bl) =
                (d("packets"), d("busy_cycles"), d("loops"), d("busy_loops"));
            return Ok(DutCost {
                cycles_per_packet: (p > 0.0).then(|| busy / (p / self.hops_per_frame)),
                idle_share: (loops > 0.0).then(|| 1.0 - bl / loops),
                drops: Some(delta(&vnicd_drops(&a), vnicd_drops(&b))),
            });
        }
        Ok(DutCost::default())
    }

    /// Stop everything, clients first.
    pub fn stop(mut self) {
        for c in &mut self.clients {
            c.stop(Duration::from_secs(5));
        }
        if let Some(g) = self.vnicd.as_mut() {
            g.stop(Duration::from_secs(10));
        }
        if let Some(t) = self.testpmd.take() {
            t.quit();
        }
        self.ovs.take();
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MrrRow {
    pub size: String,
    /// Mean frame length (bytes in the mbuf).
    pub mean_bytes: f64,
    /// The generator's send attempts per second (with the DUT refusing, far above what it
    /// can take).
    pub offered_mpps: f64,
    /// What the DUT's port took from the generator.
    pub sent_mpps: f64,
    /// Share of the attempts the DUT's port refused (back-pressure).
    pub refused_share: f64,
    /// Frames the DUT took and never returned.
    pub dut_lost: u64,
    /// The DUT's own drop counters over the trial (`None`: not read).
    pub dut_drops: Option<Drops>,
    /// The host's mode around the trial.
    pub host: vnic_bench::gen::HostProbe,
    pub mrr_mpps: f64,
    /// Gbit/s on a wire (frames + 24 bytes of FCS, preamble and gap).
    pub gbps: f64,
    pub loss_ratio: f64,
    pub cycles_per_packet: Option<f64>,
    pub idle_share: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchRow {
    pub size: String,
    pub ndr_mpps: f64,
    pub pdr_mpps: f64,
    /// The NDR equals the highest rate tried: the generator, not the DUT, was the limit.
    pub at_max: bool,
    pub max_mpps: f64,
    pub result: SearchResult,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatRow {
    /// Share of the reference rate.
    pub share: f64,
    /// "NDR" or "PDR" (when NDR is 0).
    pub of: String,
    pub rate_fps: u64,
    pub loss_ratio: f64,
    pub latency: Latency,
}

/// Everything one round measured on one topology.
#[derive(Debug, Clone, Serialize)]
pub struct TopoRound {
    pub topo: Topo,
    pub round: u32,
    pub mrr: Vec<MrrRow>,
    pub search: Vec<SearchRow>,
    pub latency: Vec<LatRow>,
    pub setup_s: f64,
    pub seconds: f64,
}

fn sock(dir: &Path, i: usize) -> String {
    dir.join(format!("gen{i}.sock")).display().to_string()
}

/// Start the generator and the DUT, run the plan, stop both. `progress(label)` is called
/// before each trial; `check()` aborts between trials.
pub fn run_round(
    env: &TopoEnv,
    topo: Topo,
    round: u32,
    plan: &Plan,
    progress: &mut dyn FnMut(&str),
    check: &dyn Fn() -> Res<()>,
) -> Res<TopoRound> {
    let t0 = Instant::now();
    if topo.family() != Family::Wire {
        return run_pv_round(env, topo, round, plan, progress, check);
    }
    let n = 2;
    for i in 0..n {
        let _ = std::fs::remove_file(sock(&env.dir, i));
    }
    let memif = |role: &str| -> Vec<String> {
        (0..n)
            .map(|i| format!("net_memif{i},role={role},socket={},id=0", sock(&env.dir, i)))
            .collect()
    };
    let (server, client) = (memif("server"), memif("client"));
    // OVS opens two queues per port and a memif server must offer as many (DESIGN §8); the
    // others open one, and a memif server with more queues than its client hands the same
    // frames to both of its rx queues.
    let queues = if topo == Topo::OvsDpdk { 2 } else { 1 };
    let mut gen = Gen::spawn(&env.vnicd, env.gen_cpu, &server, queues, env.huge)?;
    // The memif servers must listen before the clients dial.
    gen.wait_listening(Duration::from_secs(20))?;
    let dut = Dut::start(env, topo, &client)?;
    // The DUT is the memif clients' side here: it stops first.
    serve_round(gen, dut, t0, false, topo, round, plan, progress, check)
}

/// Wait for every link, run the plan, stop both (the generator first when it is the client:
/// its devices detach before the DUT goes). A DUT that dies or links that stay down end the
/// round with an error.
#[allow(clippy::too_many_arguments)]
fn serve_round(
    mut gen: Gen,
    mut dut: Dut,
    t0: Instant,
    gen_first: bool,
    topo: Topo,
    round: u32,
    plan: &Plan,
    progress: &mut dyn FnMut(&str),
    check: &dyn Fn() -> Res<()>,
) -> Res<TopoRound> {
    let end = Instant::now() + Duration::from_secs(30);
    let up = loop {
        match gen.poll_ready(Duration::from_millis(100)) {
            Ok(true) => break Ok(()),
            Ok(false) if !dut.alive() => {
                break Err(format!("{} exited before its links came up", topo.name()).into())
            }
            Ok(false) if Instant::now() > end => {
                break Err(format!("{}: links not up after 30 s", topo.name()).into())
            }
            Ok(false) => {}
            Err(e) => break Err(e),
        }
    };
    let setup_s = t0.elapsed().as_secs_f64();
    let r = up.and_then(|()| measure(&mut gen, &mut dut, topo, round, plan, progress, check));
    if gen_first {
        gen.quit();
        dut.stop();
    } else {
        dut.stop();
        gen.quit();
    }
    let mut r = r?;
    r.setup_s = setup_s;
    r.seconds = t0.elapsed().as_secs_f64();
    Ok(r)
}

/// A PV round: the device under test first (it listens on the wire and the client side, except
/// OVS, which dials the generator's vhost-user socket), then the generator dials in.
fn run_pv_round(
    env: &TopoEnv,
    topo: Topo,
    round: u32,
    plan: &Plan,
    progress: &mut dyn FnMut(&str),
    check: &dyn Fn() -> Res<()>,
) -> Res<TopoRound> {
    let t0 = Instant::now();
    let wire_sock = env.dir.join("pvwire.sock").display().to_string();
    let client_sock = env.dir.join("pvclient.sock").display().to_string();
    for s in [&wire_sock, &client_sock] {
        let _ = std::fs::remove_file(s);
    }
    let ovs = topo.dut() == DutKind::Ovs;
    let vhost = topo.family() == Family::PvVhost;
    let dut = Dut::start(
        env,
        topo,
        &[
            format!("net_memif0,role=server,socket={wire_sock},id=0"),
            client_sock.clone(),
        ],
    )?;
    let gen_ports = [
        format!("net_memif0,role=client,socket={wire_sock},id=0"),
        if vhost {
            // OVS's dpdkvhostuserclient dials: the generator's end listens.
            format!(
                "net_virtio_user0,path={client_sock},queues=1{}",
                if ovs { ",server=1" } else { "" }
            )
        } else {
            format!("net_memif1,role=client,socket={client_sock},socket-abstract=no,id=0")
        },
    ];
    // OVS opens two queues on its memif ports: the generator's clients match them.
    let queues = if ovs { 2 } else { 1 };
    let started = Gen::spawn(&env.vnicd, env.gen_cpu, &gen_ports, queues, env.huge)
        .and_then(|mut g| g.wait_listening(Duration::from_secs(20)).map(|()| g));
    let gen = match started {
        Ok(g) => g,
        Err(e) => {
            dut.stop();
            return Err(e);
        }
    };
    // The generator is the client here: it leaves first.
    serve_round(gen, dut, t0, true, topo, round, plan, progress, check)
}

fn measure(
    gen: &mut Gen,
    dut: &mut Dut,
    topo: Topo,
    round: u32,
    plan: &Plan,
    progress: &mut dyn FnMut(&str),
    check: &dyn Fn() -> Res<()>,
) -> Res<TopoRound> {
    let mut out = TopoRound {
        topo,
        round,
        mrr: Vec::new(),
        search: Vec::new(),
        latency: Vec::new(),
        setup_s: 0.0,
        seconds: 0.0,
    };
    let trial = |gen: &mut Gen,
                 dut: &mut Dut,
                 rate: u64,
                 secs: f64,
                 sizes: &[u16],
                 lat: bool|
     -> Res<TrialResult> {
        check()?;
        let r = gen.trial(rate, secs, plan.warmup, sizes, lat)?;
        if !dut.alive() {
            return Err(format!("{} exited during a trial", topo.name()).into());
        }
        Ok(r)
    };
    let mut mrr_of = std::collections::HashMap::new();
    for (label, sizes) in &plan.sizes {
        progress(&format!("MRR {label}"));
        let m = dut.mark()?;
        let r = trial(gen, dut, 0, plan.mrr_seconds, sizes, false)?;
        let cost = dut.cost(m)?;
        let mean = sizes.iter().map(|&s| s as f64).sum::<f64>() / sizes.len() as f64;
        mrr_of.insert(label.clone(), r.clone());
        out.mrr.push(MrrRow {
            size: label.clone(),
            mean_bytes: mean,
            offered_mpps: r.tx_fps / 1e6,
            sent_mpps: r.sent_fps / 1e6,
            refused_share: if r.offered > 0 {
                r.refused as f64 / r.offered as f64
            } else {
                0.0
            },
            dut_lost: r.dut_lost,
            dut_drops: cost.drops,
            host: r.host,
            mrr_mpps: r.rx_fps / 1e6,
            gbps: r.rx_fps * (mean + 24.0) * 8.0 / 1e9,
            loss_ratio: r.loss_ratio,
            cycles_per_packet: cost.cycles_per_packet,
            idle_share: cost.idle_share,
        });
    }
    for label in &plan.search_sizes {
        let Some((_, sizes)) = plan.sizes.iter().find(|(l, _)| l == label) else {
            continue;
        };
        let Some(m) = mrr_of.get(label) else { continue };
        // Never ask for more than the DUT took at full speed.
        let max = m.sent_fps.min(m.rx_fps * 1.1).max(1000.0);
        let o = SearchOpts {
            max_rate: max,
            precision: plan.precision,
            ..Default::default()
        };
        let res = search::search(&o, |rate, confirm| -> Res<f64> {
            progress(&format!(
                "NDR/PDR {label} {:.2} Mpps{}",
                rate / 1e6,
                if confirm { " (final)" } else { "" }
            ));
            let secs = if confirm {
                plan.final_seconds
            } else {
                plan.short_seconds
            };
            let r = trial(gen, dut, rate as u64, secs, sizes, false)?;
            // A trial the generator could not drive at the asked rate proves nothing about it.
            if r.tx_fps < 0.97 * rate {
                return Ok(1.0);
            }
            Ok(r.loss_ratio)
        })?;
        out.search.push(SearchRow {
            size: label.clone(),
            ndr_mpps: res.ndr / 1e6,
            pdr_mpps: res.pdr / 1e6,
            at_max: res.ndr >= max * 0.999,
            max_mpps: max / 1e6,
            result: res,
        });
    }
    let first = out.search.first().cloned();
    let sizes_of = |l: &str| plan.sizes.iter().find(|(x, _)| x == l).map(|(_, s)| s);
    if let Some((s, sizes)) = first.and_then(|s| sizes_of(&s.size).map(|z| (s, z))) {
        let (base, of) = if s.ndr_mpps > 0.0 {
            (s.ndr_mpps, "NDR")
        } else {
            (s.pdr_mpps, "PDR")
        };
        if base > 0.0 {
            for &share in &plan.latency_at {
                let rate = (base * 1e6 * share) as u64;
                progress(&format!("latency {:.0} % of {of}", share * 100.0));
                let r = trial(gen, dut, rate, plan.latency_seconds, sizes, true)?;
                out.latency.push(LatRow {
                    share,
                    of: of.into(),
                    rate_fps: rate,
                    loss_ratio: r.loss_ratio,
                    latency: r.latency.unwrap_or_default(),
                });
            }
        }
    }
    Ok(out)
}
