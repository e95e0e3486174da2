//! The closed-loop forwarding A/B of the foundation issue (`null`, `memif`): vnicd vs testpmd
//! io on two `net_null` ports and on a seeded memif loop, trial by trial.
use crate::{median, Res, Scenario};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vnic_bench::testpmd::{Testpmd, TestpmdOpts};
use vnic_bench::vnicd;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Dut {
    TestpmdIo,
    VnicdLcore,
    VnicdThread,
}

impl Dut {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Dut::TestpmdIo => "testpmd-io",
            Dut::VnicdLcore => "vnicd-lcore",
            Dut::VnicdThread => "vnicd-thread",
        }
    }
}

pub(crate) const DUTS: [Dut; 3] = [Dut::TestpmdIo, Dut::VnicdLcore, Dut::VnicdThread];

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Trial {
    pub(crate) scenario: Scenario,
    pub(crate) dut: Dut,
    pub(crate) round: u32,
    pub(crate) mpps: f64,
    /// Busy cycles per forwarded packet on the DUT's core.
    pub(crate) cycles_per_packet: Option<f64>,
    /// vnicd only: share of loop iterations that found nothing.
    pub(crate) idle_share: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    pub(crate) scenario: Scenario,
    pub(crate) dut: Dut,
    pub(crate) median_mpps: f64,
    pub(crate) min_mpps: f64,
    pub(crate) max_mpps: f64,
    pub(crate) median_cycles_per_packet: Option<f64>,
    /// median / testpmd median
    pub(crate) ratio_of_medians: f64,
    /// median over rounds of (this trial / testpmd trial of the same round)
    pub(crate) median_round_ratio: f64,
    /// best / testpmd best (noise only ever slows a trial down)
    pub(crate) ratio_of_best: f64,
}

#[derive(Clone)]
pub(crate) struct Env {
    /// Frame length the wire seeds (memif).
    pub(crate) frame_len: u32,
    pub(crate) dir: PathBuf,
    pub(crate) huge: bool,
    pub(crate) vnicd: PathBuf,
    pub(crate) seconds: f64,
    pub(crate) seed_bursts: u32,
}

pub(crate) fn sock(dir: &Path, i: usize) -> String {
    dir.join(format!("bench{i}.sock")).display().to_string()
}

/// The two ports the DUT forwards between, as devargs.
pub(crate) fn dut_vdevs(env: &Env, sc: Scenario) -> Vec<String> {
    (0..2)
        .map(|i| match sc {
            Scenario::Memif => {
                format!("net_memif{i},role=client,socket={},id=0", sock(&env.dir, i))
            }
            _ => format!("net_null{i}"),
        })
        .collect()
}

pub(crate) fn port_rate(
    a: &[vnic_bench::testpmd::PortCounters],
    b: &[vnic_bench::testpmd::PortCounters],
    secs: f64,
    rx: bool,
) -> f64 {
    let n: u64 = b
        .iter()
        .zip(a)
        .map(|(b, a)| {
            if rx {
                b.rx_packets - a.rx_packets
            } else {
                b.tx_packets - a.tx_packets
            }
        })
        .sum();
    n as f64 / secs / 1e6
}

/// Seed the wire once its links are up (a command-line --tx-first would fire into a down link),
/// measure its receive rate over the window, stop it.
pub(crate) fn wire_rate(w: &mut Testpmd, env: &Env) -> Res<f64> {
    w.wait_links(&[0, 1], Duration::from_secs(10))?;
    if env.frame_len != 64 {
        w.cmd(&format!("set txpkts {}", env.frame_len))?;
    }
    w.cmd(&format!("start tx_first {}", env.seed_bursts))?;
    let r = window(w, env, true)?;
    w.cmd("stop")?;
    Ok(r)
}

/// Measure a window on `p`'s port counters (rx or tx), after a 1 s warm-up.
pub(crate) fn window(p: &mut Testpmd, env: &Env, rx: bool) -> Res<f64> {
    std::thread::sleep(Duration::from_secs(1));
    let a = p.port_stats()?;
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(env.seconds));
    let b = p.port_stats()?;
    let mpps = port_rate(&a, &b, t.elapsed().as_secs_f64(), rx);
    if mpps == 0.0 {
        return Err(format!("no traffic; testpmd said: {:?}", p.tail(10)).into());
    }
    Ok(mpps)
}

pub(crate) fn trial(env: &Env, sc: Scenario, dut: Dut, round: u32) -> Res<Trial> {
    let mut wire = if matches!(sc, Scenario::Memif) {
        for i in 0..2 {
            let _ = std::fs::remove_file(sock(&env.dir, i));
        }
        let vdevs = (0..2)
            .map(|i| format!("net_memif{i},role=server,socket={},id=0", sock(&env.dir, i)))
            .collect();
        // Not started yet: `start tx_first` starts forwarding and seeds at once.
        Some(Testpmd::spawn(&TestpmdOpts::io(
            0, 1, vdevs, env.huge, "paired",
        ))?)
    } else {
        None
    };
    let vdevs = dut_vdevs(env, sc);
    let t = match dut {
        Dut::TestpmdIo => {
            let mut o = TestpmdOpts::io(1, 0, vdevs, env.huge, "paired");
            o.extra.push("--record-core-cycles".into());
            let mut d = Testpmd::spawn(&o)?;
            d.cmd("start")?;
            let mpps = match wire.as_mut() {
                Some(w) => wire_rate(w, env)?,
                None => window(&mut d, env, false)?,
            };
            let cyc = d.stop_cycles_per_packet()?;
            d.quit();
            Trial {
                scenario: sc,
                dut,
                round,
                mpps,
                cycles_per_packet: cyc,
                idle_share: None,
            }
        }
        Dut::VnicdLcore | Dut::VnicdThread => {
            let launch = if dut == Dut::VnicdThread {
                "thread"
            } else {
                "lcore"
            };
            let cfg = serde_json::json!({
                "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 512},
                "data_cores": [{"core": 1, "launch": launch, "idle_sleep_us": 0}],
                "control_socket": env.dir.join("control.sock"),
                "admin_socket": env.dir.join("admin.sock"),
                "stats_interval_ms": 60000,
                "vnics": (0..2).map(|i| serde_json::json!({
                    "name": format!("vnic{i}"),
                    "mac": format!("02:00:00:00:00:{:02x}", i + 1),
                    // bounce returns frames as they came: their source MAC is not the vNIC's
                    "allow_spoofing": true,
                    "backing": [{"name": format!("vf{i}"), "devargs": vdevs[i], "port_label": format!("p{i}")}]
                })).collect::<Vec<_>>()
            });
            let mut args: Vec<String> = ["--json-summary", "--inline-client", "bounce"]
                .map(String::from)
                .to_vec();
            if sc == Scenario::Null {
                // Totals since start over vnicd's own clock; null traffic is steady from the
                // first burst, so no warm-up is needed.
                args.extend(["--duration".into(), format!("{}", env.seconds + 1.0)]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut g = vnicd::spawn(&env.vnicd, &env.dir.join("vnicd.json"), &cfg, &args, true)?;
            let (reader, ereader) = g.collect_output();
            let wire_mpps = match wire.as_mut() {
                Some(w) => {
                    let r = wire_rate(w, env)?;
                    std::thread::sleep(Duration::from_millis(100));
                    g.signal(libc::SIGINT);
                    Some(r)
                }
                None => None,
            };
            let st = g
                .wait_timeout(Duration::from_secs(env.seconds as u64 + 20))
                .ok_or("vnicd did not exit")?;
            g.child.take();
            let s = reader.join().unwrap_or_default();
            let e = ereader.join().unwrap_or_default();
            if !st.success() {
                return Err(format!("vnicd exited with {st}: {e}").into());
            }
            let j = vnicd::summary(&s)?;
            let core = &j["status"]["cores"][0];
            let f = |k: &str| core[k].as_f64().unwrap_or(0.0);
            let (packets, busy, loops, busy_loops) =
                (f("packets"), f("busy_cycles"), f("loops"), f("busy_loops"));
            let mpps = wire_mpps.unwrap_or_else(|| vnicd::tx_mpps(&j));
            Trial {
                scenario: sc,
                dut,
                round,
                mpps,
                // `packets` counts hops (VF->ring and ring->VF): a forwarded packet is two.
                cycles_per_packet: (packets > 0.0).then(|| busy / (packets / 2.0)),
                idle_share: (loops > 0.0).then(|| 1.0 - busy_loops / loops),
            }
        }
    };
    if let Some(w) = wire {
        w.quit();
    }
    Ok(t)
}

/// Per scenario and device under test: medians and ratios against testpmd io over the rounds,
/// the Markdown table and the goal lines.
pub(crate) fn summarize(
    trials: &[Trial],
    closed: &[Scenario],
    closed_rounds: u32,
) -> (Vec<Summary>, String, Vec<String>) {
    let mut md = String::new();
    let mut goals = Vec::new();
    macro_rules! out {
        ($md:ident, $($t:tt)*) => {{
            $md.push_str(&format!($($t)*));
            $md.push('\n');
        }};
    }
    let mut summaries = Vec::new();
    for &sc in closed {
        let of = |d: Dut| {
            trials
                .iter()
                .filter(|t: &&Trial| t.scenario == sc && t.dut == d)
                .collect::<Vec<_>>()
        };
        let base = of(Dut::TestpmdIo);
        let base_med = median(&base.iter().map(|t| t.mpps).collect::<Vec<_>>());
        let base_best = base.iter().map(|t| t.mpps).fold(0.0, f64::max);
        for d in DUTS {
            let ts = of(d);
            if ts.is_empty() {
                continue;
            }
            let v: Vec<f64> = ts.iter().map(|t| t.mpps).collect();
            let c: Vec<f64> = ts.iter().filter_map(|t| t.cycles_per_packet).collect();
            let rr: Vec<f64> = ts
                .iter()
                .filter_map(|t| {
                    base.iter()
                        .find(|b| b.round == t.round)
                        .map(|b| t.mpps / b.mpps)
                })
                .collect();
            let best = v.iter().cloned().fold(0.0, f64::max);
            summaries.push(Summary {
                scenario: sc,
                dut: d,
                median_mpps: median(&v),
                min_mpps: v.iter().cloned().fold(f64::INFINITY, f64::min),
                max_mpps: best,
                median_cycles_per_packet: (!c.is_empty()).then(|| median(&c)),
                ratio_of_medians: median(&v) / base_med,
                median_round_ratio: median(&rr),
                ratio_of_best: best / base_best,
            });
        }
    }
    if !summaries.is_empty() {
        out!(md, "");
        out!(md, "Closed loop (seeded, no pacing; the DUT's forwarding limit), Mpps over {closed_rounds} rounds");
        out!(md, "");
        out!(md, "| scenario | device under test | median Mpps | min | max | cycles/pkt | ratio of medians | median per-round ratio | ratio of best |");
        out!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    }
    for s in &summaries {
        out!(
            md,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {} | {:.3} | {:.3} | {:.3} |",
            s.scenario.name(),
            s.dut.name(),
            s.median_mpps,
            s.min_mpps,
            s.max_mpps,
            s.median_cycles_per_packet
                .map(|c| format!("{c:.1}"))
                .unwrap_or("-".into()),
            s.ratio_of_medians,
            s.median_round_ratio,
            s.ratio_of_best
        );
    }
    for s in summaries.iter().filter(|s| s.dut != Dut::TestpmdIo) {
        goals.push(format!(
            "closed loop {} {}: {:.3} x testpmd io (median per-round ratio); goal >= {} {}",
            s.scenario.name(),
            s.dut.name(),
            s.median_round_ratio,
            crate::goals::VS_TESTPMD_IO,
            if s.median_round_ratio >= crate::goals::VS_TESTPMD_IO {
                "met"
            } else {
                "NOT met"
            }
        ));
    }
    (summaries, md, goals)
}
