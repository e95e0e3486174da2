//! `reload` scenario: vnicd with as many vNICs as this DPDK's port limit allows (one `net_null`
//! device each, in-core bounce clients, so every vNIC carries traffic) on one data core; one vNIC is added and removed by `RELOAD`
//! again and again. Latency is the admin request's round trip (file read, validation, diff,
//! prepare, commit, tables adopted); loss is the drop counters of the untouched vNICs.
use serde::Serialize;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

use vnic_bench::vnicd::{self, Res};

/// Result of the scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadResult {
    pub vnics: usize,
    pub reloads: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Drops on the untouched vNICs while the reloads ran.
    pub untouched_drops: u64,
    /// Frames the untouched vNICs moved meanwhile (they were busy).
    pub untouched_packets: u64,
}

fn cfg(dir: &Path, n: usize, extra: bool) -> serde_json::Value {
    let mut vnics: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            json!({"name": format!("v{i}"), "mac": format!("02:00:00:00:{:02x}:{:02x}", (i + 1) / 256, (i + 1) % 256),
                   "ring_depth": 64, "mbufs": 1023, "allow_spoofing": true,
                   "backing": [{"name": format!("b{i}"), "devargs": format!("net_null{i}"), "port_label": "p0"}]})
        })
        .collect();
    if extra {
        vnics.push(json!({"name": "extra", "mac": "02:00:00:00:ff:01", "ring_depth": 64, "mbufs": 1023,
                          "backing": [{"name": "bx", "devargs": format!("net_null{n}"), "port_label": "p0"}]}));
    }
    json!({
        "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 512},
        "data_cores": [{"core": 1, "idle_sleep_us": 0}],
        "control_socket": dir.join("rc.sock"), "admin_socket": dir.join("ra.sock"),
        "stats_interval_ms": 60000,
        "vnics": vnics
    })
}

fn drops_and_packets(dir: &Path) -> Res<(u64, u64)> {
    let st = vnicd::status(&dir.join("ra.sock"))?;
    let mut d = 0;
    let mut p = 0;
    for v in st["vnics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["name"] != "extra")
    {
        d += ["rx_drops", "tx_drops", "client_drops"]
            .iter()
            .map(|k| v[*k].as_u64().unwrap_or(0))
            .sum::<u64>();
        p += v["tx_packets"].as_u64().unwrap_or(0);
    }
    Ok((d, p))
}

/// Run `reloads` reloads (half adding, half removing the extra vNIC) on `n` vNICs.
pub fn run(vnicd: &Path, dir: &Path, n: usize, reloads: usize) -> Res<ReloadResult> {
    let path = dir.join("reload-bench.json");
    let mut vd = vnicd::spawn(
        vnicd,
        &path,
        &cfg(dir, n, false),
        &["--inline-client", "bounce"],
        false,
    )?;
    vnicd::wait_for(
        &dir.join("ra.sock"),
        &mut vd,
        "vnicd",
        Duration::from_secs(60),
        |_| true,
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let (d0, p0) = drops_and_packets(dir)?;
    let mut h = hdrhistogram::Histogram::<u64>::new(3)?;
    for k in 0..reloads {
        std::fs::write(&path, cfg(dir, n, k % 2 == 0).to_string())?;
        let t = Instant::now();
        vnicd::admin(&dir.join("ra.sock"), "RELOAD", json!({}))?;
        h.record(t.elapsed().as_micros() as u64)?;
    }
    let (d1, p1) = drops_and_packets(dir)?;
    vd.stop(Duration::from_secs(20));
    Ok(ReloadResult {
        vnics: n,
        reloads,
        p50_ms: h.value_at_quantile(0.5) as f64 / 1e3,
        p99_ms: h.value_at_quantile(0.99) as f64 / 1e3,
        max_ms: h.max() as f64 / 1e3,
        untouched_drops: d1 - d0,
        untouched_packets: p1 - p0,
    })
}
