//! Mobility between two real appliances: two vnicd processes on this machine (own file prefixes,
//! sockets; data cores that back off on the shared CPU), their backing devices `net_tap` ports
//! enslaved to one Linux bridge (a real learning switch), and a peer in a network namespace on
//! that bridge (`vnic-gen` on `net_af_packet`) sending a stream to each vNIC and counting what
//! comes back, per vNIC.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use vnic_bench::gen::{Gen, GenPlace, TrialResult};
use vnic_bench::procs::Guard;
use vnic_bench::vnicd::{self, Output};

const MV: &str = "02:00:00:00:a0:01";
const BYA: &str = "02:00:00:00:a0:02";
const BYB: &str = "02:00:00:00:b0:02";

fn bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_vnic-gen")).with_file_name(name)
}

fn sh(args: &[&str]) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The switch and its ports; removed on drop.
struct Net {
    id: u32,
    br: String,
    ns: String,
    links: Vec<String>,
}

impl Net {
    fn new() -> Net {
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
    /// A persistent tap on the bridge, for a `net_tap` port to attach to (it stays on the
    /// bridge when the port closes, like a VF on its physical port).
    fn tap(&mut self, tag: &str) -> String {
        let t = format!("vt{}{tag}", self.id);
        sh(&[
            "ip",
            "tuntap",
            "add",
            "dev",
            &t,
            "mode",
            "tap",
            "multi_queue",
        ]);
        sh(&["ip", "link", "set", &t, "master", &self.br, "up"]);
        self.links.push(t.clone());
        t
    }
    /// A veth whose far end is in the peer's namespace: (inside, on the bridge).
    fn peer_port(&mut self, tag: &str) -> String {
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
    fn fdb_port(&self, mac: &str) -> Option<String> {
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
struct Appliance {
    dir: PathBuf,
    vd: Guard,
    tag: &'static str,
    out: Option<(
        std::thread::JoinHandle<String>,
        std::thread::JoinHandle<String>,
    )>,
}

impl Appliance {
    fn start(dir: &Path, tag: &'static str, vnics: Value, mobility: Value) -> Appliance {
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
    fn adm(&self) -> PathBuf {
        self.dir.join(format!("{}-adm.sock", self.tag))
    }
    fn ctl(&self) -> PathBuf {
        self.dir.join(format!("{}-ctl.sock", self.tag))
    }
    fn status(&self) -> Value {
        vnicd::status(&self.adm()).unwrap()
    }
    fn vnic(&self, name: &str) -> Option<Value> {
        self.status()["vnics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
    }
    fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) {
        let adm = self.adm();
        vnicd::wait_for(&adm, &mut self.vd, what, Duration::from_secs(20), pred).unwrap();
    }
    fn client(&self, vnic: &str, extra: &[&str]) -> Guard {
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
    fn finish(mut self) -> u64 {
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

fn vnic_cfg(name: &str, mac: &str, tap: &str, n: u32) -> Value {
    json!({"name": name, "mac": mac, "ipv4": ["10.77.0.1"],
           "backing": [{"name": format!("{name}-vf"), "devargs": format!("net_tap{n},iface={tap}"),
                        "port_label": "lan", "program_mac": false}]})
}

fn attached(st: &Value, vnic: &str) -> bool {
    st["vnics"].as_array().is_some_and(|a| {
        a.iter()
            .any(|v| v["name"] == vnic && v["state"] == "attached")
    })
}

fn vnicctl(adm: &Path, args: &[&str]) -> (i32, String) {
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

/// The rig: A with the moving vNIC and a bystander, B with a bystander and a spare on the same
/// port label, the peer with one stream per vNIC.
struct Rig {
    net: Net,
    a: Appliance,
    b: Appliance,
    gen: Gen,
    clients: Vec<Guard>,
    _dir: PathBuf,
}

fn rig(arrive_timeout_ms: u32, mv_client_extra: &[&str]) -> Rig {
    let dir = std::env::temp_dir().join(format!("vnic-mob-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut net = Net::new();
    let (ta_mv, ta_by, tb_by, tb_sp) = (net.tap("am"), net.tap("ab"), net.tap("bb"), net.tap("bs"));
    let ports = [net.peer_port("m"), net.peer_port("a"), net.peer_port("b")];
    let a = Appliance::start(
        &dir,
        "a",
        json!([
            vnic_cfg("mv0", MV, &ta_mv, 0),
            vnic_cfg("bya", BYA, &ta_by, 1)
        ]),
        json!({}),
    );
    let b = Appliance::start(
        &dir,
        "b",
        json!([vnic_cfg("byb", BYB, &tb_by, 0)]),
        json!({"spares": [{"name": "spare0", "devargs": format!("net_tap1,iface={tb_sp}"),
                           "port_label": "lan", "program_mac": false}],
               "arrive_timeout_ms": arrive_timeout_ms}),
    );
    let mut clients = vec![
        a.client("mv0", mv_client_extra),
        a.client("bya", &[]),
        b.client("byb", &[]),
    ];
    let mut a = a;
    let mut b = b;
    a.wait("A's clients attached", |st| {
        attached(st, "mv0") && attached(st, "bya")
    });
    b.wait("B's client attached", |st| attached(st, "byb"));
    for c in &mut clients {
        assert!(c.running());
    }
    let gen = Gen::spawn_at(
        &bin("vnicd"),
        0,
        &ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("net_af_packet{i},iface={p}"))
            .collect::<Vec<_>>(),
        1,
        false,
        &GenPlace {
            netns: Some(net.ns.clone()),
            dst: vec![MV.into(), BYA.into(), BYB.into()],
        },
    )
    .unwrap();
    let mut gen = gen;
    gen.wait_listening(Duration::from_secs(20)).unwrap();
    gen.wait_ready(Duration::from_secs(20)).unwrap();
    // The switch learns where every vNIC is; then every stream is exact.
    let r = gen.trial(3000, 0.5, 0.3, &[64], false).unwrap();
    assert_eq!(r.lost, 0, "before any move every stream is exact: {r:?}");
    Rig {
        net,
        a,
        b,
        gen,
        clients,
        _dir: dir,
    }
}

/// Run a trial on a thread while `during` runs here.
fn with_traffic<T>(
    gen: &mut Gen,
    rate: u64,
    secs: f64,
    during: impl FnOnce() -> T,
) -> (TrialResult, T) {
    std::thread::scope(|s| {
        let h = s.spawn(|| gen.trial(rate, secs, 0.0, &[64], false).unwrap());
        let t = during();
        (h.join().unwrap(), t)
    })
}

#[test]
fn a_shm_client_moves_between_appliances_under_traffic() {
    let mut r = rig(10_000, &[]);
    let before = r.a.vnic("mv0").unwrap();
    let old_pid = before["client_pid"].as_i64().unwrap();
    let adm_a = r.a.adm();
    let adm_b = r.b.adm();
    let (res, (code, out)) = with_traffic(&mut r.gen, 30_000, 4.0, || {
        std::thread::sleep(Duration::from_millis(1500));
        vnicctl(&adm_a, &["migrate", "mv0", "--to", adm_b.to_str().unwrap()])
    });
    eprintln!("{out}");
    assert_eq!(code, 0, "vnicctl migrate: {out}");
    for p in ["prepare", "client-moving", "cutover", "done", "moved"] {
        assert!(out.contains(p), "{p} missing in: {out}");
    }
    let (mv, bya, byb) = (&res.ports[0], &res.ports[1], &res.ports[2]);
    eprintln!(
        "moving vNIC: offered {} received {} lost {} longest gap {:.3} ms",
        mv.offered,
        mv.received,
        mv.lost,
        mv.max_gap_us / 1e3
    );
    // The vNICs that did not move lost nothing, on either appliance.
    assert_eq!((bya.lost, byb.lost), (0, 0), "{res:?}");
    assert!(bya.offered > 30_000 && byb.offered > 30_000, "{res:?}");
    // The moving one's stream went on on B: most of it came back.
    assert!(mv.received * 10 > mv.offered * 9, "{mv:?}");
    // The switch relearned where the MAC lives: on B's device.
    let spare = format!("vt{}bs", r.net.id);
    assert_eq!(r.net.fdb_port(MV).as_deref(), Some(spare.as_str()));
    // B runs it with the successor attached, counters continued from A's.
    let v = r.b.vnic("mv0").expect("mv0 on B");
    assert_eq!(v["state"], "attached", "{v}");
    assert_ne!(v["client_pid"].as_i64().unwrap(), old_pid);
    assert_eq!(v["active_backing"], "spare0");
    assert!(
        v["rx_packets"].as_u64().unwrap() > before["rx_packets"].as_u64().unwrap(),
        "counters continue: {v}"
    );
    assert_eq!(v["migration"]["phase"], "done");
    // A released it all: not a vNIC there any more, its pool was full when freed, and it is
    // listed as migrated out.
    let st = r.a.status();
    assert!(r.a.vnic("mv0").is_none());
    assert_eq!(st["migrated_out"][0]["vnic"], "mv0", "{st}");
    let m = vnicd::admin(&adm_a, "MIGRATION", json!({"vnic": "mv0"})).unwrap();
    assert_eq!(m["released_pool_in_use"], 0, "{m}");
    assert_eq!(m["phase"], "done");
    let phases: Vec<&str> = m["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["prepare", "client-moving", "cutover", "done"]);
    // The old client process left by itself, successfully.
    let old = &mut r.clients[0];
    let st = old
        .wait_timeout(Duration::from_secs(5))
        .expect("old client exits");
    assert!(st.success(), "{st:?}");
    r.gen.quit();
    for mut c in r.clients.drain(..) {
        c.stop(Duration::from_secs(2));
    }
    assert_eq!(r.a.finish(), 0, "A leaked mbufs");
    assert_eq!(r.b.finish(), 0, "B leaked mbufs");
}
