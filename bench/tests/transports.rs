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
    cfg: Value,
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
    lab_with(tag, client, |_, _| {})
}

fn lab_with(
    tag: &str,
    client: impl FnOnce(&Lab) -> Value,
    edit: impl FnOnce(&Lab, &mut Value),
) -> Lab {
    let dir = std::env::temp_dir().join(format!("vnic-tr-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut lab = Lab {
        dir,
        run: None,
        cfg: Value::Null,
    };
    let mut j = json!({
        "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 256},
        "data_cores": [{"core": 1, "idle_sleep_us": 20}],
        "control_socket": lab.path("c.sock"), "admin_socket": lab.path("a.sock"),
        "vnics": [{"name": "vnic0", "mac": "02:00:00:00:00:01", "queues": 1,
                   "client": client(&lab),
                   "backing": [{"name": "vf0", "devargs": format!("net_memif0,role=client,socket={},id=0", lab.path("wire.sock")), "port_label": "p0"}]}]
    });
    edit(&lab, &mut j);
    lab.cfg = j.clone();
    let cfg = config::parse(&j.to_string()).unwrap();
    lab.run = Some(Running::start(cfg, Default::default()).expect("vnicd"));
    lab
}

fn wire(lab: &Lab) -> Gen {
    wires(lab, &["wire.sock"])
}

/// The generator with one memif server port per socket: the wires of the backing devices.
fn wires(lab: &Lab, socks: &[&str]) -> Gen {
    let ports: Vec<String> = socks
        .iter()
        .enumerate()
        .map(|(i, s)| format!("net_memif{},role=server,socket={},id=0", 9 - i, lab.path(s)))
        .collect();
    let mut g =
        Gen::spawn(gen_bin(), 0, &ports, 1, eal::host_hugepages_usable()).expect("vnic-gen");
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
    // The exactness is received == offered. How many were offered depends on the host: in a
    // stall of the generator's CPU it drops its backlog rather than burst to catch up (a 20 ms
    // stall cost 372 of the 10 000 once), so only a floor that a working path always clears.
    assert!(r.offered >= 5_000, "{r:?}");
    assert_eq!((r.received, r.lost, r.refused), (r.offered, 0, 0), "{r:?}");
    r.offered
}

/// What each eventfd of process `pid` counts (`eventfd-count` in its fdinfo; nobody reads a
/// virtio-user port's kick and call eventfds in a polling setup, so the counts only grow).
fn eventfd_writes(pid: u32) -> Vec<(String, u64)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let fd = e.file_name().to_string_lossy().into_owned();
        if std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy() == "anon_inode:[eventfd]")
        {
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
            let count = info
                .lines()
                .find_map(|l| l.strip_prefix("eventfd-count:"))
                .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
                .unwrap();
            v.push((fd, count));
        }
    }
    v.sort();
    v
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
    let kicks = eventfd_writes(c.pid().unwrap());
    let n = exact_round_trip(&mut g);
    let after = lab.vnic("vnic0");
    if owner_kind == "vhost" {
        // vnicd polls: it told the frontend not to kick it (NO_NOTIFY), and the frontend, which
        // polls too, never asked to be interrupted. Not one eventfd of the client moved while
        // it forwarded thousands of bursts (it kicked on every one before).
        assert_eq!(v["owner"]["kicks_off"], true, "{v:#}");
        assert!(
            !kicks.is_empty(),
            "virtio-user's kick and call eventfds not found"
        );
        assert_eq!(
            eventfd_writes(c.pid().unwrap()),
            kicks,
            "the virtio-user client's kick and call eventfds moved during traffic"
        );
    }
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

/// vnic0 on two backing devices (a: wire0, priority 10; b: wire1, priority 20), no automatic
/// fail-back. A planned switch under traffic loses nothing; killing the wire peer moves traffic to
/// the standby, where it flows again.
fn failover_case(tag: &str, client_cfg: impl FnOnce(&Lab) -> Value, vdev: impl Fn(&Lab) -> String) {
    let lab = lab_with(tag, client_cfg, |l, j| {
        // The generator sends on both wires, to a different MAC on each: macswap makes half of
        // the replies carry a source MAC other than the vNIC's. The spoof check is shown above.
        j["vnics"][0]["allow_spoofing"] = json!(true);
        j["vnics"][0]["auto_priority_failover"] = json!(false);
        j["vnics"][0]["tx_stall_ms"] = json!(50);
        j["vnics"][0]["backing"] = json!([
            {"name": "a", "devargs": format!("net_memif0,role=client,socket={},id=0", l.path("wire0.sock")), "priority": 10, "port_label": "p0"},
            {"name": "b", "devargs": format!("net_memif1,role=client,socket={},id=0", l.path("wire1.sock")), "priority": 20, "port_label": "p1"}]);
    });
    let mut g = wires(&lab, &["wire0.sock", "wire1.sock"]);
    let mut c = client(vdev(&lab));
    lab.wait("the client to attach", |v| v["state"] == "attached");
    c.wait_links(&[0], Duration::from_secs(20)).unwrap();
    lab.wait("both devices up", |v| {
        v["backing"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["link_up"] == true)
    });
    exact_round_trip(&mut g);

    // Planned: a → b in the middle of a 1 s trial.
    let admin = lab.path("a.sock");
    let switch = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        vnic_control::client::Client::connect(std::path::Path::new(&admin))
            .unwrap()
            .request("FAILOVER", json!({"vnic": "vnic0", "to": "b"}))
            .unwrap()
    });
    let r = g.trial(20_000, 1.0, 0.1, &[64, 570, 1518], false).unwrap();
    switch.join().unwrap();
    assert_eq!(lab.vnic("vnic0")["active_backing"], "b");
    assert_eq!(
        (r.received, r.lost),
        (r.offered, 0),
        "planned switch loses nothing: {r:?}"
    );
    g.quit();

    // Unplanned: the wire peer of b is killed (and a's comes back alone): traffic resumes on a.
    let mut ga = wires(&lab, &["wire0.sock"]);
    let t = lab
        .run()
        .wait_for("vnic0", "a failover to a", Duration::from_secs(20), |v| {
            v["active_backing"] == "a" && v["link_up"] == true
        });
    eprintln!("failed over to a {t:?} after b's peer went");
    let r = ga.trial(20_000, 0.5, 0.1, &[64], false).unwrap();
    assert_eq!((r.received, r.lost), (r.offered, 0), "{r:?}");
    assert_eq!(
        lab.vnic("vnic0")["state"],
        "attached",
        "the client never noticed"
    );
    ga.quit();
    drop(c);
}

#[test]
fn vhost_user_failover_planned_loses_nothing_and_unplanned_resumes() {
    failover_case(
        "fo-vhost",
        |l| json!({"transport": "vhost-user", "socket": l.path("vnic0.vhost")}),
        |l| format!("net_virtio_user0,path={},queues=1", l.path("vnic0.vhost")),
    );
}

#[test]
fn memif_failover_planned_loses_nothing_and_unplanned_resumes() {
    failover_case(
        "fo-memif",
        |l| json!({"transport": "memif", "socket": l.path("vnic0.memif")}),
        |l| {
            format!(
                "net_memif0,role=client,socket={},socket-abstract=no,id=0",
                l.path("vnic0.memif")
            )
        },
    );
}

/// `mode: client`: vnicd dials the frontend's socket (testpmd's virtio-user in server mode, as
/// QEMU with `server=on`), and dials again when a restarted frontend comes back.
#[test]
fn vhost_client_mode_redials_a_restarted_frontend() {
    let lab = lab(
        "vhost-cl",
        |l| json!({"transport": "vhost-user", "socket": l.path("qemu.vhost"), "mode": "client"}),
    );
    let vdev = format!(
        "net_virtio_user0,path={},queues=1,server=1",
        lab.path("qemu.vhost")
    );
    let mut g = wire(&lab);
    for round in 0..2 {
        // A frontend killed with -9 leaves its socket file; QEMU removes a stale one, testpmd
        // does not.
        let _ = std::fs::remove_file(lab.path("qemu.vhost"));
        let c = client(vdev.clone());
        let v = lab.wait("vnicd to dial the frontend", |v| v["state"] == "attached");
        assert_eq!(v["owner"]["mode"], "client", "{v:#}");
        exact_round_trip(&mut g);
        let pid = c.pid().unwrap();
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        drop(c);
        lab.wait("the vNIC to detach", |v| v["state"] == "detached");
        eprintln!("round {round}: frontend killed, vNIC detached");
    }
    g.quit();
}

/// Clients that must be refused, each with the reason, and the vNIC's client undisturbed.
#[test]
fn a_second_memif_client_and_a_frontend_with_too_many_queues_are_refused() {
    let lab = lab_with(
        "refuse",
        |l| json!({"transport": "memif", "socket": l.path("vnic0.memif")}),
        |l, j| {
            j["vnics"].as_array_mut().unwrap().push(json!({
                "name": "vnic1", "mac": "02:00:00:00:00:02", "queues": 1,
                "client": {"transport": "vhost-user", "socket": l.path("vnic1.vhost")},
                "backing": [{"name": "vf1", "devargs": "net_null1", "port_label": "p0"}]}));
        },
    );
    let mut g = wire(&lab);
    let memif = format!(
        "net_memif0,role=client,socket={},socket-abstract=no,id=0",
        lab.path("vnic0.memif")
    );
    let mut first = client(memif.clone());
    lab.wait("the first client to attach", |v| v["state"] == "attached");
    first.wait_links(&[0], Duration::from_secs(20)).unwrap();

    // A second memif client with the same id: the server refuses it; its link never comes up.
    let mut second = client(memif);
    std::thread::sleep(Duration::from_millis(500)); // no event to wait for: the refusal is silence
    assert!(
        !second.link_up(0).unwrap(),
        "a second client must not connect"
    );
    exact_round_trip(&mut g);

    // A frontend that sets up 2 queue pairs on a 1-queue vNIC: refused, with the reason.
    let mut o = TestpmdOpts::io(
        1,
        0,
        vec![format!(
            "net_virtio_user1,path={},queues=2",
            lab.path("vnic1.vhost")
        )],
        eal::host_hugepages_usable(),
        "loop",
    );
    o.eal_extra.push("--single-file-segments".into());
    o.extra.extend(["--rxq=2".into(), "--txq=2".into()]);
    let _big = Testpmd::spawn(&o).expect("testpmd");
    let v = lab.run().vnic("vnic1");
    let end = Instant::now() + Duration::from_secs(20);
    let mut v = v;
    while v["client_error"].is_null() {
        assert!(Instant::now() < end, "no refusal recorded: {v:#}");
        std::thread::sleep(Duration::from_millis(20));
        v = lab.run().vnic("vnic1");
    }
    assert_eq!(
        v["client_error"],
        "the vhost frontend set up 2 queue pairs; the vNIC has 1"
    );
    assert_eq!(v["state"], "detached");
    exact_round_trip(&mut g);
    drop(second);
    g.quit();
}

/// Reload changes a vNIC's transport shm → vhost-user → memif (its client side is re-created)
/// while another vNIC, served over memif to a testpmd, carries traffic: nothing lost there.
#[test]
fn reload_changes_a_transport_while_another_vnic_carries_traffic_without_loss() {
    let mut lab = lab_with(
        "reload",
        |l| json!({"transport": "memif", "socket": l.path("vnic0.memif")}),
        |_, j| {
            j["vnics"].as_array_mut().unwrap().push(json!({
                "name": "vnic2", "mac": "02:00:00:00:00:03", "queues": 1,
                "backing": [{"name": "vf2", "devargs": "net_null2", "port_label": "p0"}]}));
        },
    );
    let mut g = wire(&lab);
    let mut c = client(format!(
        "net_memif0,role=client,socket={},socket-abstract=no,id=0",
        lab.path("vnic0.memif")
    ));
    lab.wait("the client to attach", |v| v["state"] == "attached");
    c.wait_links(&[0], Duration::from_secs(20)).unwrap();
    assert_eq!(lab.run().vnic("vnic2")["transport"], "shm");

    let steps = [
        json!({"transport": "vhost-user", "socket": lab.path("vnic2.vhost")}),
        json!({"transport": "memif", "socket": lab.path("vnic2.memif"), "id": 3}),
    ];
    let mut cfgs = Vec::new();
    for (i, st) in steps.iter().enumerate() {
        lab.cfg["vnics"][1]["client"] = st.clone();
        let p = lab.dir.join(format!("reload{i}.json"));
        std::fs::write(&p, lab.cfg.to_string()).unwrap();
        cfgs.push(p);
    }
    let admin = lab.path("a.sock");
    let reloads = std::thread::spawn(move || {
        let mut out = Vec::new();
        for p in cfgs {
            std::thread::sleep(Duration::from_millis(300));
            let r = vnic_control::client::Client::connect(std::path::Path::new(&admin))
                .unwrap()
                .request("RELOAD", json!({"path": p}));
            out.push(r.map_err(|e| e.to_string()));
        }
        out
    });
    let r = g.trial(20_000, 1.2, 0.1, &[64, 570, 1518], false).unwrap();
    for r in reloads.join().unwrap() {
        let r = r.unwrap();
        assert!(
            r.to_string()
                .contains("recreate vNIC vnic2 (client changed)"),
            "{r}"
        );
    }
    assert_eq!(
        (r.received, r.lost),
        (r.offered, 0),
        "vnic0 lost nothing: {r:?}"
    );
    let v2 = lab.run().vnic("vnic2");
    assert_eq!(v2["transport"], "memif");
    assert_eq!(v2["client_error"], Value::Null, "{v2:#}");
    assert!(std::fs::symlink_metadata(lab.path("vnic2.memif")).is_ok());
    assert!(
        std::fs::symlink_metadata(lab.path("vnic2.vhost")).is_err(),
        "the vhost socket went with the vhost client side"
    );
    g.quit();
    drop(c);
}
