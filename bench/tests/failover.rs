//! Failover between backing devices with real faults: a dpdk-testpmd peer behind each memif
//! backing device reflects frames (io, loop topology); the test is the client and counts every
//! frame by sequence number.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vnic_bench::testpmd::{Testpmd, TestpmdOpts};
use vnic_control::client::{Client, Push};
use vnic_control::config;
use vnic_control::runner::Running;
use vnic_dataplane::{eal, Burst, Mempool, Ring};
use vnic_proto::msg::Attached;

const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

struct Lab {
    dir: std::path::PathBuf,
    run: Option<Running>,
}

impl Lab {
    fn sock(&self, i: usize) -> String {
        self.dir.join(format!("w{i}.sock")).display().to_string()
    }
    fn run(&self) -> &Running {
        self.run.as_ref().unwrap()
    }
}

fn peer(lab: &Lab, i: usize) -> Testpmd {
    let mut p = Testpmd::spawn(&TestpmdOpts::io(
        0,
        1,
        vec![format!(
            "net_memif{i},role=server,socket={},id=0",
            lab.sock(i)
        )],
        eal::host_hugepages_usable(),
        "loop",
    ))
    .expect("testpmd peer");
    p.cmd("start").unwrap();
    p
}

/// vnic0 on two memif backing devices: `a` (priority 10) and `b` (priority 20).
/// The wire rings hold 8192 frames (rsize=13; memif's client sets the size): 400 ms of the
/// tests' traffic, so a peer the host deschedules for a while overflows nothing.
fn lab(edit: impl FnOnce(&mut Value)) -> Lab {
    let dir = std::env::temp_dir().join(format!("vnic-fo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut lab = Lab { dir, run: None };
    let mut j = json!({
        "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 256},
        "data_cores": [{"core": 1, "idle_sleep_us": 20}],
        "control_socket": lab.dir.join("c.sock"), "admin_socket": lab.dir.join("a.sock"),
        "heartbeat_timeout_ms": 60000,
        "vnics": [{"name": "vnic0", "mac": "02:00:00:00:00:01", "hold_down_ms": 300, "tx_stall_ms": 50,
                   "announce_rounds": 2, "ipv4": ["10.0.0.1"],
                   "backing": [
                       {"name": "a", "devargs": format!("net_memif0,role=client,socket={},id=0,rsize=13", lab.sock(0)), "priority": 10, "port_label": "p0"},
                       {"name": "b", "devargs": format!("net_memif1,role=client,socket={},id=0,rsize=13", lab.sock(1)), "priority": 20, "port_label": "p1"}]}]
    });
    edit(&mut j);
    let cfg = config::parse(&j.to_string()).unwrap();
    lab.run = Some(Running::start(cfg, Default::default()).expect("vnicd"));
    lab
}

fn frame(seq: u32) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xee]);
    f[6..12].copy_from_slice(&MAC);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    f
}

/// A client that sends `rate` frames per second and records every sequence number it gets back.
struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU32>,
    got: Arc<Mutex<HashSet<u32>>>,
    /// Peer announcements (RARP, gratuitous ARP) that came back from the reflecting peers.
    announcements: Arc<AtomicU32>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(grant: &Attached, rate: u64) -> Traffic {
        let pool = Mempool::lookup(&grant.mempool).unwrap();
        let rx = Ring::lookup(&grant.rings[0].rx).unwrap();
        let tx = Ring::lookup(&grant.rings[0].tx).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU32::new(0));
        let got = Arc::new(Mutex::new(HashSet::new()));
        let announcements = Arc::new(AtomicU32::new(0));
        let (s2, n2, g2, a2) = (
            stop.clone(),
            sent.clone(),
            got.clone(),
            announcements.clone(),
        );
        let record = move |m: vnic_dataplane::Mbuf, g: &mut HashSet<u32>| {
            let d = m.data();
            match [d[12], d[13]] {
                [0x88, 0xb5] => {
                    g.insert(u32::from_be_bytes(d[14..18].try_into().unwrap()));
                }
                [0x80, 0x35] | [0x08, 0x06] => {
                    a2.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        };
        let handle = std::thread::spawn(move || {
            let mut t0 = Instant::now();
            let mut b = Burst::default();
            let mut seq = 0u32;
            let mut base = 0u32;
            while !s2.load(Ordering::Relaxed) {
                let mut due = base + (t0.elapsed().as_secs_f64() * rate as f64) as u32;
                // A thread the host starved does not catch up in one burst (that would overflow
                // a 1024-slot ring on its way and count as loss): the missed slots are skipped.
                if due > seq + 64 {
                    base = seq + 64;
                    t0 = Instant::now();
                    due = base;
                }
                while seq < due {
                    match pool.alloc_with(&frame(seq)) {
                        Some(m) => {
                            if tx.enqueue_one(m).is_ok() {
                                seq += 1;
                                n2.store(seq, Ordering::Relaxed);
                            } else {
                                break;
                            }
                        }
                        None => break,
                    }
                }
                while rx.dequeue(&mut b) > 0 {
                    let mut g = g2.lock().unwrap();
                    for m in b.drain() {
                        record(m, &mut g);
                    }
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            // Collect stragglers.
            let end = Instant::now() + Duration::from_millis(200);
            while Instant::now() < end {
                while rx.dequeue(&mut b) > 0 {
                    let mut g = g2.lock().unwrap();
                    for m in b.drain() {
                        record(m, &mut g);
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Traffic {
            stop,
            sent,
            got,
            announcements,
            handle: Some(handle),
        }
    }
    fn received(&self) -> usize {
        self.got.lock().unwrap().len()
    }
    fn sent(&self) -> u32 {
        self.sent.load(Ordering::Relaxed)
    }
    /// Stop and return (sent, received).
    fn finish(mut self) -> (u32, usize) {
        self.halt();
        (self.sent(), self.received())
    }
    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Traffic {
    // A failing test must not leave this thread on rings vnicd is tearing down.
    fn drop(&mut self) {
        self.halt();
    }
}

/// Inodes of the far ends of the connections a server accepted on unix socket `path` (from
/// `ss -x`: `u_seq ESTAB 0 0 <path> <inode> * <peer inode>`).
fn accepted_peers(path: &str) -> Vec<u64> {
    let out = std::process::Command::new("ss")
        .args(["-x", "-a"])
        .output()
        .expect("ss (iproute2)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local = f.get(4)?.trim_start_matches('@');
            (f.get(1) == Some(&"ESTAB") && local == path).then(|| f.get(7)?.parse().ok())?
        })
        .collect()
}

/// Inodes of this process's sockets.
fn own_sockets() -> HashSet<u64> {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|p| {
                    let s = p.display().to_string();
                    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn attach(run: &Running) -> (Client, Attached) {
    let mut c = run.client();
    c.hello("vnic0", None).unwrap();
    let g = c.attach(1, 1024, 1500, false).unwrap();
    (c, g)
}

fn wait_active(run: &Running, name: &str, within: Duration) -> Duration {
    run.wait_for("vnic0", &format!("active on {name}"), within, |v| {
        v["active_backing"] == name && v["link_up"] == true
    })
}

/// Wait until both links are up and the vNIC settled on `a`; returns the failover count then
/// (the first activation may land on `b` and fail back, depending on which link came up first).
fn both_up(run: &Running) -> u64 {
    run.wait_for("vnic0", "both links up", Duration::from_secs(15), |v| {
        v["backing"]
            .as_array()
            .is_some_and(|b| b.iter().all(|b| b["link_up"] == true))
    });
    wait_active(run, "a", Duration::from_secs(5));
    run.vnic("vnic0")["failover_count"].as_u64().unwrap()
}

#[test]
fn killing_the_active_peer_fails_over_and_fail_back_follows_its_return() {
    let mut lab = lab(|_| {});
    let pa = peer(&lab, 0);
    let _pb = peer(&lab, 1);
    let run = lab.run();
    let base = both_up(run);
    let (mut c, g) = attach(run);
    let t = Traffic::start(&g, 20_000);
    while t.received() < 2000 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The wire behind `a` dies.
    drop(pa); // SIGINT, then SIGKILL: the memif server goes away
    let took = wait_active(run, "b", Duration::from_secs(5));
    let v = run.vnic("vnic0");
    assert_eq!(v["failover_count"].as_u64().unwrap(), base + 1, "{v}");
    let ls = &v["last_switch"];
    assert_eq!(
        (ls["from"].as_str(), ls["to"].as_str()),
        (Some("a"), Some("b"))
    );
    assert!(ls["reason"].as_str().unwrap().contains("failure"), "{ls}");
    assert_eq!(v["backing"][0]["state"], "failed");
    eprintln!("switched to b {took:?} after the kill; record {ls}");
    // Traffic continues on b.
    let before = t.received();
    while t.received() < before + 2000 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The client was told.
    std::thread::sleep(Duration::from_millis(20));
    let pushes = c.pushes();
    assert!(
        pushes
            .iter()
            .any(|p| matches!(p, Push::Failover(f) if f.to == "b")),
        "{pushes:?}"
    );
    // `a`'s wire comes back: the memif client redials, and after the 300 ms hold-down the vNIC
    // returns to the better device.
    let back = Instant::now();
    let pa2 = peer(&lab, 0);
    wait_active(run, "a", Duration::from_secs(15));
    assert!(
        back.elapsed() >= Duration::from_millis(300),
        "fail-back before the hold-down"
    );
    let v = run.vnic("vnic0");
    assert_eq!(v["failover_count"].as_u64().unwrap(), base + 2);
    assert!(
        v["last_switch"]["reason"]
            .as_str()
            .unwrap()
            .contains("fail-back"),
        "{v}"
    );
    let before = t.received();
    while t.received() < before + 2000 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (sent, got) = t.finish();
    eprintln!(
        "sent {sent}, got back {got}, lost {} around the unplanned failover",
        sent as usize - got
    );
    c.detach().unwrap();
    drop(pa2);
    let r = lab.run.take().unwrap().finish();
    assert_eq!(r.leaked(), 0, "{r:?}");
}

#[test]
fn without_auto_fail_back_the_vnic_stays_on_the_standby() {
    let mut lab = lab(|j| j["vnics"][0]["auto_priority_failover"] = false.into());
    let pa = peer(&lab, 0);
    // `b`'s wire only once the vNIC runs on `a` (no auto fail-back to settle it otherwise).
    wait_active(lab.run(), "a", Duration::from_secs(15));
    let _pb = peer(&lab, 1);
    let run = lab.run();
    let base = both_up(run);
    drop(pa);
    wait_active(run, "b", Duration::from_secs(5));
    let _pa2 = peer(&lab, 0);
    run.wait_for("vnic0", "a healthy again", Duration::from_secs(15), |v| {
        v["backing"][0]["state"] == "standby" && v["backing"][0]["link_up"] == true
    });
    std::thread::sleep(Duration::from_millis(600)); // two hold-downs
    let v = run.vnic("vnic0");
    assert_eq!(
        (v["active_backing"].as_str(), v["failover_count"].as_u64()),
        (Some("b"), Some(base + 1)),
        "{v}"
    );
    assert_eq!(lab.run.take().unwrap().finish().leaked(), 0);
}

#[test]
fn planned_failover_under_traffic_loses_nothing() {
    let mut lab = lab(|_| {});
    let _pa = peer(&lab, 0);
    let _pb = peer(&lab, 1);
    let run = lab.run();
    let base = both_up(run);
    let (mut c, g) = attach(run);
    let t = Traffic::start(&g, 20_000);
    // Switch back and forth, by the administrator and by the client, under traffic.
    for k in 0..6 {
        std::thread::sleep(Duration::from_millis(80));
        let to = if k % 2 == 0 { "b" } else { "a" };
        if k % 3 == 2 {
            let r = c
                .request("REQUEST_FAILOVER", json!({"reason": "test"}))
                .unwrap();
            assert_eq!(r["to"], to);
        } else {
            let r = run
                .admin("FAILOVER", json!({"vnic": "vnic0", "to": to}))
                .unwrap();
            assert_eq!(r["to"], to);
        }
        assert_eq!(run.vnic("vnic0")["active_backing"], to);
    }
    std::thread::sleep(Duration::from_millis(200));
    let announced = t.announcements.load(Ordering::Relaxed);
    let (sent, got) = t.finish();
    assert!(sent > 5000, "{sent}");
    assert_eq!(
        got,
        sent as usize,
        "planned switches must lose nothing; vNIC: {}",
        run.vnic("vnic0")
    );
    // Each switch announced the MAC on the new device: 2 rounds of RARP + gratuitous ARP, which
    // the reflecting peers sent back to us.
    assert!(
        announced >= 6 * 2 * 2,
        "only {announced} announcements came back"
    );
    let v = run.vnic("vnic0");
    assert_eq!(v["failover_count"].as_u64().unwrap(), base + 6);
    assert!(
        v["last_switch"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("planned"),
        "{v}"
    );
    // Moving to a worse device by hand turned automatic fail-back off (or it would have undone
    // the move at once); turning it back on returns to the best device.
    run.admin("FAILOVER", json!({"vnic": "vnic0", "to": "b"}))
        .unwrap();
    assert_eq!(run.vnic("vnic0")["auto_priority_failover"], false);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(run.vnic("vnic0")["active_backing"], "b");
    run.admin("AUTO_FAILBACK", json!({"vnic": "vnic0", "enabled": true}))
        .unwrap();
    wait_active(run, "a", Duration::from_secs(5));
    // Refusals change nothing.
    let e = run
        .admin("FAILOVER", json!({"vnic": "vnic0", "to": "a"}))
        .unwrap_err();
    assert_eq!(e.code(), Some("not_operational"), "{e}");
    let e = run
        .admin("FAILOVER", json!({"vnic": "vnic0", "to": "zz"}))
        .unwrap_err();
    assert_eq!(e.code(), Some("unknown_backing"), "{e}");
    c.detach().unwrap();
    assert_eq!(lab.run.take().unwrap().finish().leaked(), 0);
}

#[test]
fn when_every_device_fails_the_link_goes_down_and_comes_back() {
    let mut lab = lab(|_| {});
    let pa = peer(&lab, 0);
    let pb = peer(&lab, 1);
    let run = lab.run();
    both_up(run);
    let (mut c, _g) = attach(run);
    drop(pa);
    drop(pb);
    run.wait_for("vnic0", "link down", Duration::from_secs(5), |v| {
        v["link_up"] == false
    });
    std::thread::sleep(Duration::from_millis(50));
    let pushes = c.pushes();
    assert!(
        pushes.iter().any(|p| matches!(p, Push::Link(l) if !l.up)),
        "{pushes:?}"
    );
    let e = c
        .request("REQUEST_FAILOVER", json!({"reason": "x"}))
        .unwrap_err();
    assert_eq!(e.code(), Some("no_standby"));
    let _pb2 = peer(&lab, 1);
    wait_active(run, "b", Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(50));
    let pushes = c.pushes();
    assert!(
        pushes.iter().any(|p| matches!(p, Push::Link(l) if l.up)),
        "{pushes:?}"
    );
    c.detach().unwrap();
    assert_eq!(lab.run.take().unwrap().finish().leaked(), 0);
}

#[test]
fn disabling_the_active_device_switches_away_and_the_last_one_is_protected() {
    let mut lab = lab(|_| {});
    let _pa = peer(&lab, 0);
    let _pb = peer(&lab, 1);
    let run = lab.run();
    both_up(run);
    let r = run
        .admin(
            "BACKING",
            json!({"vnic": "vnic0", "backing": "a", "enabled": false}),
        )
        .unwrap();
    assert_eq!(r["failover"]["to"], "b");
    let v = run.vnic("vnic0");
    assert_eq!(
        (
            v["active_backing"].as_str(),
            v["backing"][0]["state"].as_str()
        ),
        (Some("b"), Some("disabled"))
    );
    let e = run
        .admin(
            "BACKING",
            json!({"vnic": "vnic0", "backing": "b", "enabled": false}),
        )
        .unwrap_err();
    assert_eq!(e.code(), Some("no_standby"), "{e}");
    assert_eq!(
        run.vnic("vnic0")["backing"][1]["state"],
        "active",
        "refusal changed nothing"
    );
    run.admin(
        "BACKING",
        json!({"vnic": "vnic0", "backing": "a", "enabled": true}),
    )
    .unwrap();
    // Re-enabled and better: auto fail-back after the hold-down.
    wait_active(run, "a", Duration::from_secs(5));
    assert_eq!(lab.run.take().unwrap().finish().leaked(), 0);
}

#[test]
fn hot_removing_the_active_device_moves_traffic_and_releases_the_device() {
    let mut lab = lab(|_| {});
    let mut pa = peer(&lab, 0);
    let _pb = peer(&lab, 1);
    let run = lab.run();
    let base = both_up(run);
    let (mut c, g) = attach(run);
    let t = Traffic::start(&g, 20_000);
    while t.received() < 2000 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The check below can fail: before the removal, this process is the peer's client.
    let ours = own_sockets();
    assert!(
        accepted_peers(&lab.sock(0))
            .iter()
            .any(|p| ours.contains(p)),
        "before removal vnicd must be connected to the peer: {:?}",
        accepted_peers(&lab.sock(0))
    );
    let r = run
        .admin("REMOVE_BACKING", json!({"vnic": "vnic0", "backing": "a"}))
        .unwrap();
    assert_eq!(r["failover"]["to"], "b");
    let v = run.vnic("vnic0");
    assert_eq!(v["active_backing"], "b");
    assert_eq!(v["failover_count"].as_u64().unwrap(), base + 1);
    assert_eq!(v["backing"][0]["state"], "failed");
    assert_eq!(v["backing"][0]["reason"], "removed by the administrator");
    // The device is gone from vnicd before the reply: no ethdev port of its name is left
    // (vnicd runs in this process). This is vnicd's side, and exact.
    assert!(
        !vnic_dataplane::port::ethdev_exists("net_memif0"),
        "vnicd still has the removed device's port after REMOVE_BACKING returned"
    );
    // And its connection to the memif peer is closed: no socket of this process (vnicd runs in
    // it) is the other end of a connection the peer accepted on that socket. Exact, and ours.
    // (testpmd's memif server itself sometimes never notices a client leaving on a loaded host:
    // its link stays up for 20 s and more although, as `ss` shows, the other end is closed. So
    // its link state is reported, not relied on.)
    let t_removed = Instant::now();
    let wire = lab.sock(0);
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let peers = accepted_peers(&wire);
        let ours = own_sockets();
        assert!(
            !peers.is_empty() || pa.running(),
            "the peer has no connection and no process"
        );
        if peers.iter().all(|p| !ours.contains(p)) {
            break;
        }
        assert!(
            Instant::now() < end,
            "vnicd still holds its connection to the removed device's peer {:?} after removal",
            t_removed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "vnicd's connection to the peer was closed {:?} after removal; the peer reports its link {}",
        t_removed.elapsed(),
        if pa.link_up(0).unwrap_or(false) { "still up" } else { "down" }
    );
    let before = t.received();
    while t.received() < before + 2000 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Nothing brings a removed device back but a reload: it stays failed.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(run.vnic("vnic0")["active_backing"], "b");
    drop(t);
    c.detach().unwrap();
    assert_eq!(lab.run.take().unwrap().finish().leaked(), 0);
}
