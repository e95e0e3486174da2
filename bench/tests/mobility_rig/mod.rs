//! The mobility tests' rig: a Linux bridge with VFs (veth pairs for `net_af_packet` ports), a
//! peer namespace, vnicd appliances under the harness, and `vnicctl`.
#![allow(dead_code)] // each test file uses its part
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use vnic_bench::procs::Guard;
use vnic_bench::vnicd::{self, Output};

pub fn bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_vnic-gen")).with_file_name(name)
}

pub fn sh(args: &[&str]) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The switch and its ports; removed on drop.
pub struct Net {
    pub id: u32,
    pub br: String,
    pub ns: String,
    links: Vec<String>,
}

impl Net {
    pub fn new() -> Net {
        let id = std::process::id() % 10000;
        let n = Net {
            id,
            br: format!("vbr{id}"),
            ns: format!("vnp{id}"),
            links: Vec::new(),
        };
        n.cleanup();
        let mut n = n;
        sh(&["ip", "link", "add", &n.br, "type", "bridge"]);
        sh(&["ip", "link", "set", &n.br, "up"]);
        sh(&["ip", "netns", "add", &n.ns]);
        n.links.push(n.br.clone());
        n
    }
    /// A VF on the switch: a veth pair, one end a bridge port, the other for a
    /// `net_af_packet` port (it stays when vnicd closes the port, as a VF on its physical port).
    /// Returns (the end vnicd uses, the bridge port).
    pub fn vf(&mut self, tag: &str) -> (String, String) {
        let (ours, port) = (format!("vf{}{tag}", self.id), format!("vb{}{tag}", self.id));
        sh(&[
            "ip", "link", "add", &ours, "type", "veth", "peer", "name", &port,
        ]);
        sh(&["ip", "link", "set", &port, "master", &self.br, "up"]);
        sh(&["ip", "link", "set", &ours, "up"]);
        self.links.push(ours.clone());
        (ours, port)
    }
    /// A veth whose far end is in the peer's namespace: (inside, on the bridge).
    pub fn peer_port(&mut self, tag: &str) -> String {
        let (inside, out) = (format!("vp{}{tag}", self.id), format!("vq{}{tag}", self.id));
        sh(&[
            "ip", "link", "add", &out, "type", "veth", "peer", "name", &inside,
        ]);
        sh(&["ip", "link", "set", &inside, "netns", &self.ns]);
        sh(&["ip", "link", "set", &out, "master", &self.br, "up"]);
        sh(&[
            "ip", "netns", "exec", &self.ns, "ip", "link", "set", &inside, "up",
        ]);
        self.links.push(out);
        inside
    }
    /// The bridge port the switch has learned `mac` on.
    pub fn fdb_port(&self, mac: &str) -> Option<String> {
        let o = Command::new("bridge")
            .args(["fdb", "show", "br", &self.br])
            .output()
            .unwrap();
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

/// One appliance.
pub struct Appliance {
    pub dir: PathBuf,
    pub vd: Guard,
    tag: &'static str,
    out: Option<(
        std::thread::JoinHandle<String>,
        std::thread::JoinHandle<String>,
    )>,
}

impl Appliance {
    pub fn start(dir: &Path, tag: &'static str, vnics: Value, mobility: Value) -> Appliance {
        let id = std::process::id() % 10000;
        let cfg = json!({
            "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 256, "file_prefix": format!("mv{tag}{id}")},
            "data_cores": [{"core": 1, "idle_sleep_us": 50}],
            "control_socket": dir.join(format!("{tag}-ctl.sock")),
            "admin_socket": dir.join(format!("{tag}-adm.sock")),
            "heartbeat_timeout_ms": 5000,
            "vnics": vnics,
            "mobility": mobility,
        });
        let mut vd = vnicd::spawn(
            &bin("vnicd"),
            &dir.join(format!("{tag}.json")),
            &cfg,
            &["--json-summary"],
            true,
        )
        .unwrap();
        // Read its output all along (a full pipe would stall it).
        let out = Some(vd.collect_output());
        let adm = dir.join(format!("{tag}-adm.sock"));
        vnicd::wait_for(&adm, &mut vd, "vnicd up", Duration::from_secs(20), |_| true).unwrap();
        Appliance {
            dir: dir.to_path_buf(),
            vd,
            tag,
            out,
        }
    }
    pub fn adm(&self) -> PathBuf {
        self.dir.join(format!("{}-adm.sock", self.tag))
    }
    pub fn ctl(&self) -> PathBuf {
        self.dir.join(format!("{}-ctl.sock", self.tag))
    }
    pub fn status(&self) -> Value {
        vnicd::status(&self.adm()).unwrap()
    }
    pub fn vnic(&self, name: &str) -> Option<Value> {
        self.status()["vnics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
    }
    pub fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) {
        let adm = self.adm();
        vnicd::wait_for(&adm, &mut self.vd, what, Duration::from_secs(20), pred).unwrap();
    }
    pub fn client(&self, vnic: &str, extra: &[&str]) -> Guard {
        vnicd::client(
            &bin("vnicd"),
            "reflect",
            vnic,
            &self.ctl(),
            0,
            extra,
            Output::ShowErrors,
        )
        .unwrap()
    }
    /// Stop it; mbufs not back in their pools at its shutdown (must be 0).
    pub fn finish(mut self) -> u64 {
        self.vd.signal(15); // SIGTERM: a clean shutdown with its summary
        let st = self.vd.wait_timeout(Duration::from_secs(20));
        assert!(
            st.is_some_and(|s| s.success()),
            "vnicd {}: {st:?}",
            self.tag
        );
        let (o, e) = self.out.take().unwrap();
        let (out, err) = (o.join().unwrap(), e.join().unwrap());
        let s = vnicd::summary(&out).unwrap_or_else(|x| panic!("{x}: {err}"));
        s["shutdown"]["pools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[2].as_u64().unwrap())
            .sum()
    }
}

pub fn vnic_cfg(name: &str, mac: &str, vf: &str, n: u32) -> Value {
    json!({"name": name, "mac": mac, "ipv4": ["10.77.0.1"],
           "backing": [{"name": format!("{name}-vf"), "devargs": format!("net_af_packet{n},iface={vf}"),
                        "port_label": "lan", "program_mac": false}]})
}

pub fn attached(st: &Value, vnic: &str) -> bool {
    st["vnics"].as_array().is_some_and(|a| {
        a.iter()
            .any(|v| v["name"] == vnic && v["state"] == "attached")
    })
}

pub fn vnicctl(adm: &Path, args: &[&str]) -> (i32, String) {
    let o = Command::new(bin("vnicctl"))
        .arg("--socket")
        .arg(adm)
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}
