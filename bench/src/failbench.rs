//! `failover` scenario: a vNIC with two memif backing devices, each behind its own reflecting
//! dpdk-testpmd peer; `vnic-client source` sends at a constant rate and counts what comes back.
//! Unplanned: the active device's peer is killed (SIGKILL); planned: `FAILOVER` over the admin
//! socket. Outage = frames lost ÷ offered rate.
use serde::Serialize;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use vnic_bench::procs::Guard;
use vnic_bench::testpmd::Testpmd;

use vnic_bench::vnicd::{self, Res};

/// One repetition.
#[derive(Debug, Clone, Serialize)]
pub struct FailTrial {
    pub planned: bool,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub outage_ms: f64,
    pub detection_us: u64,
    pub switch_us: u64,
    /// vnicd's own drop counters for the vNIC (where lost frames were dropped, if by vnicd).
    pub vnicd_rx_drops: u64,
    pub vnicd_tx_drops: u64,
    /// Unplanned: who saw the failure first, and from the device marked down to the data core
    /// sending on the backup and to the backup's first accepted frame.
    pub detected_by: Option<String>,
    pub reroute_us: Option<u64>,
    pub first_frame_us: Option<u64>,
    /// From the kill to the device marked down (µs; the kill's own time included).
    pub kill_to_down_us: Option<i64>,
}

fn vnic0(dir: &Path) -> Res<serde_json::Value> {
    Ok(vnicd::status(&dir.join("a.sock"))?["vnics"][0].clone())
}

fn wait(dir: &Path, vd: &mut Guard, what: &str, f: impl Fn(&serde_json::Value) -> bool) -> Res<()> {
    vnicd::wait_for(
        &dir.join("a.sock"),
        vd,
        what,
        Duration::from_secs(20),
        |st| f(&st["vnics"][0]),
    )
}

pub fn peer(dir: &Path, i: usize, huge: bool) -> Res<Testpmd> {
    Ok(vnic_bench::testpmd::memif_reflector(
        &dir.join(format!("w{i}.sock")),
        i,
        huge,
    )?)
}

/// One repetition; `rate` frames/s.
pub fn trial(vnicd: &Path, dir: &Path, planned: bool, rate: u64) -> Res<FailTrial> {
    let huge = true;
    let pa = peer(dir, 0, huge)?;
    let pb = peer(dir, 1, huge)?;
    let sock = |i: usize| dir.join(format!("w{i}.sock")).display().to_string();
    let cfg = json!({
        "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 512, "hugepages": "on",
                "file_prefix": format!("vnicf{}", std::process::id())},
        "data_cores": [{"core": 1, "idle_sleep_us": 50}],
        "control_socket": dir.join("c.sock"), "admin_socket": dir.join("a.sock"),
        "stats_interval_ms": 60000,
        "vnics": [{"name": "vnic0", "mac": "02:00:00:00:00:01", "hold_down_ms": 600000, "announce_rounds": 0,
                   "backing": [
                       {"name": "a", "devargs": format!("net_memif0,role=client,socket={},id=0", sock(0)), "priority": 10, "port_label": "p0"},
                       {"name": "b", "devargs": format!("net_memif1,role=client,socket={},id=0", sock(1)), "priority": 20, "port_label": "p1"}]}]
    });
    let mut vd = vnicd::spawn(vnicd, &dir.join("vnicd-failover.json"), &cfg, &[], false)?;
    wait(dir, &mut vd, "both links up", |v| {
        v["backing"]
            .as_array()
            .is_some_and(|b| b.iter().all(|b| b["link_up"] == true))
            && v["link_up"] == true
    })?;
    // Whichever link came up first carried the vNIC first; start every trial from `a`.
    if vnic0(dir)?["active_backing"] != "a" {
        vnicd::admin(
            &dir.join("a.sock"),
            "FAILOVER",
            json!({"vnic": "vnic0", "to": "a"}),
        )?;
    }
    let rate_s = rate.to_string();
    let sock = dir.join("c.sock");
    let mut client = vnicd::client(
        vnicd,
        "source",
        "vnic0",
        &sock,
        1,
        &["--rate", &rate_s],
        vnicd::Output::Capture,
    )?;
    let (_, err) = client.collect_output();
    wait(dir, &mut vd, "the client attached", |v| {
        v["state"] == "attached"
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let mut killed_us = 0i64;
    if planned {
        vnicd::admin(
            &dir.join("a.sock"),
            "FAILOVER",
            json!({"vnic": "vnic0", "to": "b"}),
        )?;
    } else if let Some(pid) = pa.pid() {
        // The wire behind the active device dies at once.
        killed_us = unix_us();
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()?;
    }
    wait(dir, &mut vd, "active on b", |v| {
        v["active_backing"] == "b" && v["link_up"] == true
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let v = vnic0(dir)?;
    client.signal(libc::SIGINT);
    client
        .wait_timeout(Duration::from_secs(5))
        .ok_or("vnic-client did not stop")?;
    client.child.take();
    let text = err.join().unwrap_or_default();
    // "vnic-client: detached (...); rx N tx N drops D in S s"
    let num = |key: &str| -> Option<u64> {
        let line = text.lines().rev().find(|l| l.contains("detached ("))?;
        line.split(key)
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let (received, sent) = (
        num(" rx ").ok_or("no client summary")?,
        num(" tx ").ok_or("no client summary")?,
    );
    vd.stop(Duration::from_secs(10));
    drop(pb);
    drop(pa);
    let lost = sent.saturating_sub(received);
    Ok(FailTrial {
        planned,
        sent,
        received,
        lost,
        outage_ms: lost as f64 / rate as f64 * 1e3,
        detection_us: v["last_switch"]["detection_us"].as_u64().unwrap_or(0),
        switch_us: v["last_switch"]["switch_us"].as_u64().unwrap_or(0),
        vnicd_rx_drops: v["rx_drops"].as_u64().unwrap_or(0),
        vnicd_tx_drops: v["tx_drops"].as_u64().unwrap_or(0),
        detected_by: v["last_switch"]["detected_by"].as_str().map(str::to_string),
        reroute_us: v["last_switch"]["reroute_us"].as_u64(),
        first_frame_us: v["last_switch"]["first_frame_us"].as_u64(),
        kill_to_down_us: v["last_switch"]["failed_at_unix_us"]
            .as_u64()
            .filter(|_| !planned)
            .map(|t| t as i64 - killed_us),
    })
}

fn unix_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
