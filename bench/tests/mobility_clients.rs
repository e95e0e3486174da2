//! Moving the other transports' clients between two appliances (the rig of `mobility.rs`): a
//! memif container is restarted against the destination's socket (memif has no live migration),
//! and a QEMU guest on a vhost-user vNIC is live-migrated from a QEMU on A's socket to one started
//! with `-incoming` on B's, while a peer on the bridge pings it every 10 ms.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
mod mobility_rig;

use mobility_rig::{bin, pair, vnicctl, Appliance, Net};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vnic_bench::gen::{Gen, GenPlace};
use vnic_bench::qemu;
use vnic_bench::testpmd::{Testpmd, TestpmdOpts};
use vnic_dataplane::eal;

const MAC: &str = "02:00:00:00:c0:01";

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vnic-mc-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn state(app: &Appliance, vnic: &str) -> Option<Value> {
    app.vnic(vnic)
}

/// An unmodified testpmd on a memif client port, swapping MACs (the "container").
fn container(socket: &str) -> Testpmd {
    let mut o = TestpmdOpts::io(
        1,
        0,
        vec![format!(
            "net_memif0,role=client,socket={socket},socket-abstract=no,id=0"
        )],
        eal::host_hugepages_usable(),
        "loop",
    );
    o.forward_mode = "macswap".into();
    let mut p = Testpmd::spawn(&o).expect("testpmd container");
    p.cmd("start").unwrap();
    p
}

#[test]
fn a_memif_container_restarted_on_the_destination_keeps_its_vnic() {
    let d = dir("memif");
    let mut net = Net::new();
    let peer = net.peer_port("m");
    let sock_a = d.join("a-mv.memif").display().to_string();
    let (mut a, mut b) = pair(
        &d,
        &mut net,
        json!({"name": "mv", "mac": MAC, "client": {"transport": "memif", "socket": sock_a}}),
    );
    let c = container(&sock_a);
    a.wait("the container attached on A", |st| {
        st["vnics"][0]["state"] == "attached"
    });
    let mut gen = Gen::spawn_at(
        &bin("vnicd"),
        0,
        &[format!("net_af_packet0,iface={peer}")],
        1,
        false,
        &GenPlace {
            netns: Some(net.ns.clone()),
            dst: vec![MAC.into()],
        },
    )
    .unwrap();
    gen.wait_listening(Duration::from_secs(20)).unwrap();
    gen.wait_ready(Duration::from_secs(20)).unwrap();
    let t = gen.trial(2000, 0.5, 0.3, &[64], false).unwrap();
    assert_eq!(t.lost, 0, "before the move: {t:?}");
    let before = state(&a, "mv").unwrap();
    let (adm_a, adm_b) = (a.adm(), b.adm());
    let (res, out) = std::thread::scope(|s| {
        let h = s.spawn(|| gen.trial(2000, 8.0, 0.0, &[64], false).unwrap());
        std::thread::sleep(Duration::from_millis(500));
        let mv = s.spawn(|| vnicctl(&adm_a, &["migrate", "mv", "--to", adm_b.to_str().unwrap()]));
        // B prepares the vNIC on its own socket; the container is restarted against it.
        b.wait("mv incoming on B", |st| {
            st["vnics"][0]["state"] == "incoming"
        });
        let sock_b = state(&b, "mv").unwrap()["client_socket"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(sock_b, d.join("b-sockets/mv.memif").display().to_string());
        let t_stop = Instant::now();
        c.quit();
        let c2 = container(&sock_b);
        let (code, out) = mv.join().unwrap();
        eprintln!(
            "container restarted and the move done in {:.0} ms",
            t_stop.elapsed().as_secs_f64() * 1e3
        );
        assert_eq!(code, 0, "{out}");
        let r = h.join().unwrap();
        (r, (out, c2))
    });
    let (out, mut c2) = out;
    eprintln!("{out}");
    let p = &res.ports[0];
    eprintln!(
        "memif: offered {} received {} lost {} longest gap {:.1} ms (the container's restart)",
        p.offered,
        p.received,
        p.lost,
        p.max_gap_us / 1e3
    );
    assert!(p.received * 2 > p.offered, "the stream went on on B: {p:?}");
    let v = state(&b, "mv").unwrap();
    assert_eq!(v["transport"], "memif");
    assert_eq!(v["owner"]["kind"], "memif", "{v}");
    assert!(
        v["rx_packets"].as_u64().unwrap() > before["rx_packets"].as_u64().unwrap(),
        "counters continue: {v}"
    );
    assert!(state(&a, "mv").is_none());
    let m = vnic_bench::vnicd::admin(&adm_a, "MIGRATION", json!({"vnic": "mv"})).unwrap();
    assert_eq!(m["released_pool_in_use"], 0, "{m}");
    let t = gen.trial(2000, 0.5, 0.0, &[64], false).unwrap();
    assert_eq!(t.lost, 0, "after the move: {t:?}");
    c2.cmd("stop").unwrap();
    c2.quit();
    gen.quit();
    assert_eq!(a.finish(), 0);
    assert_eq!(b.finish(), 0);
}

#[test]
fn a_qemu_guest_live_migrates_between_appliances_while_pinged() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let g = qemu::guest(root).unwrap();
    let d = dir("vm");
    let mut net = Net::new();
    net.peer_port_ip("p", "10.77.0.1/24");
    let ns = net.ns.clone();
    let sock_a = d.join("a-vm.vhost").display().to_string();
    let (mut a, mut b) = pair(
        &d,
        &mut net,
        json!({"name": "vm", "mac": MAC, "ipv4": ["10.77.0.2"],
               "client": {"transport": "vhost-user", "socket": sock_a}}),
    );
    let (mon_a, mon_b) = (d.join("qa.mon"), d.join("qb.mon"));
    let mut qa = qemu::start(&g, &sock_a, &mon_a, MAC, "10.77.0.2/24", None).unwrap();
    qa.wait_ready(Duration::from_secs(180)).unwrap();
    a.wait("the guest attached on A", |st| {
        st["vnics"][0]["state"] == "attached"
    });
    // Pings every 10 ms from the peer, all through the move.
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "/bin/busybox",
            "ping",
            "-i",
            "0.01",
            "-w",
            "14",
            "10.77.0.2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let (adm_a, adm_b) = (a.adm(), b.adm());
    let (out, downtime, mut qb) = std::thread::scope(|s| {
        let mv = s.spawn(|| vnicctl(&adm_a, &["migrate", "vm", "--to", adm_b.to_str().unwrap()]));
        b.wait("vm incoming on B", |st| {
            st["vnics"][0]["state"] == "incoming"
        });
        let sock_b = state(&b, "vm").unwrap()["client_socket"]
            .as_str()
            .unwrap()
            .to_string();
        let port = 44000 + (std::process::id() % 1000) as u16;
        let qb = qemu::start(&g, &sock_b, &mon_b, MAC, "10.77.0.2/24", Some(port)).unwrap();
        let downtime = qemu::migrate(&mon_a, &mon_b, port).unwrap();
        let (code, out) = mv.join().unwrap();
        assert_eq!(code, 0, "{out}");
        qa.guard.stop(Duration::from_secs(5));
        (out, downtime, qb)
    });
    let text = {
        let o = ping.wait_with_output().unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    eprintln!("{out}");
    let (sent, got, gap) = qemu::ping_stats(&text);
    eprintln!(
        "QEMU downtime {downtime} ms; pings lost: {} of {sent}, longest gap {gap} pings",
        sent - got
    );
    assert!(sent > 500, "{text}");
    // The guest answers from B after the move.
    assert!(
        text.lines().rev().take(5).any(|l| l.contains("bytes from")),
        "{text}"
    );
    let v = state(&b, "vm").unwrap();
    assert_eq!(v["state"], "attached", "{v}");
    assert_eq!(v["owner"]["kind"], "vhost", "{v}");
    assert!(state(&a, "vm").is_none());
    assert!(got * 10 > sent * 8, "{text}");
    qb.guard.stop(Duration::from_secs(5));
    assert_eq!(a.finish(), 0);
    assert_eq!(b.finish(), 0);
}
