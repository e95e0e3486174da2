//! A rig for moving vNICs between appliances on one machine (the mobility tests and the
//! `migrate` scenario): a Linux bridge (a real learning switch) with VFs on it (veth pairs for
//! `net_af_packet` ports: the netdev stays when vnicd closes the port, as a VF on its physical
//! port), a peer network namespace, vnicd appliances with their own file prefixes and sockets,
//! and `vnicctl`.
//!
//! Not `net_tap` VFs: DPDK 22.11's tap PMD gives every secondary process (each shm client) copies
//! of a tap's queue descriptors and never closes them, so a tap port opened again while such a
//! client lives has dead queues the kernel steers flows into.
use crate::procs::Guard;
use crate::vnicd::{self, Output, Res};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Run a command; its failure (with its stderr) is an error.
pub fn sh(args: &[&str]) -> Res<()> {
    let (prog, rest) = args.split_first().ok_or("sh: no command")?;
    let o = Command::new(prog).args(rest).output()?;
    if !o.status.success() {
        return Err(format!("{args:?}: {}", String::from_utf8_lossy(&o.stderr).trim()).into());
    }
    Ok(())
}

/// The switch, its ports and the peer's namespace; removed on drop.
pub struct Net {
    pub id: u32,
    pub br: String,
    pub ns: String,
    links: Vec<String>,
}

impl Net {
    /// A bridge `vbr<id>` and a namespace `vnp<id>` (names fit IFNAMSIZ for ids < 10000).
    pub fn new(id: u32) -> Res<Net> {
        let mut n = Net {
            id,
            br: format!("vbr{id}"),
            ns: format!("vnp{id}"),
            links: Vec::new(),
        };
        n.cleanup();
        sh(&["ip", "link", "add", &n.br, "type", "bridge"])?;
        n.links.push(n.br.clone());
        sh(&["ip", "link", "set", &n.br, "up"])?;
        sh(&["ip", "netns", "add", &n.ns])?;
        Ok(n)
    }
    /// A VF on the switch: (the end vnicd uses, the bridge port).
    pub fn vf(&mut self, tag: &str) -> Res<(String, String)> {
        let (ours, port) = (format!("vf{}{tag}", self.id), format!("vb{}{tag}", self.id));
        sh(&[
            "ip", "link", "add", &ours, "type", "veth", "peer", "name", &port,
        ])?;
        self.links.push(ours.clone());
        sh(&["ip", "link", "set", &port, "master", &self.br, "up"])?;
        sh(&["ip", "link", "set", &ours, "up"])?;
        Ok((ours, port))
    }
    /// [`Net::peer_port`] with an IPv4 address (`10.77.0.1/24`) on the end inside.
    pub fn peer_port_ip(&mut self, tag: &str, cidr: &str) -> Res<String> {
        let p = self.peer_port(tag)?;
        sh(&[
            "ip", "netns", "exec", &self.ns, "ip", "addr", "add", cidr, "dev", &p,
        ])?;
        Ok(p)
    }
    /// A veth whose far end is in the peer's namespace; returns the end inside.
    pub fn peer_port(&mut self, tag: &str) -> Res<String> {
        let (inside, out) = (format!("vp{}{tag}", self.id), format!("vq{}{tag}", self.id));
        sh(&[
            "ip", "link", "add", &out, "type", "veth", "peer", "name", &inside,
        ])?;
        self.links.push(out.clone());
        sh(&["ip", "link", "set", &inside, "netns", &self.ns])?;
        sh(&["ip", "link", "set", &out, "master", &self.br, "up"])?;
        sh(&[
            "ip", "netns", "exec", &self.ns, "ip", "link", "set", &inside, "up",
        ])?;
        Ok(inside)
    }
    /// The bridge port the switch has learned `mac` on.
    pub fn fdb_port(&self, mac: &str) -> Option<String> {
        let o = Command::new("bridge")
            .args(["fdb", "show", "br", &self.br])
            .output()
            .ok()?;
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with(mac) && !l.contains("permanent"))
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let i = f.iter().position(|w| *w == "dev")?;
                f.get(i + 1).map(|s| s.to_string())
            })
    }
    fn cleanup(&self) {
        for l in &self.links {
            let _ = Command::new("ip").args(["link", "del", l]).output();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// One vnicd appliance: data core on CPU 1 backing off (the appliances share it), control on
/// CPU 0, its own file prefix `mv<tag><id>` and sockets `<dir>/<tag>-{ctl,adm}.sock`.
pub struct Appliance {
    pub dir: PathBuf,
    pub vd: Guard,
    pub tag: &'static str,
    vnicd: PathBuf,
    out: Option<(
        std::thread::JoinHandle<String>,
        std::thread::JoinHandle<String>,
    )>,
}

impl Appliance {
    pub fn start(
        vnicd_bin: &Path,
        dir: &Path,
        tag: &'static str,
        id: u32,
        vnics: Value,
        mobility: Value,
    ) -> Res<Appliance> {
        let cfg = json!({
            "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 256, "file_prefix": format!("mv{tag}{id}")},
            "data_cores": [{"core": 1, "idle_sleep_us": 50}],
            "control_socket": dir.join(format!("{tag}-ctl.sock")),
            "admin_socket": dir.join(format!("{tag}-adm.sock")),
            "heartbeat_timeout_ms": 5000,
            "stats_interval_ms": 60000,
            "vnics": vnics,
            "mobility": mobility,
        });
        let mut vd = vnicd::spawn(
            vnicd_bin,
            &dir.join(format!("{tag}.json")),
            &cfg,
            &["--json-summary"],
            true,
        )?;
        // Read its output all along (a full pipe would stall it).
        let out = Some(vd.collect_output());
        let adm = dir.join(format!("{tag}-adm.sock"));
        vnicd::wait_for(&adm, &mut vd, "vnicd up", Duration::from_secs(20), |_| true)?;
        Ok(Appliance {
            dir: dir.to_path_buf(),
            vd,
            tag,
            vnicd: vnicd_bin.to_path_buf(),
            out,
        })
    }
    pub fn adm(&self) -> PathBuf {
        self.dir.join(format!("{}-adm.sock", self.tag))
    }
    pub fn ctl(&self) -> PathBuf {
        self.dir.join(format!("{}-ctl.sock", self.tag))
    }
    pub fn status(&self) -> Res<Value> {
        vnicd::status(&self.adm())
    }
    pub fn vnic(&self, name: &str) -> Res<Option<Value>> {
        Ok(self.status()?["vnics"]
            .as_array()
            .and_then(|a| a.iter().find(|v| v["name"] == name))
            .cloned())
    }
    pub fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Res<()> {
        let adm = self.adm();
        vnicd::wait_for(&adm, &mut self.vd, what, Duration::from_secs(20), pred)
    }
    /// A `vnic-client reflect` process on CPU 0.
    pub fn client(&self, vnic: &str, extra: &[&str], out: Output) -> Res<Guard> {
        vnicd::client(&self.vnicd, "reflect", vnic, &self.ctl(), 0, extra, out)
    }
    /// Stop it (SIGTERM: a clean shutdown with its summary); mbufs not back in their pools.
    pub fn finish(mut self) -> Res<u64> {
        self.vd.signal(15);
        let st = self.vd.wait_timeout(Duration::from_secs(20));
        if !st.is_some_and(|s| s.success()) {
            return Err(format!("vnicd {}: {st:?}", self.tag).into());
        }
        let (o, e) = self.out.take().ok_or("output already taken")?;
        let out = o.join().unwrap_or_default();
        let err = e.join().unwrap_or_default();
        let s = vnicd::summary(&out).map_err(|x| format!("{x}: {err}"))?;
        Ok(s["shutdown"]["pools"]
            .as_array()
            .map(|a| a.iter().map(|p| p[2].as_u64().unwrap_or(0)).sum())
            .unwrap_or(0))
    }
}

/// A shm vNIC on one VF (`net_af_packet<n>` on `vf`).
pub fn vnic_cfg(name: &str, mac: &str, vf: &str, n: u32) -> Value {
    json!({"name": name, "mac": mac, "ipv4": ["10.77.0.1"],
           "backing": [{"name": format!("{name}-vf"), "devargs": format!("net_af_packet{n},iface={vf}"),
                        "port_label": "lan", "program_mac": false}]})
}

/// A spare VF (`spare0` on port label `lan`) for `mobility.spares`.
pub fn spare(devargs: &str) -> Value {
    json!({"name": "spare0", "devargs": devargs, "port_label": "lan", "program_mac": false})
}

/// Whether `vnic` is attached in a status.
pub fn attached(st: &Value, vnic: &str) -> bool {
    st["vnics"].as_array().is_some_and(|a| {
        a.iter()
            .any(|v| v["name"] == vnic && v["state"] == "attached")
    })
}

/// `vnicctl --socket ADM ARGS…`: its exit code and its output (stdout, then stderr).
pub fn vnicctl(vnicd_bin: &Path, adm: &Path, args: &[&str]) -> Res<(i32, String)> {
    let o = Command::new(vnicd_bin.with_file_name("vnicctl"))
        .arg("--socket")
        .arg(adm)
        .args(args)
        .output()?;
    Ok((
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    ))
}

/// The moving vNIC and the bystanders of [`ShmScene`].
pub const MV: &str = "02:00:00:00:a0:01";
pub const BYA: &str = "02:00:00:00:a0:02";
pub const BYB: &str = "02:00:00:00:b0:02";

/// A shm vNIC `mv0` ready to move: A has it and a bystander `bya` (and `dup`, which has B's
/// bystander's MAC and no client: B must refuse it); B has a bystander `byb` and a spare on the
/// same port label. A `vnic-client reflect` serves each of mv0, bya, byb, and the peer has one
/// stream per vNIC (ports 0, 1, 2: mv0, bya, byb).
pub struct ShmScene {
    pub net: Net,
    pub a: Appliance,
    pub b: Appliance,
    pub gen: crate::gen::Gen,
    pub clients: Vec<Guard>,
}

impl ShmScene {
    /// Build it in `dir`; mv0's client gets `mv_extra` arguments. Every stream is checked exact
    /// before it is handed over (the switch has learned where every vNIC is).
    pub fn start(
        vnicd_bin: &Path,
        dir: &Path,
        id: u32,
        arrive_timeout_ms: u32,
        mv_extra: &[&str],
        out: Output,
    ) -> Res<ShmScene> {
        let mut net = Net::new(id)?;
        let (ta_mv, ta_by, ta_dup) = (net.vf("am")?.0, net.vf("ab")?.0, net.vf("ad")?.0);
        let (tb_by, tb_sp) = (net.vf("bb")?.0, net.vf("bs")?.0);
        let ports = [
            net.peer_port("m")?,
            net.peer_port("a")?,
            net.peer_port("b")?,
        ];
        let mut a = Appliance::start(
            vnicd_bin,
            dir,
            "a",
            id,
            json!([
                vnic_cfg("mv0", MV, &ta_mv, 0),
                vnic_cfg("bya", BYA, &ta_by, 1),
                vnic_cfg("dup", BYB, &ta_dup, 2)
            ]),
            json!({}),
        )?;
        let mut b = Appliance::start(
            vnicd_bin,
            dir,
            "b",
            id,
            json!([vnic_cfg("byb", BYB, &tb_by, 0)]),
            json!({"spares": [spare(&format!("net_af_packet1,iface={tb_sp}"))],
                   "arrive_timeout_ms": arrive_timeout_ms}),
        )?;
        let clients = vec![
            a.client("mv0", mv_extra, out)?,
            a.client("bya", &[], out)?,
            b.client("byb", &[], out)?,
        ];
        a.wait("A's clients attached", |st| {
            attached(st, "mv0") && attached(st, "bya")
        })?;
        b.wait("B's client attached", |st| attached(st, "byb"))?;
        let mut gen = crate::gen::Gen::spawn_at(
            vnicd_bin,
            0,
            &ports
                .iter()
                .enumerate()
                .map(|(i, p)| format!("net_af_packet{i},iface={p}"))
                .collect::<Vec<_>>(),
            1,
            false,
            &crate::gen::GenPlace {
                netns: Some(net.ns.clone()),
                dst: vec![MV.into(), BYA.into(), BYB.into()],
            },
        )?;
        gen.wait_listening(Duration::from_secs(20))?;
        gen.wait_ready(Duration::from_secs(20))?;
        let r = gen.trial(3000, 0.5, 0.3, &[64], false)?;
        if r.lost != 0 {
            return Err(format!("before any move every stream is exact: {r:?}").into());
        }
        Ok(ShmScene {
            net,
            a,
            b,
            gen,
            clients,
        })
    }
}

/// A with `vnic` (a config entry without devices) on a VF; B with a spare on the same label
/// and `<dir>/b-sockets` for arriving vhost-user and memif vNICs.
pub fn pair(
    vnicd_bin: &Path,
    dir: &Path,
    id: u32,
    net: &mut Net,
    mut vnic: Value,
) -> Res<(Appliance, Appliance)> {
    let (vf_a, vf_b) = (net.vf("a")?.0, net.vf("s")?.0);
    std::fs::create_dir_all(dir.join("b-sockets"))?;
    vnic["backing"] = json!([{"name": "vf", "devargs": format!("net_af_packet0,iface={vf_a}"),
                              "port_label": "lan", "program_mac": false}]);
    let a = Appliance::start(vnicd_bin, dir, "a", id, json!([vnic]), json!({}))?;
    let b = Appliance::start(
        vnicd_bin,
        dir,
        "b",
        id,
        json!([]),
        json!({"spares": [spare(&format!("net_af_packet0,iface={vf_b}"))],
               "socket_dir": dir.join("b-sockets"), "arrive_timeout_ms": 60000}),
    )?;
    Ok((a, b))
}
