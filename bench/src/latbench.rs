//! `latency` scenario: `vnic-client source --latency` puts a TSC timestamp in every frame; a
//! reflecting dpdk-testpmd peer behind the vNIC's memif device sends it back; the client records
//! the round trip (client ring → vnicd → memif → peer → memif → vnicd → client ring) in an
//! HDR histogram, at several offered rates.
use serde::Serialize;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

use vnic_bench::vnicd::{self, Res};

/// Percentiles at one rate.
#[derive(Debug, Clone, Serialize)]
pub struct LatRow {
    pub rate: u64,
    pub line: String,
}

/// Run at each rate for `seconds`.
pub fn run(vnicd: &Path, dir: &Path, rates: &[u64], seconds: f64) -> Res<Vec<LatRow>> {
    let _peer = crate::failbench::peer(dir, 0, true)?;
    let sock = dir.join("w0.sock").display().to_string();
    let cfg = json!({
        "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 512, "hugepages": "on",
                "file_prefix": format!("vnicl{}", std::process::id())},
        "data_cores": [{"core": 1, "idle_sleep_us": 20}],
        "control_socket": dir.join("lc.sock"), "admin_socket": dir.join("la.sock"),
        "stats_interval_ms": 60000,
        "vnics": [{"name": "vnic0", "mac": "02:00:00:00:00:01",
                   "backing": [{"name": "a", "devargs": format!("net_memif0,role=client,socket={sock},id=0"), "port_label": "p0"}]}]
    });
    let mut vd = vnicd::spawn(vnicd, &dir.join("vnicd-latency.json"), &cfg, &[], false)?;
    vnicd::wait_for(
        &dir.join("la.sock"),
        &mut vd,
        "the memif link",
        Duration::from_secs(20),
        |st| st["vnics"][0]["link_up"] == true,
    )?;
    let mut rows = Vec::new();
    for &rate in rates {
        let (rate_s, secs) = (rate.to_string(), format!("{seconds}"));
        let extra = [
            "--latency",
            "--rate",
            rate_s.as_str(),
            "--duration",
            secs.as_str(),
        ];
        let sock = dir.join("lc.sock");
        let mut c = vnicd::client(
            vnicd,
            "source",
            "vnic0",
            &sock,
            1,
            &extra,
            vnicd::Output::Capture,
        )?;
        let (out, _) = c.collect_output();
        c.wait_timeout(Duration::from_secs_f64(seconds + 20.0))
            .ok_or("vnic-client did not finish")?;
        c.child.take();
        let text = out.join().unwrap_or_default();
        let line = text
            .lines()
            .find(|l| l.starts_with("latency_us"))
            .ok_or("no latency from the client")?
            .to_string();
        eprintln!("  {rate} frames/s: {line}");
        rows.push(LatRow { rate, line });
    }
    vd.stop(Duration::from_secs(10));
    Ok(rows)
}
