//! Mobility between two real appliances: two vnicd processes on this machine (own file prefixes,
//! sockets; data cores that back off on the shared CPU), their backing devices on one Linux
//! bridge (a real learning switch), and a peer in a network namespace on that bridge (`vnic-gen`
//! on `net_af_packet`) sending a stream to each vNIC and counting what comes back, per vNIC.
//!
//! The backing devices are `net_af_packet` ports on veth pairs whose other ends are bridge
//! ports: like a VF on its physical port, the netdev stays when vnicd closes the port. Not
//! `net_tap`: DPDK 22.11's tap PMD gives every secondary process (each shm client) copies of a
//! tap's queue descriptors and never closes them, so a tap port opened again while such a client
//! lives has dead queues the kernel steers flows into (measured: a bystander's client held 4
//! queue descriptors of a tap after its port was closed and re-opened; 299 of 299 frames lost).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
mod mobility_rig;

use mobility_rig::{attached, bin, shm_scene, vnicctl, Appliance, Net, Reaper, Scene, MV};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use vnic_bench::gen::{Gen, TrialResult};
use vnic_bench::procs::Guard;
use vnic_bench::vnicd;

/// The rig: A with the moving vNIC and a bystander, B with a bystander and a spare on the same
/// port label, the peer with one stream per vNIC.
struct Rig {
    net: Net,
    a: Appliance,
    b: Appliance,
    gen: Gen,
    clients: Vec<Guard>,
    _dir: PathBuf,
    /// Last: what the test left running goes (a moved vNIC's successor clients).
    _reaper: Reaper,
}

fn rig(arrive_timeout_ms: u32, mv_client_extra: &[&str]) -> Rig {
    let dir = std::env::temp_dir().join(format!("vnic-mob-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let Scene {
        net,
        a,
        b,
        gen,
        mut clients,
    } = shm_scene(&dir, arrive_timeout_ms, mv_client_extra);
    for c in &mut clients {
        assert!(c.running());
    }
    Rig {
        net,
        a,
        b,
        gen,
        clients,
        _reaper: Reaper(dir.clone()),
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
    for (name, p) in [("moving", mv), ("bystander A", bya), ("bystander B", byb)] {
        eprintln!(
            "{name}: offered {} received {} lost {} longest gap {:.3} ms",
            p.offered,
            p.received,
            p.lost,
            p.max_gap_us / 1e3
        );
    }
    // The vNICs that did not move lost nothing, on either appliance.
    assert_eq!((bya.lost, byb.lost), (0, 0), "{res:?}");
    assert!(bya.offered > 30_000 && byb.offered > 30_000, "{res:?}");
    // The moving one's stream went on on B: most of it came back.
    assert!(mv.received * 10 > mv.offered * 9, "{mv:?}");
    // The switch relearned where the MAC lives: on B's device.
    let spare = format!("vb{}bs", r.net.id);
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
    eprintln!("A's record: {m}");
    assert_eq!(m["released_pool_in_use"], 0, "{m}");
    assert_eq!(m["phase"], "done");
    // Reloads keep the move: A does not bring it back, B keeps it.
    assert_eq!(vnicctl(&adm_a, &["reload"]).0, 0);
    assert_eq!(vnicctl(&adm_b, &["reload"]).0, 0);
    assert!(r.a.vnic("mv0").is_none(), "a reload on A brought mv0 back");
    assert_eq!(r.b.vnic("mv0").unwrap()["state"], "attached");
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

/// A's vNIC is as it was: attached, carrying its stream exactly; B has no trace of it.
fn untouched(r: &mut Rig, after: &str) {
    let v =
        r.a.vnic("mv0")
            .unwrap_or_else(|| panic!("{after}: mv0 gone from A"));
    assert_eq!(v["state"], "attached", "{after}: {v}");
    assert!(r.b.vnic("mv0").is_none(), "{after}: B kept mv0");
    let t = r.gen.trial(3000, 0.5, 0.0, &[64], false).unwrap();
    assert_eq!(t.lost, 0, "{after}: every stream exact: {t:?}");
}

fn expect_refusal(adm: &Path, args: &[&str], text: &str) {
    let (code, out) = vnicctl(adm, args);
    assert_eq!(code, 1, "{args:?}: {out}");
    assert!(out.contains(text), "{args:?}: wanted {text:?} in: {out}");
}

#[test]
fn refused_and_failed_moves_leave_both_appliances_as_they_were() {
    // mv0's client starts no successor: a move of it never gets its client to B.
    let mut r = rig(1000, &["--on-migrate", "true"]);
    let (adm_a, adm_b) = (r.a.adm(), r.b.adm());
    let to = adm_b.to_str().unwrap().to_string();
    expect_refusal(
        &adm_a,
        &["migrate", "mv0", "--to", &to, "--map", "lan=nowhere"],
        "no free spare on port label \"nowhere\" for backing device \"mv0-vf\" (port label \"lan\")",
    );
    untouched(&mut r, "unknown label");
    expect_refusal(
        &adm_a,
        &["migrate", "dup", "--to", &to],
        "MAC 02:00:00:00:b0:02 is already used here by vNIC \"byb\"",
    );
    assert!(r.a.vnic("dup").is_some(), "the refused vNIC stays on A");
    untouched(&mut r, "MAC in use");
    expect_refusal(
        &adm_a,
        &["migrate", "mv0", "--to", "/nonexistent/adm.sock"],
        "unreachable: cannot reach the destination's admin socket /nonexistent/adm.sock",
    );
    untouched(&mut r, "no destination");
    expect_refusal(
        &adm_a,
        &["migrate", "nosuch", "--to", &to],
        "unknown vNIC \"nosuch\"",
    );
    let (code, out) = vnicctl(&adm_a, &["migrate", "mv0", "--to", &to, "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("the destination can take it"), "{out}");
    untouched(&mut r, "dry run");
    // The client never arrives: B releases it at its deadline, A keeps forwarding.
    let t0 = std::time::Instant::now();
    expect_refusal(
        &adm_a,
        &["migrate", "mv0", "--to", &to],
        "the destination released it: the client did not arrive within 1000 ms: released",
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    untouched(&mut r, "client never arrived");
    let mb = vnicd::admin(&adm_b, "MIGRATION", json!({"vnic": "mv0"})).unwrap();
    assert_eq!(mb["phase"], "failed", "{mb}");
    // After all that a real dry run still finds the spare free.
    let (code, out) = vnicctl(&adm_a, &["migrate", "mv0", "--to", &to, "--dry-run"]);
    assert_eq!(code, 0, "the spare is free again: {out}");
    r.gen.quit();
    for mut c in r.clients.drain(..) {
        c.stop(Duration::from_secs(2));
    }
    assert_eq!(r.a.finish(), 0, "A leaked mbufs");
    assert_eq!(r.b.finish(), 0, "B leaked mbufs");
}

#[test]
fn the_destination_releases_a_prepared_vnic_when_the_source_dies_before_cutover() {
    let mut r = rig(30_000, &["--on-migrate", "true"]);
    let adm_b = r.b.adm();
    let mut mv = start_stuck_move(&mut r);
    // The source appliance is killed mid-move. What a killed primary leaves (its hugepage
    // files and runtime folder) is cleared after the checks, for the next test.
    r.a.vd.signal(9);
    let prefix = format!("mva{}", std::process::id() % 10000);
    let t0 = std::time::Instant::now();
    r.b.wait("mv0 released on B", |st| {
        st["vnics"]
            .as_array()
            .is_some_and(|a| !a.iter().any(|v| v["name"] == "mv0"))
    });
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let mb = vnicd::admin(&adm_b, "MIGRATION", json!({"vnic": "mv0"})).unwrap();
    assert_eq!(mb["phase"], "failed");
    assert_eq!(
        mb["error"],
        "the source's admin connection closed before cutover: released"
    );
    let _ = mv.wait();
    // B carries on: its own vNIC's stream is exact (the other two went with A).
    let t = r.gen.trial(3000, 0.5, 0.0, &[64], false).unwrap();
    assert_eq!(t.ports[2].lost, 0, "{t:?}");
    r.gen.quit();
    for mut c in r.clients.drain(..) {
        c.stop(Duration::from_secs(2));
    }
    assert_eq!(r.b.finish(), 0, "B leaked mbufs");
    let _ = r.a.vd.wait_timeout(Duration::from_secs(5));
    clear_killed(&prefix);
}

/// `vnicctl migrate mv0` (whose client never arrives) running, with mv0 `incoming` on B.
fn start_stuck_move(r: &mut Rig) -> std::process::Child {
    let mv = Command::new(bin("vnicctl"))
        .arg("--socket")
        .arg(r.a.adm())
        .args(["migrate", "mv0", "--to", r.b.adm().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    r.b.wait("mv0 incoming on B", |st| {
        st["vnics"].as_array().is_some_and(|a| {
            a.iter()
                .any(|v| v["name"] == "mv0" && v["state"] == "incoming")
        })
    });
    mv
}

/// Remove what a killed primary leaves: its runtime folder and hugepage files.
fn clear_killed(prefix: &str) {
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
    for e in std::fs::read_dir("/dev/hugepages")
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name()
            .to_string_lossy()
            .starts_with(&format!("{prefix}map_"))
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[test]
fn the_source_keeps_forwarding_when_the_destination_dies_before_cutover() {
    let mut r = rig(30_000, &["--on-migrate", "true"]);
    let mv = start_stuck_move(&mut r);
    // The destination appliance is killed mid-move.
    r.b.vd.signal(9);
    let o = mv.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("the destination's session ended"), "{text}");
    // A forwards as before: its two vNICs' streams are exact (B's went with B).
    let v = r.a.vnic("mv0").unwrap();
    assert_eq!(v["state"], "attached", "{v}");
    assert_eq!(v["migration"]["phase"], "failed", "{v}");
    let t = r.gen.trial(3000, 0.5, 0.0, &[64], false).unwrap();
    assert_eq!((t.ports[0].lost, t.ports[1].lost), (0, 0), "{t:?}");
    r.gen.quit();
    for mut c in r.clients.drain(..) {
        c.stop(Duration::from_secs(2));
    }
    let _ = r.b.vd.wait_timeout(Duration::from_secs(5));
    clear_killed(&format!("mvb{}", std::process::id() % 10000));
    assert_eq!(r.a.finish(), 0, "A leaked mbufs");
}

#[test]
fn a_crash_of_the_source_after_cutover_leaves_the_destination_running() {
    let mut r = rig(10_000, &[]);
    let (adm_a, adm_b) = (r.a.adm(), r.b.adm());
    let (code, out) = vnicctl(&adm_a, &["migrate", "mv0", "--to", adm_b.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    r.b.wait("mv0 attached on B", |st| attached(st, "mv0"));
    r.a.vd.signal(9);
    let _ = r.a.vd.wait_timeout(Duration::from_secs(5));
    // B needs nothing of A after cutover: mv0 and B's own vNIC carry their streams exactly.
    let t = r.gen.trial(3000, 0.5, 0.0, &[64], false).unwrap();
    assert_eq!((t.ports[0].lost, t.ports[2].lost), (0, 0), "{t:?}");
    assert_eq!(r.b.vnic("mv0").unwrap()["state"], "attached");
    r.gen.quit();
    for mut c in r.clients.drain(..) {
        c.stop(Duration::from_secs(2));
    }
    clear_killed(&format!("mva{}", std::process::id() % 10000));
    assert_eq!(r.b.finish(), 0, "B leaked mbufs");
}

#[test]
fn twenty_moves_back_and_forth_leak_nothing_and_bystanders_lose_nothing() {
    let mut r = rig(10_000, &[]);
    let (adm_a, adm_b) = (r.a.adm(), r.b.adm());
    let mut lost = Vec::new();
    for k in 0..20 {
        let (from, to) = if k % 2 == 0 {
            (&adm_a, &adm_b)
        } else {
            (&adm_b, &adm_a)
        };
        let (res, (code, out)) = with_traffic(&mut r.gen, 6000, 1.5, || {
            std::thread::sleep(Duration::from_millis(300));
            vnicctl(from, &["migrate", "mv0", "--to", to.to_str().unwrap()])
        });
        assert_eq!(code, 0, "move {k}: {out}");
        assert_eq!(
            (res.ports[1].lost, res.ports[2].lost),
            (0, 0),
            "move {k}: the bystanders lose nothing: {res:?}"
        );
        lost.push(res.ports[0].lost);
        // Where it went, it is attached and carries its stream.
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while !vnicd::status(to).is_ok_and(|st| attached(&st, "mv0")) {
            assert!(std::time::Instant::now() < end, "move {k}: not attached");
            std::thread::sleep(Duration::from_millis(5));
        }
        let t = r.gen.trial(3000, 0.3, 0.0, &[64], false).unwrap();
        assert_eq!(
            t.lost,
            0,
            "after move {k} every stream is exact: {t:?}; fdb: {:?}; there: {}",
            r.net.fdb_port(MV),
            vnicd::admin(to, "SHOW", json!({"vnic": "mv0"})).unwrap()
        );
    }
    eprintln!("frames lost per move of the moving vNIC: {lost:?}");
    // Home again on A, on its own device; B has nothing left but its bystander and a free spare.
    let v = r.a.vnic("mv0").unwrap();
    assert_eq!(v["active_backing"], "mv0-vf");
    assert!(r.b.vnic("mv0").is_none());
    assert!(r.a.status()["migrated_out"].as_array().unwrap().is_empty());
    let ms = vnicd::admin(&adm_a, "MIGRATIONS", json!({})).unwrap();
    let done = ms["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["phase"] == "done")
        .count();
    assert_eq!(done, 20, "{ms}");
    let (code, out) = vnicctl(
        &adm_a,
        &[
            "migrate",
            "mv0",
            "--to",
            adm_b.to_str().unwrap(),
            "--dry-run",
        ],
    );
    assert_eq!(code, 0, "B's spare is free: {out}");
    r.gen.quit();
    for mut c in r.clients.drain(..) {
        c.stop(Duration::from_secs(2));
    }
    assert_eq!(r.a.finish(), 0, "A leaked mbufs");
    assert_eq!(r.b.finish(), 0, "B leaked mbufs");
}
