//! `failover` scenario: a vNIC with two backing devices, `b` a memif behind a reflecting
//! dpdk-testpmd peer and `a` (the active one) either the same or a net_tap; `vnic-client source`
//! sends at a constant rate. Three kinds of trial:
//! - peer killed: SIGKILL to `a`'s memif peer. Its ring stops draining at once, but the kernel
//!   closes the peer's sockets (memif's only link signal) only after it has torn the process
//!   down, 20–30 ms later here, so the data core's refuse window sees it first, once `a`'s ring
//!   (1024 slots) is full: the outage is ring ÷ rate + the window;
//! - link down: `ip link set down` on `a`'s tap, a fault the device reports at once (its writes
//!   fail);
//! - planned: `FAILOVER` over the admin socket.
//!
//! Outage = frames lost ÷ offered rate; frames lost = sent − what reached a live receiver (the
//! client's count of what came back, or for a tap the kernel's rx counter plus `b`'s peer).
//! A failover before the fault (a peer starved of the CPU for longer than its ring lasts looks
//! like a stalled one) is counted and the trial run again from the start.
use serde::Serialize;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use vnic_bench::procs::Guard;
use vnic_bench::testpmd::Testpmd;

use vnic_bench::vnicd::{self, Res};

/// What ends the active device's service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    PeerKilled,
    LinkDown,
    Planned,
}

impl Fault {
    pub const ALL: [Fault; 3] = [Fault::PeerKilled, Fault::LinkDown, Fault::Planned];

    /// The row label in the report (and in result files compared across runs).
    pub fn label(self) -> &'static str {
        match self {
            Fault::PeerKilled => "unplanned (peer killed)",
            Fault::LinkDown => "unplanned (link down)",
            Fault::Planned => "planned",
        }
    }
}

/// One repetition.
#[derive(Debug, Clone, Serialize)]
pub struct FailTrial {
    pub fault: Fault,
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
    /// From the fault injected to the device marked down (µs; the injecting command's own time
    /// included).
    pub fault_to_down_us: Option<i64>,
    /// Failovers of the healthy device before the fault, each followed by a fresh start.
    pub false_failovers: u32,
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

/// A trial that cannot be measured: the healthy device failed over before the fault.
const FALSE_FAILOVER: &str = "the healthy device failed over before the fault";

/// One repetition; `rate` frames/s. A false failover before the fault is retried (up to 5 times).
pub fn trial(vnicd: &Path, dir: &Path, fault: Fault, rate: u64, seq: usize) -> Res<FailTrial> {
    let mut false_failovers = 0;
    loop {
        match attempt(vnicd, dir, fault, rate, seq) {
            Err(e) if e.to_string() == FALSE_FAILOVER && false_failovers < 5 => {
                false_failovers += 1
            }
            Ok(mut t) => {
                t.false_failovers = false_failovers;
                return Ok(t);
            }
            Err(e) => return Err(e),
        }
    }
}

fn tap_rx(tap: &str) -> Res<u64> {
    let p = format!("/sys/class/net/{tap}/statistics/rx_packets");
    Ok(std::fs::read_to_string(&p)
        .map_err(|e| format!("{p}: {e}"))?
        .trim()
        .parse()?)
}

fn attempt(vnicd: &Path, dir: &Path, fault: Fault, rate: u64, seq: usize) -> Res<FailTrial> {
    let huge = true;
    let tap = format!("vfb{}t{seq}", std::process::id() % 10_000);
    let pa = (fault != Fault::LinkDown)
        .then(|| peer(dir, 0, huge))
        .transpose()?;
    let mut pb = peer(dir, 1, huge)?;
    let sock = |i: usize| dir.join(format!("w{i}.sock")).display().to_string();
    let a_dev = if fault == Fault::LinkDown {
        format!("net_tap0,iface={tap}")
    } else {
        format!("net_memif0,role=client,socket={},id=0", sock(0))
    };
    let cfg = json!({
        "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 512, "hugepages": "on",
                "file_prefix": format!("vnicf{}", std::process::id())},
        "data_cores": [{"core": 1, "idle_sleep_us": 50}],
        "control_socket": dir.join("c.sock"), "admin_socket": dir.join("a.sock"),
        "stats_interval_ms": 60000,
        "vnics": [{"name": "vnic0", "mac": "02:00:00:00:00:01", "hold_down_ms": 600000, "announce_rounds": 0,
                   "backing": [
                       {"name": "a", "devargs": a_dev, "priority": 10, "port_label": "p0"},
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
    let failovers_at_start = vnic0(dir)?["failover_count"].as_u64();
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
    let before = vnic0(dir)?;
    if before["failover_count"].as_u64() != failovers_at_start || before["active_backing"] != "a" {
        client.signal(libc::SIGKILL);
        vd.stop(Duration::from_secs(10));
        return Err(FALSE_FAILOVER.into());
    }
    let injected_us = unix_us();
    match fault {
        Fault::Planned => vnicd::admin(
            &dir.join("a.sock"),
            "FAILOVER",
            json!({"vnic": "vnic0", "to": "b"}),
        )
        .map(drop)?,
        Fault::PeerKilled => {
            // The wire behind the active device dies at once.
            let pid = pa
                .as_ref()
                .and_then(Testpmd::pid)
                .ok_or("peer a has no pid")?;
            Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .map(drop)?
        }
        Fault::LinkDown => {
            let st = Command::new("ip")
                .args(["link", "set", &tap, "down"])
                .status()?;
            if !st.success() {
                return Err(format!("ip link set {tap} down: {st}").into());
            }
        }
    }
    wait(dir, &mut vd, "active on b", |v| {
        v["active_backing"] == "b" && v["link_up"] == true
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let v = vnic0(dir)?;
    let (sent, client_rx) = vnicd::stop_client(&mut client, err, Duration::from_secs(5))?;
    // A tap reflects nothing: what reached a live receiver is what its kernel side took in
    // before the link went down plus what reached b's peer.
    let received = if fault == Fault::LinkDown {
        tap_rx(&tap)? + pb.port_stats()?[0].rx_packets
    } else {
        client_rx
    };
    vd.stop(Duration::from_secs(10));
    drop(pb);
    drop(pa);
    let lost = sent.saturating_sub(received);
    let ls = &v["last_switch"];
    Ok(FailTrial {
        fault,
        sent,
        received,
        lost,
        outage_ms: lost as f64 / rate as f64 * 1e3,
        detection_us: ls["detection_us"].as_u64().unwrap_or(0),
        switch_us: ls["switch_us"].as_u64().unwrap_or(0),
        vnicd_rx_drops: v["rx_drops"].as_u64().unwrap_or(0),
        vnicd_tx_drops: v["tx_drops"].as_u64().unwrap_or(0),
        detected_by: ls["detected_by"].as_str().map(str::to_string),
        reroute_us: ls["reroute_us"].as_u64(),
        first_frame_us: ls["first_frame_us"].as_u64(),
        fault_to_down_us: ls["failed_at_unix_us"]
            .as_u64()
            .filter(|_| fault != Fault::Planned)
            .map(|t| t as i64 - injected_us),
        false_failovers: 0,
    })
}

fn unix_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
