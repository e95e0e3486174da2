//! Control-plane scenarios of `vnic-bench`:
//! - `client`: one vNIC on a `net_null` backing device, served by the in-core reflect client on
//!   the data core (CPU 1) vs by a `vnic-client reflect` process on its own CPU (0) through
//!   shared hugepage memory. Rate: vnicd's tx counter, read over the admin socket.
//! - `attach`: ATTACH then DETACH 1000 times over the control socket; latency of each, as the
//!   client sees it (rings created, table published and acknowledged by the data core; table
//!   withdrawn, rings drained).
use serde::Serialize;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use vnic_bench::procs::Guard;

use vnic_bench::vnicd::{self, Res};

/// One client-path trial.
#[derive(Debug, Clone, Serialize)]
pub struct ClientTrial {
    pub round: u32,
    pub client: &'static str,
    pub mpps: f64,
}

/// Latency percentiles in µs.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

fn vnicd_config(dir: &Path, shared: bool) -> serde_json::Value {
    let mut eal = json!({"cores": [0, 1], "main_core": 0, "memory_mb": 512});
    if shared {
        eal["hugepages"] = json!("on");
        eal["file_prefix"] = json!(format!("vnicb{}", std::process::id()));
    }
    json!({
        "eal": eal,
        "data_cores": [{"core": 1, "idle_sleep_us": 0}],
        "control_socket": dir.join("control.sock"),
        "admin_socket": dir.join("admin.sock"),
        "stats_interval_ms": 60000,
        "vnics": [{"name": "vnic0", "mac": "02:00:00:00:00:01", "allow_spoofing": true,
                   "backing": [{"name": "vf0", "devargs": "net_null0", "port_label": "p0"}]}]
    })
}

fn start_vnicd(vnicd: &Path, dir: &Path, cfg: &serde_json::Value, inline: bool) -> Res<Guard> {
    let args: &[&str] = if inline {
        &["--inline-client", "reflect"]
    } else {
        &[]
    };
    let mut g = vnicd::spawn(vnicd, &dir.join("vnicd-client.json"), cfg, args, false)?;
    vnicd::wait_for(
        &dir.join("admin.sock"),
        &mut g,
        "vnicd",
        Duration::from_secs(20),
        |_| true,
    )?;
    Ok(g)
}

fn tx_packets(admin: &Path) -> Res<(u64, String)> {
    let st = vnicd::status(admin)?;
    let v = &st["vnics"][0];
    Ok((
        v["tx_packets"].as_u64().unwrap_or(0),
        v["state"].as_str().unwrap_or("").to_string(),
    ))
}

/// `client` scenario: in-core vs separate-process reflect client.
pub fn client_trials(vnicd: &Path, dir: &Path, rounds: u32, seconds: f64) -> Res<Vec<ClientTrial>> {
    let mut out = Vec::new();
    for r in 0..rounds {
        let mut order = ["in-core", "process"];
        if r % 2 == 1 {
            order.reverse();
        }
        for kind in order {
            let shared = kind == "process";
            let mut vd = start_vnicd(vnicd, dir, &vnicd_config(dir, shared), !shared)?;
            let mut client = None;
            if shared {
                let sock = dir.join("control.sock");
                client = Some(vnicd::client(
                    vnicd,
                    "reflect",
                    "vnic0",
                    &sock,
                    0,
                    &[],
                    vnicd::Output::Drop,
                )?);
                vnicd::wait_all_attached(&dir.join("admin.sock"), &mut vd)?;
            }
            std::thread::sleep(Duration::from_millis(500));
            let admin = dir.join("admin.sock");
            let (a, _) = tx_packets(&admin)?;
            let t = Instant::now();
            std::thread::sleep(Duration::from_secs_f64(seconds));
            let (b, _) = tx_packets(&admin)?;
            let mpps = (b - a) as f64 / t.elapsed().as_secs_f64() / 1e6;
            if let Some(mut c) = client {
                c.stop(Duration::from_secs(5));
            }
            vd.stop(Duration::from_secs(10));
            eprintln!("  client round {} {kind:<8} {mpps:.2} Mpps", r + 1);
            out.push(ClientTrial {
                round: r,
                client: if shared { "process" } else { "in-core" },
                mpps,
            });
        }
    }
    Ok(out)
}

/// `attach` scenario: ATTACH/DETACH latency over `cycles` cycles.
pub fn attach_latency(vnicd: &Path, dir: &Path, cycles: u32) -> Res<(Latency, Latency)> {
    let mut vd = start_vnicd(vnicd, dir, &vnicd_config(dir, false), false)?;
    let mut c = vnic_control::client::Client::connect(&dir.join("control.sock"))?;
    c.hello("vnic0", None)?;
    let mut ha = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut hd = hdrhistogram::Histogram::<u64>::new(3)?;
    for _ in 0..cycles {
        let t = Instant::now();
        c.attach(1, 1024, 1500, false)?;
        ha.record(t.elapsed().as_nanos() as u64)?;
        let t = Instant::now();
        c.detach()?;
        hd.record(t.elapsed().as_nanos() as u64)?;
    }
    drop(c);
    vd.stop(Duration::from_secs(10));
    let lat = |h: &hdrhistogram::Histogram<u64>| Latency {
        samples: h.len(),
        p50_us: h.value_at_quantile(0.50) as f64 / 1e3,
        p90_us: h.value_at_quantile(0.90) as f64 / 1e3,
        p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
        max_us: h.max() as f64 / 1e3,
    };
    Ok((lat(&ha), lat(&hd)))
}
