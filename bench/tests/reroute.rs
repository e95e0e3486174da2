//! Fast reroute with real faults, with vnicd's control thread held still (ptrace) while the
//! fault happens: the active memif peer killed, the peer stopped (its queue stops draining while
//! the link reads up), the active net_tap's link set down; and a peer stopped only briefly,
//! which the backup bridges without a failover. Traffic must reach the standby's
//! peer while the control thread cannot run; once released, the control thread makes the
//! switch official and the record says who saw the failure. vnicd exits with every mbuf back
//! (it exits non-zero on a leak).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vnic_bench::faults::{hold_thread, thread_state};
use vnic_bench::procs::Guard;
use vnic_bench::testpmd::{Testpmd, TestpmdOpts};
use vnic_bench::vnicd;

fn bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_vnic-gen")).with_file_name(name)
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Fault {
    /// SIGKILL to the active device's memif peer.
    PeerKilled,
    /// SIGSTOP to it: the link stays up, its ring stops draining.
    PeerStopped,
    /// SIGSTOP, then SIGCONT ~50 ms later (a peer off its CPU for a while): the backup carries
    /// the traffic meanwhile, the data core goes back by itself, no failover, nothing lost.
    PeerPaused,
    /// The active device is a net_tap whose interface goes down. DPDK 22.11's net_tap raises no
    /// link-state event for it here (`dpdk-testpmd --print-event intr_lsc` shows none either):
    /// its writes fail at once, so the data core sees it first.
    TapDown,
    /// The active device is a net_vhost whose frontend (a testpmd virtio-user peer) is killed:
    /// the vhost PMD raises the link-state interrupt (~20 ms after the kill here). The data core's
    /// refuse window is off in this case, so that the interrupt path alone is what is tested.
    VhostPeerKilled,
}

fn peer(dir: &Path, i: usize) -> Testpmd {
    vnic_bench::testpmd::memif_reflector(&dir.join(format!("w{i}.sock")), i, true)
        .expect("testpmd peer")
}

fn vnic0(admin: &Path) -> Value {
    vnicd::status(admin).unwrap()["vnics"][0].clone()
}

fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn run(fault: Fault) {
    let dir = std::env::temp_dir().join(format!("vnic-rr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let admin = dir.join("a.sock");
    let tap = format!("rrtap{}", std::process::id() % 100_000);
    let vsock = dir.join("v0.sock");
    let _ = std::fs::remove_file(&vsock);
    let memif_a = matches!(
        fault,
        Fault::PeerKilled | Fault::PeerStopped | Fault::PeerPaused
    );
    let mut pa = memif_a.then(|| peer(&dir, 0));
    let mut pb = peer(&dir, 1);
    let a_dev = match fault {
        Fault::TapDown => format!("net_tap0,iface={tap}"),
        Fault::VhostPeerKilled => format!("net_vhost0,iface={},queues=1", vsock.display()),
        Fault::PeerKilled | Fault::PeerStopped | Fault::PeerPaused => format!(
            "net_memif0,role=client,socket={},id=0",
            dir.join("w0.sock").display()
        ),
    };
    let cfg = json!({
        "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 512, "hugepages": "on",
                "file_prefix": format!("vnicrr{}", std::process::id())},
        "data_cores": [{"core": 1, "idle_sleep_us": 20}],
        "control_socket": dir.join("c.sock"), "admin_socket": admin,
        "stats_interval_ms": 60000, "heartbeat_timeout_ms": 60000,
        "vnics": [{"name": "vnic0", "mac": "02:00:00:00:00:01", "hold_down_ms": 600000,
                   "announce_rounds": 1, "tx_refuse_us": if fault == Fault::VhostPeerKilled { 0 } else { 200 },
                   // A pause must not outlast the stall limit however slow the host is.
                   "tx_stall_ms": if fault == Fault::PeerPaused { 5000 } else { 100 },
                   "backing": [
                       {"name": "a", "devargs": a_dev, "priority": 10, "port_label": "p0"},
                       {"name": "b", "devargs": format!("net_memif1,role=client,socket={},id=0", dir.join("w1.sock").display()),
                        "priority": 20, "port_label": "p1"}]}]
    });
    let vd_bin = bin("vnicd");
    let mut vd: Guard = vnicd::spawn(
        &vd_bin,
        &dir.join("vnicd.json"),
        &cfg,
        &["--json-summary"],
        true,
    )
    .unwrap();
    let (_vd_out, vd_err) = vd.collect_output();
    if fault == Fault::VhostPeerKilled {
        // The frontend dials vnicd's vhost-user socket once it exists.
        let end = Instant::now() + Duration::from_secs(20);
        while !vsock.exists() {
            assert!(Instant::now() < end, "no vhost-user socket");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut o = TestpmdOpts::io(
            0,
            1,
            vec![format!(
                "net_virtio_user0,path={},queues=1",
                vsock.display()
            )],
            true,
            "loop",
        );
        o.eal_extra.push("--single-file-segments".into());
        let mut p = Testpmd::spawn(&o).expect("virtio-user peer");
        p.cmd("start").unwrap();
        pa = Some(p);
    }
    let up = |v: &Value| {
        v["backing"]
            .as_array()
            .is_some_and(|b| b.iter().all(|b| b["link_up"] == true))
    };
    vnicd::wait_for(
        &admin,
        &mut vd,
        "both links up",
        Duration::from_secs(20),
        |s| up(&s["vnics"][0]),
    )
    .unwrap();
    // Whichever link came up first carried the vNIC first (no fail-back: long hold-down).
    if vnic0(&admin)["active_backing"] != "a" {
        vnicd::admin(&admin, "FAILOVER", json!({"vnic": "vnic0", "to": "a"})).unwrap();
    }
    let mut client = vnicd::client(
        &vd_bin,
        "source",
        "vnic0",
        &dir.join("c.sock"),
        1,
        &["--rate", "20000"],
        vnicd::Output::Capture,
    )
    .unwrap();
    let (_, client_err) = client.collect_output();
    vnicd::wait_for(
        &admin,
        &mut vd,
        "the client attached",
        Duration::from_secs(20),
        |s| {
            s["vnics"][0]["state"] == "attached"
                && s["vnics"][0]["tx_packets"].as_u64() > Some(2000)
        },
    )
    .unwrap();
    let failovers = vnic0(&admin)["failover_count"].as_u64().unwrap();
    let b_before = pb.port_stats().unwrap()[0].rx_packets;
    if fault == Fault::PeerPaused {
        let p = pa.as_mut().unwrap();
        let pid = p.pid().unwrap().to_string();
        let signal = |sig: &str| {
            assert!(Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success())
        };
        signal("-STOP");
        // 1000 frames on b (50 ms at 20 kpps): the backup bridges the pause.
        wait_rx(&mut pb, b_before + 1000, "b during the pause");
        signal("-CONT");
        let a_back = p.port_stats().unwrap()[0].rx_packets;
        wait_rx(p, a_back + 2000, "a after the pause");
        let v = vnic0(&admin);
        assert_eq!(v["failover_count"].as_u64(), Some(failovers), "{v}");
        assert_eq!(v["active_backing"], "a", "{v}");
        assert_eq!(v["backing"][0]["state"], "active", "{v}");
        assert!(v["backing"][0]["tx_stalls"].as_u64() >= Some(1), "{v}");
        let (sent, received) =
            vnicd::stop_client(&mut client, client_err, Duration::from_secs(5)).unwrap();
        assert_eq!(received, sent, "frames lost across the pause");
        return stop_all(vd, vd_err, pb, pa, &dir);
    }
    // The control thread (vnicd's main thread) stops; the data core and DPDK's interrupt
    // thread do not.
    let pid = vd.pid().unwrap();
    let held = hold_thread(pid).unwrap();
    assert_eq!(
        thread_state(pid, pid),
        Some('t'),
        "control thread not stopped"
    );
    let injected = unix_us();
    match fault {
        Fault::PeerKilled | Fault::VhostPeerKilled => {
            let p = pa.take().unwrap();
            let pid = p.pid().unwrap().to_string();
            assert!(Command::new("kill")
                .args(["-KILL", &pid])
                .status()
                .unwrap()
                .success());
            drop(p);
        }
        // (A pause returned above.)
        Fault::PeerStopped | Fault::PeerPaused => {
            let p = pa.as_ref().unwrap().pid().unwrap().to_string();
            assert!(Command::new("kill")
                .args(["-STOP", &p])
                .status()
                .unwrap()
                .success());
        }
        Fault::TapDown => {
            let st = Command::new("ip")
                .args(["link", "set", &tap, "down"])
                .status();
            assert!(st.unwrap().success());
        }
    }
    // Traffic reaches b's peer while the control thread cannot run: 2000 frames = 100 ms.
    let end = Instant::now() + Duration::from_secs(10);
    let moved = loop {
        let now = pb.port_stats().unwrap()[0].rx_packets;
        if now >= b_before + 2000 {
            break now - b_before;
        }
        assert!(
            Instant::now() < end,
            "{fault:?}: only {} frames reached b in 10 s with the control thread held",
            now - b_before
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(
        thread_state(pid, pid),
        Some('t'),
        "control thread ran during the test"
    );
    drop(held);
    vnicd::wait_for(
        &admin,
        &mut vd,
        "active on b",
        Duration::from_secs(10),
        |s| s["vnics"][0]["active_backing"] == "b",
    )
    .unwrap();
    let v = vnic0(&admin);
    assert_eq!(v["failover_count"].as_u64(), Some(failovers + 1), "{v}");
    assert_eq!(v["backing"][0]["state"], "failed", "{v}");
    let ls = &v["last_switch"];
    let expect_by = match fault {
        Fault::VhostPeerKilled => "link interrupt",
        Fault::TapDown => "data core (tx refused)",
        // The peer's ring index stood still with frames waiting, long before the ring was full.
        Fault::PeerKilled | Fault::PeerStopped | Fault::PeerPaused => {
            "data core (peer stopped draining)"
        }
    };
    eprintln!("{fault:?}: injected at {injected} us; record {ls}");
    assert_eq!(ls["detected_by"], expect_by, "{ls}");
    assert!(
        ls["reason"].as_str().unwrap().starts_with("failure"),
        "{ls}"
    );
    let failed_at = ls["failed_at_unix_us"].as_u64().unwrap();
    let reroute = ls["reroute_us"].as_u64().unwrap();
    let first = ls["first_frame_us"].as_u64().unwrap();
    let official = ls["official_us"].as_u64().unwrap();
    assert!(first >= reroute && official >= first, "{ls}");
    eprintln!(
        "{fault:?}: {moved} frames on b during the hold; fault -> marked down {} us, -> rerouted {reroute} us, -> first frame on b {first} us, -> official switch {official} us (held)",
        failed_at as i64 - injected as i64
    );
    client.signal(libc::SIGINT);
    client
        .wait_timeout(Duration::from_secs(5))
        .expect("client stops");
    client.child.take();
    let summary = client_err.join().unwrap_or_default();
    eprintln!("client: {}", summary.lines().last().unwrap_or(""));
    if fault == Fault::PeerStopped {
        let p = pa.as_ref().unwrap().pid().unwrap().to_string();
        let _ = Command::new("kill").args(["-CONT", &p]).status();
    }
    stop_all(vd, vd_err, pb, pa, &dir);
}

/// vnicd stops with every mbuf back (it exits non-zero on a leak), then the peers go.
fn stop_all(
    mut vd: Guard,
    vd_err: std::thread::JoinHandle<String>,
    pb: Testpmd,
    pa: Option<Testpmd>,
    dir: &Path,
) {
    let st = vd.stop(Duration::from_secs(20));
    let errs = vd_err.join().unwrap_or_default();
    assert!(st.is_some_and(|s| s.success()), "vnicd exit {st:?}: {errs}");
    drop(pb);
    drop(pa);
    let _ = std::fs::remove_dir_all(dir);
}

/// Wait until testpmd `p`'s port 0 has received `n` frames in all.
fn wait_rx(p: &mut Testpmd, n: u64, what: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let now = p.port_stats().unwrap()[0].rx_packets;
        if now >= n {
            return;
        }
        assert!(Instant::now() < end, "{what}: {now} of {n} frames in 10 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_peer_off_its_cpu_for_a_while_is_bridged_by_the_backup_without_a_failover() {
    run(Fault::PeerPaused);
}

#[test]
fn killing_the_active_peer_reroutes_without_the_control_thread() {
    run(Fault::PeerKilled);
}

#[test]
fn a_peer_that_stops_draining_is_failed_by_the_data_core_without_the_control_thread() {
    run(Fault::PeerStopped);
}

#[test]
fn a_tap_whose_link_goes_down_reroutes_without_the_control_thread() {
    run(Fault::TapDown);
}

#[test]
fn a_vhost_device_whose_frontend_dies_reroutes_on_the_link_interrupt_without_the_control_thread() {
    run(Fault::VhostPeerKilled);
}
