//! Client transports with unmodified DPDK applications as clients: `dpdk-testpmd` on
//! `net_virtio_user` (vhost-user) and on `net_memif` (memif client), in macswap mode, behind a
//! wire whose peer is the harness's generator. Every frame the generator sends through the vNIC
//! must come back (exact counts), the client's coming and going attaches and detaches the vNIC,
//! and the vNIC's pool returns to where it was.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vnic_bench::gen::Gen;
use vnic_bench::testpmd::{Testpmd, TestpmdOpts};
use vnic_control::config;
use vnic_control::runner::Running;
use vnic_dataplane::eal;

fn gen_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_vnic-gen"))
}

struct Lab {
    dir: PathBuf,
    run: Option<Running>,
}

impl Lab {
    fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }
    fn run(&self) -> &Running {
        self.run.as_ref().unwrap()
    }
    fn vnic(&self, name: &str) -> Value {
        self.run().vnic(name)
    }
    /// Poll the vNIC's status until `f` holds (deadline 20 s).
    fn wait(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.vnic("vnic0");
            if f(&v) {
                return v;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}: {v:#}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// vnic0 on one memif backing device to the generator's wire port; its client side as `client`
/// says. Its MAC is the one testpmd's macswap puts as source on the way back.
fn lab(tag: &str, client: impl FnOnce(&Lab) -> Value) -> Lab {
    let dir = std::env::temp_dir().join(format!("vnic-tr-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut lab = Lab { dir, run: None };
    let j = json!({
        "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 256},
        "data_cores": [{"core": 1, "idle_sleep_us": 20}],
        "control_socket": lab.path("c.sock"), "admin_socket": lab.path("a.sock"),
        "vnics": [{"name": "vnic0", "mac": "02:00:00:00:00:01", "queues": 1,
                   "client": client(&lab),
                   "backing": [{"name": "vf0", "devargs": format!("net_memif0,role=client,socket={},id=0", lab.path("wire.sock")), "port_label": "p0"}]}]
    });
    let cfg = config::parse(&j.to_string()).unwrap();
    lab.run = Some(Running::start(cfg, Default::default()).expect("vnicd"));
    lab
}

fn wire(lab: &Lab) -> Gen {
    let mut g = Gen::spawn(
        gen_bin(),
        0,
        &[format!(
            "net_memif9,role=server,socket={},id=0",
            lab.path("wire.sock")
        )],
        1,
        eal::host_hugepages_usable(),
    )
    .expect("vnic-gen");
    g.wait_listening(Duration::from_secs(20)).unwrap();
    g.wait_ready(Duration::from_secs(30)).unwrap();
    g
}

/// An unmodified testpmd on one client port, swapping MACs: what it returns carries the vNIC's
/// own MAC as source (the spoof check passes) and goes back out of the wire.
fn client(vdev: String) -> Testpmd {
    let virtio = vdev.starts_with("net_virtio_user");
    let mut o = TestpmdOpts::io(1, 0, vec![vdev], eal::host_hugepages_usable(), "loop");
    o.forward_mode = "macswap".into();
    if virtio {
        o.eal_extra.push("--single-file-segments".into());
    }
    let mut p = Testpmd::spawn(&o).expect("testpmd client");
    p.cmd("start").unwrap();
    p
}

/// N frames through the vNIC and back: exactly N received, none lost.
fn exact_round_trip(g: &mut Gen) -> u64 {
    let r = g.trial(20_000, 0.5, 0.1, &[64, 570, 1518], false).unwrap();
    assert!(r.offered >= 9_900, "{r:?}");
    assert_eq!((r.received, r.lost, r.refused), (r.offered, 0, 0), "{r:?}");
    r.offered
}

fn in_use(v: &Value) -> u64 {
    v["pool_in_use"].as_u64().unwrap()
}

fn transport_case(lab: Lab, vdev: String, owner_kind: &str) {
    let idle = lab.wait("the client side to be open", |v| {
        v["client_error"].is_null()
    });
    assert_eq!(idle["state"], "detached");
    let base = in_use(&idle);
    let mut g = wire(&lab);
    let mut c = client(vdev.clone());
    let v = lab.wait("the client to attach", |v| v["state"] == "attached");
    assert_eq!(v["owner"]["kind"], owner_kind, "{v:#}");
    c.wait_links(&[0], Duration::from_secs(20)).unwrap();
    let before = lab.vnic("vnic0");
    let n = exact_round_trip(&mut g);
    let after = lab.vnic("vnic0");
    let d = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    // Warm-up frames count in the vNIC's counters too: at least N each way, and none dropped.
    assert!(d("rx_packets") >= n && d("tx_packets") >= n, "{after:#}");
    assert_eq!(
        (d("rx_drops"), d("tx_drops"), d("spoof_drops")),
        (0, 0, 0),
        "{after:#}"
    );
    let ps = c.port_stats().unwrap();
    assert_eq!(
        ps[0].rx_packets, ps[0].tx_packets,
        "testpmd returned all it got"
    );

    // The client is killed: detached, every mbuf back.
    let pid = c.pid().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    drop(c);
    lab.wait("the vNIC to detach", |v| v["state"] == "detached");
    let v = lab.wait("the pool to return to its level", |v| in_use(v) == base);
    assert_eq!(v["owner"], Value::Null);

    // A new client attaches and forwards.
    let _c2 = client(vdev);
    lab.wait("the new client to attach", |v| v["state"] == "attached");
    exact_round_trip(&mut g);
    g.quit();
}

#[test]
fn a_testpmd_on_virtio_user_is_the_client_of_a_vhost_user_vnic() {
    let lab = lab(
        "vhost",
        |l| json!({"transport": "vhost-user", "socket": l.path("vnic0.vhost")}),
    );
    let sock = lab.path("vnic0.vhost");
    transport_case(
        lab,
        format!("net_virtio_user0,path={sock},queues=1"),
        "vhost",
    );
}

#[test]
fn a_testpmd_on_net_memif_is_the_client_of_a_memif_vnic() {
    let lab = lab(
        "memif",
        |l| json!({"transport": "memif", "socket": l.path("vnic0.memif")}),
    );
    let sock = lab.path("vnic0.memif");
    transport_case(
        lab,
        format!("net_memif0,role=client,socket={sock},socket-abstract=no,id=0"),
        "memif",
    );
}
