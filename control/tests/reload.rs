//! Config reload against a running control thread: only the difference is applied, traffic on
//! untouched vNICs loses nothing, a failing step rolls everything back, bad input changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
mod common;
use common::raw;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vnic_control::client::Client;
use vnic_dataplane::{Burst, Mempool, Ring};

fn base_config(fx: &common::Fx) -> Value {
    let vnic = |i: u32| {
        json!({"name": format!("vnic{i}"), "mac": format!("02:00:00:00:00:0{}", i + 1), "queues": 2, "ring_depth": 1024,
               "allowed_uids": [0],
               "backing": [{"name": format!("vf{i}"), "devargs": format!("net_ring{i}"), "port_label": "p0"}]})
    };
    json!({
        "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 256},
        "data_cores": [{"core": 1, "idle_sleep_us": 20}],
        "control_socket": fx.ctl, "admin_socket": fx.admin,
        "heartbeat_timeout_ms": 60000,
        "vnics": [vnic(0), vnic(1)]
    })
}

fn start() -> common::Fx {
    common::start_with(60_000, |j| {
        j["vnics"].as_array_mut().unwrap().truncate(2);
    })
}

fn reload(fx: &common::Fx, cfg: &Value) -> Result<Value, vnic_control::client::ClientError> {
    let p = fx.dir.join("reload.json");
    std::fs::write(&p, serde_json::to_string_pretty(cfg).unwrap()).unwrap();
    Client::connect(&fx.admin)?.request("RELOAD", json!({"path": p}))
}

fn reload_text(fx: &common::Fx, text: &str) -> Result<Value, vnic_control::client::ClientError> {
    let p = fx.dir.join("reload.json");
    std::fs::write(&p, text).unwrap();
    Client::connect(&fx.admin)?.request("RELOAD", json!({"path": p}))
}

fn frame(seq: u32, mac_last: u8) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xee]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, mac_last]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    f
}

/// Attach vnic0 and keep frames going round (net_ring loops tx to rx) until stopped; returns a
/// handle yielding (sent, received in order).
/// Frames the traffic thread has sent so far (one traffic thread per test process).
static SENT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Wait until the traffic thread has sent `n` more frames than `since` (a loaded host runs it
/// slowly: a condition, not a sleep). Returns the count reached.
fn traffic_moved(since: u32, n: u32) -> u32 {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let s = SENT.load(Ordering::Relaxed);
        if s >= since + n {
            return s;
        }
        assert!(Instant::now() < end, "traffic stalled at {s}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn traffic(fx: &common::Fx) -> (Client, Arc<AtomicBool>, std::thread::JoinHandle<(u32, u32)>) {
    let mut c = fx.client();
    raw::hello(&mut c, "vnic0", None).unwrap();
    let g = raw::attach(&mut c, 1, 1024, 1500, false).unwrap();
    let pool = Mempool::lookup(g["mempool"].as_str().unwrap()).unwrap();
    let rx = Ring::lookup(g["rings"][0]["rx"].as_str().unwrap()).unwrap();
    let tx = Ring::lookup(g["rings"][0]["tx"].as_str().unwrap()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let h = std::thread::spawn(move || {
        let (mut sent, mut got) = (0u32, 0u32);
        let mut b = Burst::default();
        let mut stopping: Option<Instant> = None;
        loop {
            if stopping.is_none() && s2.load(Ordering::Relaxed) {
                stopping = Some(Instant::now());
            }
            if stopping.is_none()
                && sent - got < 128
                && tx
                    .enqueue_one(pool.alloc_with(&frame(sent, 1)).unwrap())
                    .is_ok()
            {
                sent += 1;
                SENT.store(sent, Ordering::Relaxed);
            }
            while rx.dequeue(&mut b) > 0 {
                for m in b.drain() {
                    if m.data()[12..14] != [0x88, 0xb5] {
                        continue; // a peer announcement after a switch, looped back
                    }
                    assert_eq!(
                        u32::from_be_bytes(m.data()[14..18].try_into().unwrap()),
                        got,
                        "in order, none lost"
                    );
                    got += 1;
                }
            }
            if stopping.is_some_and(|t| got == sent || t.elapsed() > Duration::from_secs(2)) {
                return (sent, got);
            }
            std::thread::yield_now();
        }
    });
    (c, stop, h)
}

#[test]
fn adding_changing_and_removing_a_vnic_100_times_loses_nothing_on_another() {
    let fx = start();
    let base = base_config(&fx);
    let (mut c, stop, h) = traffic(&fx);
    let with_b = |hold: u32, mtu: u32| {
        let mut j = base.clone();
        j["vnics"].as_array_mut().unwrap().push(
            json!({"name": "vnicB", "mac": "02:00:00:00:00:0b", "mtu": mtu, "hold_down_ms": hold,
            "backing": [{"name": "bf0", "devargs": "net_ring7", "port_label": "p0"}]}),
        );
        j
    };
    let t = Instant::now();
    for k in 0..100u32 {
        let r = reload(&fx, &with_b(1000, 1500)).unwrap();
        assert_eq!(r["steps"][0], "add vNIC vnicB", "{r}");
        // An in-place change, then one that recreates it.
        let r = reload(&fx, &with_b(1001 + k, 1500)).unwrap();
        assert_eq!(r["steps"][0], "update vNIC vnicB: hold_down_ms", "{r}");
        let r = reload(&fx, &with_b(1001 + k, 1400)).unwrap();
        assert_eq!(r["steps"][0], "recreate vNIC vnicB (mtu changed)", "{r}");
        let r = reload(&fx, &base).unwrap();
        assert_eq!(r["steps"][0], "remove vNIC vnicB", "{r}");
    }
    let took = t.elapsed();
    traffic_moved(0, 1001);
    stop.store(true, Ordering::Relaxed);
    let (sent, got) = h.join().unwrap();
    assert_eq!(got, sent, "frames lost on vnic0 during 400 reloads");
    assert!(sent > 1000, "traffic ran ({sent})");
    let st = fx.status();
    assert_eq!(st["config_generation"], 400);
    assert_eq!(st["vnics"].as_array().unwrap().len(), 2);
    let v0 = fx.vnic("vnic0");
    assert_eq!(
        (v0["rx_drops"].as_u64(), v0["tx_drops"].as_u64()),
        (Some(0), Some(0))
    );
    eprintln!(
        "400 reloads in {took:?} ({:?} each) with {sent} frames on vnic0, none lost",
        took / 400
    );
    raw::detach(&mut c).unwrap();
    fx.finish();
}

#[test]
fn raising_a_standby_above_the_active_switches_with_zero_loss() {
    let fx = start();
    let mut cfg = base_config(&fx);
    cfg["vnics"][0]["hold_down_ms"] = 0.into();
    cfg["vnics"][0]["backing"] = json!([
        {"name": "vf0", "devargs": "net_ring0", "port_label": "p0", "priority": 10},
        {"name": "vf0b", "devargs": "net_ring5", "port_label": "p1", "priority": 20}]);
    let r = reload(&fx, &cfg).unwrap();
    assert!(
        r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "add backing device vf0b to vnic0"),
        "{r}"
    );
    let (mut c, stop, h) = traffic(&fx);
    std::thread::sleep(Duration::from_millis(100));
    cfg["vnics"][0]["backing"][1]["priority"] = 5.into();
    reload(&fx, &cfg).unwrap();
    let t = Instant::now();
    while fx.vnic("vnic0")["active_backing"] != "vf0b" {
        assert!(t.elapsed() < Duration::from_secs(5), "{}", fx.vnic("vnic0"));
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let (sent, got) = h.join().unwrap();
    assert_eq!(got, sent, "the switch lost frames");
    assert!(fx.vnic("vnic0")["last_switch"]["reason"]
        .as_str()
        .unwrap()
        .contains("fail-back"));
    raw::detach(&mut c).unwrap();
    fx.finish();
}

#[test]
fn a_failing_hot_plug_rolls_the_whole_reload_back() {
    let fx = start();
    let base = base_config(&fx);
    let (mut c, stop, h) = traffic(&fx);
    let mut bad = base.clone();
    bad["vnics"].as_array_mut().unwrap().push(json!({"name": "vnicX", "mac": "02:00:00:00:00:0a", "backing": [{"name": "x0", "devargs": "net_ring8", "port_label": "p0"}]}));
    bad["vnics"][1]["backing"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "vf1b", "devargs": "net_null9,bogus=1", "port_label": "p1"}));
    let e = reload(&fx, &bad).unwrap_err();
    assert_eq!(e.code(), Some("reload_failed"), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("add backing device vf1b to vnic1")
            && msg.contains("rte_dev_probe")
            && msg.contains("nothing was changed"),
        "{msg}"
    );
    let st = fx.status();
    assert_eq!(st["config_generation"], 0);
    assert_eq!(
        st["vnics"].as_array().unwrap().len(),
        2,
        "vnicX was not added"
    );
    assert_eq!(fx.vnic("vnic1")["backing"].as_array().unwrap().len(), 1);
    // The devices built for the failed reload are gone: the same names work in the next one.
    let mut good = base.clone();
    good["vnics"].as_array_mut().unwrap().push(json!({"name": "vnicX", "mac": "02:00:00:00:00:0a", "backing": [{"name": "x0", "devargs": "net_ring8", "port_label": "p0"}]}));
    reload(&fx, &good).unwrap();
    let hist = Client::connect(&fx.admin)
        .unwrap()
        .request("CONFIG_SHOW", json!({}))
        .unwrap();
    let h0 = &hist["history"][0];
    assert_eq!(
        (h0["ok"].as_bool(), h0["generation"].as_u64()),
        (Some(false), Some(0))
    );
    assert_eq!(hist["history"][1]["generation"], 1);
    stop.store(true, Ordering::Relaxed);
    let (sent, got) = h.join().unwrap();
    assert_eq!(got, sent);
    raw::detach(&mut c).unwrap();
    fx.finish();
}

#[test]
fn bad_config_files_are_refused_with_the_field_and_change_nothing() {
    let fx = start();
    let base = base_config(&fx);
    let refuse = |r: Result<Value, vnic_control::client::ClientError>, needle: &str| {
        let e = r.unwrap_err();
        assert_eq!(e.code(), Some("invalid_config"), "{e}");
        assert!(e.to_string().contains(needle), "expected {needle:?} in {e}");
    };
    refuse(
        reload_text(&fx, "{\n  \"vnics\": [\n"),
        "syntax error at line 3",
    );
    let text = serde_json::to_string_pretty(&base).unwrap();
    refuse(reload_text(&fx, &text[..text.len() / 2]), "line"); // half-written file
    let mut j = base.clone();
    j["vnics"][0]["prio"] = 1.into();
    refuse(reload(&fx, &j), "vnics[0].prio: unknown field");
    let mut j = base.clone();
    j["vnics"][0]["mtu"] = 99999.into();
    refuse(reload(&fx, &j), "vnics[0].mtu: 99999 out of range");
    let mut j = base.clone();
    j["vnics"][1]["name"] = "vnic0".into();
    refuse(reload(&fx, &j), "duplicate vNIC name");
    let mut j = base.clone();
    j["vnics"][0]["mac"] = "02:00:00:00:00".into();
    refuse(reload(&fx, &j), "vnics[0].mac: bad MAC");
    let mut j = base.clone();
    j["vnics"][0]["backing"][0]["devargs"] = "memif0".into();
    refuse(reload(&fx, &j), "vnics[0].backing[0].devargs");
    let mut j = base.clone();
    j["vnics"][0]["backing"] = json!([{"name": "p", "devargs": "net_ring0", "port_label": "x"}, {"name": "q", "devargs": "net_ring6", "port_label": "x"}]);
    refuse(reload(&fx, &j), "physical port \"x\" already used");
    let mut j = base.clone();
    j["eal"]["memory_mb"] = 512.into();
    refuse(
        reload(&fx, &j),
        "eal.memory_mb: cannot change while vnicd runs",
    );
    let mut j = base.clone();
    j["metrics"] = json!({"listen": "127.0.0.1:9469"});
    refuse(
        reload(&fx, &j),
        "metrics: cannot change while vnicd runs (restart vnicd to change it)",
    );
    let e = Client::connect(&fx.admin)
        .unwrap()
        .request("RELOAD", json!({"path": "/nonexistent.json"}))
        .unwrap_err();
    assert!(
        e.to_string().contains("cannot read /nonexistent.json"),
        "{e}"
    );
    // Nothing changed, and every refusal is in the history.
    let show = Client::connect(&fx.admin)
        .unwrap()
        .request("CONFIG_SHOW", json!({}))
        .unwrap();
    assert_eq!(show["generation"], 0);
    assert_eq!(show["history"].as_array().unwrap().len(), 11);
    // The status (and the metrics) count them.
    let st = Client::connect(&fx.admin)
        .unwrap()
        .request("STATS", json!({}))
        .unwrap();
    assert_eq!(
        st["tally"],
        json!({"reloads_applied": 0, "reloads_refused": 11, "attaches": 0, "detaches": 0})
    );
    assert!(show["history"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["ok"] == false));
    // A diff shows, without applying.
    let mut j = base.clone();
    j["vnics"][1]["hold_down_ms"] = 5.into();
    let p = fx.dir.join("diff.json");
    std::fs::write(&p, j.to_string()).unwrap();
    let d = Client::connect(&fx.admin)
        .unwrap()
        .request("CONFIG_DIFF", json!({"path": p}))
        .unwrap();
    assert_eq!(d["steps"], json!(["update vNIC vnic1: hold_down_ms"]));
    assert_eq!(fx.status()["config_generation"], 0);
    fx.finish();
}

#[test]
fn a_client_of_a_recreated_vnic_is_told_and_attaches_again() {
    let fx = start();
    let mut cfg = base_config(&fx);
    let mut c = fx.client();
    raw::hello(&mut c, "vnic1", None).unwrap();
    raw::attach(&mut c, 1, 256, 1500, false).unwrap();
    cfg["vnics"][1]["mtu"] = 9000.into();
    let r = reload(&fx, &cfg).unwrap();
    assert_eq!(r["steps"], json!(["recreate vNIC vnic1 (mtu changed)"]));
    std::thread::sleep(Duration::from_millis(50));
    let pushes = c.pushes_json();
    assert!(
        pushes
            .iter()
            .any(|p| p["op"] == "CONFIG_CHANGED" && p["vnic"] == "vnic1"),
        "{pushes:?}"
    );
    assert!(c.heartbeat().is_err(), "the old session is closed");
    let mut c = fx.client();
    raw::hello(&mut c, "vnic1", None).unwrap();
    let caps = raw::caps(&mut c).unwrap();
    assert_eq!(caps["max_mtu"], 9000);
    raw::attach(&mut c, 1, 256, 9000, false).unwrap();
    raw::detach(&mut c).unwrap();
    fx.finish();
}

#[test]
fn moving_a_vnic_between_data_cores_loses_nothing() {
    // Two data cores on this 2-CPU machine: the lcore on CPU 1, and a pinned thread that shares
    // the control CPU (allowed because it backs off when idle).
    let two_cores = json!([{"core": 1, "idle_sleep_us": 20}, {"core": 0, "launch": "thread", "idle_sleep_us": 20}]);
    let tc = two_cores.clone();
    let fx = common::start_with(60_000, move |j| {
        j["vnics"].as_array_mut().unwrap().truncate(2);
        j["data_cores"] = tc;
    });
    let mut cfg = base_config(&fx);
    cfg["data_cores"] = two_cores;
    assert_eq!(fx.vnic("vnic0")["data_core"], 1);
    let (mut c, stop, h) = traffic(&fx);
    let mut seen = 0;
    for (k, core) in [0, 1, 0, 1, 0, 1].into_iter().enumerate() {
        // Each move happens with traffic flowing: frames sent since the last one.
        seen = traffic_moved(seen, 80);
        cfg["vnics"][0]["data_core"] = core.into();
        let r = reload(&fx, &cfg).unwrap();
        assert_eq!(
            r["steps"][0],
            format!("move vNIC vnic0 from core {} to {core}", 1 - core),
            "{k}: {r}"
        );
        assert_eq!(fx.vnic("vnic0")["data_core"], core);
    }
    traffic_moved(seen, 80);
    stop.store(true, Ordering::Relaxed);
    let (sent, got) = h.join().unwrap();
    assert!(sent > 500, "{sent}");
    assert_eq!(got, sent, "frames lost while moving between cores");
    let v = fx.vnic("vnic0");
    assert_eq!(
        (v["rx_packets"].as_u64(), v["tx_packets"].as_u64()),
        (Some(sent as u64), Some(sent as u64)),
        "counters follow the vNIC across cores"
    );
    raw::detach(&mut c).unwrap();
    fx.finish();
}
