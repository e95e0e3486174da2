//! `scale` scenario: N vNICs on one data core, each on its own `net_null` device with an in-core
//! bounce client, so every vNIC is busy; the aggregate rate against the 1-vNIC rate shows what
//! the per-vNIC work costs. (DPDK here has 32 ethdev ports, one per backing device.)
use serde::Serialize;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

use vnic_bench::vnicd::{self, Res};

/// One vNIC count.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRow {
    pub vnics: usize,
    pub mpps: Vec<f64>,
    pub median_mpps: f64,
    pub vs_one: f64,
}

fn one(vnicd: &Path, dir: &Path, n: usize, seconds: f64) -> Res<f64> {
    let vnics: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            json!({"name": format!("v{i}"), "mac": format!("02:00:00:00:{:02x}:{:02x}", (i + 1) / 256, (i + 1) % 256),
                   "ring_depth": 256, "mbufs": 2047, "allow_spoofing": true,
                   "backing": [{"name": format!("b{i}"), "devargs": format!("net_null{i}"), "port_label": "p0"}]})
        })
        .collect();
    let cfg = json!({
        "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 512},
        "data_cores": [{"core": 1, "idle_sleep_us": 0}],
        "control_socket": dir.join("sc.sock"), "admin_socket": dir.join("sa.sock"),
        "stats_interval_ms": 60000, "vnics": vnics
    });
    let secs = format!("{seconds}");
    let args = [
        "--inline-client",
        "bounce",
        "--json-summary",
        "--duration",
        secs.as_str(),
    ];
    let mut g = vnicd::spawn(vnicd, &dir.join("scale.json"), &cfg, &args, true)?;
    let (out, _) = g.collect_output();
    let st = g
        .wait_timeout(Duration::from_secs_f64(seconds + 30.0))
        .ok_or("vnicd did not finish")?;
    g.child.take();
    if !st.success() {
        return Err(format!("vnicd exited with {st}").into());
    }
    Ok(vnicd::tx_mpps(&vnicd::summary(
        &out.join().unwrap_or_default(),
    )?))
}

/// Measure each count `reps` times (order rotates).
pub fn run(
    vnicd: &Path,
    dir: &Path,
    counts: &[usize],
    reps: u32,
    seconds: f64,
) -> Res<Vec<ScaleRow>> {
    let mut rows: Vec<ScaleRow> = counts
        .iter()
        .map(|&n| ScaleRow {
            vnics: n,
            mpps: vec![],
            median_mpps: 0.0,
            vs_one: 0.0,
        })
        .collect();
    for r in 0..reps as usize {
        for k in 0..rows.len() {
            let i = (k + r) % rows.len();
            let m = one(vnicd, dir, rows[i].vnics, seconds)?;
            eprintln!("  {} vNICs: {m:.2} Mpps", rows[i].vnics);
            rows[i].mpps.push(m);
        }
    }
    for row in &mut rows {
        let mut v = row.mpps.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        row.median_mpps = v[v.len() / 2];
    }
    let base = rows.first().map(|r| r.median_mpps).unwrap_or(f64::NAN);
    for row in &mut rows {
        row.vs_one = row.median_mpps / base;
    }
    Ok(rows)
}
