//! `vnic-bench`: vnicd's forwarding rate against `dpdk-testpmd --forward-mode=io` on the same vdev
//! topology and the same pinned core (CPU 1), alternating A/B in one run.
//!
//! Scenarios (both run by default):
//! - `null`: the device under test alone, two `net_null` ports (rx makes mbufs, tx frees them).
//!   Nothing else runs, so the DUT's own per-packet cost is the limit. Rate: the DUT's tx counters.
//! - `memif`: a testpmd "wire" with two memif server ports (io, paired) on CPU 0 and the DUT with
//!   two memif client ports on CPU 1, seeded with `start tx_first`. Rate: the wire's rx counters.
//!
//! Devices under test: `testpmd-io` (io, paired); `vnicd-lcore` (two vNICs, one backing device
//! each, in-core bounce client, data core on an EAL lcore); `vnicd-thread` (the same on a
//! registered pinned thread). vnicd's path has the client-ring hop testpmd io lacks: VF → client
//! rx ring → client → client tx ring → VF.
use clap::{Parser, ValueEnum};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use vnic_bench::testpmd::{Testpmd, TestpmdOpts};
use vnic_bench::vnicd;

mod clientbench;
mod failbench;
mod latbench;
mod reloadbench;
mod scalebench;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Scenario {
    Null,
    Memif,
    /// In-core vs separate-process client on one vNIC.
    Client,
    /// ATTACH/DETACH latency.
    Attach,
    /// Outage on an unplanned failover (peer killed) and loss on a planned one.
    Failover,
    /// Reload latency on a 256-vNIC config and loss on untouched vNICs.
    Reload,
    /// memif forwarding at frame sizes 64..1518, vnicd vs testpmd io.
    Sizes,
    /// 1..32 vNICs on one data core (net_null, in-core bounce).
    Scale,
    /// memif wire, vnicd with `vnic-client reflect` processes vs testpmd io in its place.
    Pvp,
    /// Round-trip latency of timestamped frames through vnicd and a reflecting peer.
    Latency,
    All,
}

#[derive(Debug, Parser)]
#[command(about = "vnicd forwarding benchmark against dpdk-testpmd io on the same topology")]
struct Args {
    /// Short run for reviewers (3 rounds, 2 s windows).
    #[arg(long)]
    quick: bool,
    /// Which topology.
    #[arg(long, value_enum, default_value = "all")]
    scenario: Scenario,
    /// Rounds; each round runs every device under test once (order rotates).
    #[arg(long)]
    rounds: Option<u32>,
    /// Measurement window per trial, seconds.
    #[arg(long)]
    seconds: Option<f64>,
    /// Write results as JSON here (default: bench/results/<date>-forwarding.json).
    #[arg(long)]
    json: Option<PathBuf>,
    /// vnicd binary (default: next to this one).
    #[arg(long)]
    vnicd: Option<PathBuf>,
    /// memif: bursts of 32 seeded per wire port (`start tx_first N`).
    #[arg(long, default_value_t = 8)]
    seed_bursts: u32,
    #[command(subcommand)]
    cmd: Option<Sub>,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Compare two result files (A = before, B = after).
    Compare { a: PathBuf, b: PathBuf },
}

/// Print what changed between two result files, figure by figure.
fn compare(a: &Path, b: &Path) -> Res<()> {
    let load = |p: &Path| -> Res<serde_json::Value> {
        let t = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(serde_json::from_str(&t).map_err(|e| format!("{}: {e}", p.display()))?)
    };
    let (ja, jb) = (load(a)?, load(b)?);
    let mut rows: Vec<(String, f64, f64)> = Vec::new();
    let key = |s: &serde_json::Value| {
        format!(
            "{} {}",
            s["scenario"].as_str().unwrap_or("?"),
            s["dut"].as_str().unwrap_or("?")
        )
    };
    for sa in ja["summary"].as_array().into_iter().flatten() {
        if let Some(sb) = jb["summary"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|sb| key(sb) == key(sa))
        {
            for f in ["median_mpps", "median_round_ratio"] {
                if let (Some(x), Some(y)) = (sa[f].as_f64(), sb[f].as_f64()) {
                    rows.push((format!("{} {f}", key(sa)), x, y));
                }
            }
        }
    }
    for f in ["p50_ms", "p99_ms", "untouched_drops"] {
        if let (Some(x), Some(y)) = (ja["reload"][f].as_f64(), jb["reload"][f].as_f64()) {
            rows.push((format!("reload {f}"), x, y));
        }
    }
    for (ra, rb) in ja["scale"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(jb["scale"].as_array().into_iter().flatten())
    {
        if let (Some(x), Some(y)) = (ra["median_mpps"].as_f64(), rb["median_mpps"].as_f64()) {
            rows.push((format!("scale {} vNICs Mpps", ra["vnics"]), x, y));
        }
    }
    for (ra, rb) in ja["failover"]["summary"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(jb["failover"]["summary"].as_array().into_iter().flatten())
    {
        if let (Some(x), Some(y)) = (ra["median"].as_f64(), rb["median"].as_f64()) {
            rows.push((
                format!("failover {} {} median", s(&ra["kind"]), s(&ra["metric"])),
                x,
                y,
            ));
        }
    }
    if rows.is_empty() {
        return Err("no figure appears in both files".into());
    }
    println!("| figure | {} | {} | change |", a.display(), b.display());
    println!("|---|---:|---:|---:|");
    for (k, x, y) in rows {
        let change = if x != 0.0 {
            format!("{:+.1} %", (y - x) / x * 100.0)
        } else {
            "-".into()
        };
        println!("| {k} | {x:.3} | {y:.3} | {change} |");
    }
    Ok(())
}

fn s(v: &serde_json::Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Dut {
    TestpmdIo,
    VnicdLcore,
    VnicdThread,
    /// vnicd with a `vnic-client reflect` process per vNIC (the real client path).
    VnicdPvp,
}

impl Dut {
    fn name(self) -> &'static str {
        match self {
            Dut::TestpmdIo => "testpmd-io",
            Dut::VnicdLcore => "vnicd-lcore",
            Dut::VnicdThread => "vnicd-thread",
            Dut::VnicdPvp => "vnicd-pvp",
        }
    }
}

const DUTS: [Dut; 3] = [Dut::TestpmdIo, Dut::VnicdLcore, Dut::VnicdThread];

/// The devices under test of a forwarding scenario.
fn duts_for(sc: Scenario) -> Vec<Dut> {
    match sc {
        Scenario::Pvp => vec![Dut::TestpmdIo, Dut::VnicdPvp],
        _ => DUTS.to_vec(),
    }
}

#[derive(Debug, Clone, Serialize)]
struct Trial {
    scenario: Scenario,
    dut: Dut,
    round: u32,
    mpps: f64,
    /// Busy cycles per forwarded packet on the DUT's core.
    cycles_per_packet: Option<f64>,
    /// vnicd only: share of loop iterations that found nothing.
    idle_share: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
struct Summary {
    scenario: Scenario,
    dut: Dut,
    median_mpps: f64,
    min_mpps: f64,
    max_mpps: f64,
    median_cycles_per_packet: Option<f64>,
    /// median / testpmd median
    ratio_of_medians: f64,
    /// median over rounds of (this trial / testpmd trial of the same round)
    median_round_ratio: f64,
    /// best / testpmd best (noise only ever slows a trial down)
    ratio_of_best: f64,
}

#[derive(Clone)]
struct Env {
    /// Frame length the wire seeds (memif).
    frame_len: u32,
    dir: PathBuf,
    huge: bool,
    vnicd: PathBuf,
    seconds: f64,
    seed_bursts: u32,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Print a line and keep it for the Markdown report.
macro_rules! out {
    ($md:ident, $($t:tt)*) => {{
        let line = format!($($t)*);
        println!("{line}");
        $md.push_str(&line);
        $md.push('\n');
    }};
}

/// Set by SIGINT/SIGTERM: the run stops at the next trial, cleans up and writes what it has.
fn stop_flag() -> &'static std::sync::Arc<std::sync::atomic::AtomicBool> {
    static STOP: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicBool>> =
        std::sync::OnceLock::new();
    STOP.get_or_init(Default::default)
}

fn check_stop() -> Res<()> {
    if stop_flag().load(std::sync::atomic::Ordering::Relaxed) {
        return Err("interrupted".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, stop_flag().clone());
    }
    let args = Args::parse();
    if let Some(Sub::Compare { a, b }) = &args.cmd {
        return match compare(a, b) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vnic-bench compare: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vnic-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn run(args: Args) -> Res<()> {
    let mut md = String::new();
    let rounds = args.rounds.unwrap_or(if args.quick { 2 } else { 7 });
    let seconds = args.seconds.unwrap_or(if args.quick { 1.5 } else { 3.0 });
    if rounds == 0 || !(seconds > 0.0 && seconds.is_finite()) {
        return Err("--rounds and --seconds must be positive".into());
    }
    let vnicd = match args.vnicd {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("vnicd"),
    };
    if !vnicd.exists() {
        return Err(format!("{} not found: build with `make build`", vnicd.display()).into());
    }
    let which = which_testpmd();
    if !which {
        return Err("dpdk-testpmd not found (install dpdk-dev: `make deps`)".into());
    }
    let dir = std::env::temp_dir().join(format!("vnic-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let env = Env {
        frame_len: 64,
        dir: dir.clone(),
        huge: vnic_dataplane::eal::host_hugepages_usable(),
        vnicd,
        seconds,
        seed_bursts: args.seed_bursts.clamp(1, 64),
    };
    let all: Vec<Scenario> = match args.scenario {
        Scenario::All => vec![
            Scenario::Null,
            Scenario::Memif,
            Scenario::Client,
            Scenario::Attach,
            Scenario::Failover,
            Scenario::Reload,
            Scenario::Sizes,
            Scenario::Scale,
            Scenario::Pvp,
            Scenario::Latency,
        ],
        s => vec![s],
    };
    let scenarios: Vec<Scenario> = all
        .iter()
        .copied()
        .filter(|s| matches!(s, Scenario::Null | Scenario::Memif | Scenario::Pvp))
        .collect();
    let cpu = cpu_model();
    let machine = format!(
        "CPU {cpu} x{}, DPDK {}, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        vnic_dataplane::eal::dpdk_version(),
        if env.huge {
            "hugepages"
        } else {
            "no hugepages"
        }
    );
    eprintln!("vnic-bench: {all:?}, {rounds} rounds, {seconds} s windows; {machine}");
    let started = Instant::now();
    let total: usize = scenarios
        .iter()
        .map(|&s| rounds as usize * duts_for(s).len())
        .sum();
    let mut trials = Vec::new();
    let result = (|| -> Res<()> {
        for &sc in &scenarios {
            for r in 0..rounds {
                // Rotate the order each round so drift on a noisy host hits every device alike.
                let mut order = duts_for(sc);
                let k = order.len();
                order.rotate_left(r as usize % k);
                for d in order {
                    let n = trials.len() + 1;
                    let eta = (n > 1).then(|| {
                        started.elapsed().as_secs_f64() / (n - 1) as f64 * (total - n + 1) as f64
                    });
                    eprint!(
                        "[{n:>2}/{total}] {:<5} round {} {:<13} ETA {:>4} ... ",
                        format!("{sc:?}").to_lowercase(),
                        r + 1,
                        d.name(),
                        eta.map(|e| format!("{e:.0}s")).unwrap_or("-".into())
                    );
                    check_stop()?;
                    let t = trial(&env, sc, d, r)?;
                    eprintln!(
                        "{:.2} Mpps{}",
                        t.mpps,
                        t.cycles_per_packet
                            .map(|c| format!(", {c:.1} cycles/pkt"))
                            .unwrap_or_default()
                    );
                    trials.push(t);
                }
            }
        }
        Ok(())
    })();
    let mut client_json = serde_json::Value::Null;
    let mut attach_json = serde_json::Value::Null;
    let mut failover_json = serde_json::Value::Null;
    let mut reload_json = serde_json::Value::Null;
    let mut sizes_json = serde_json::Value::Null;
    let mut scale_json = serde_json::Value::Null;
    let mut latency_json = serde_json::Value::Null;
    let result = result.and_then(|()| {
        if all.contains(&Scenario::Client) {
            eprintln!("client: in-core reflect vs vnic-client reflect process, {rounds} rounds");
            let t = clientbench::client_trials(&env.vnicd, &env.dir, rounds, seconds)?;
            let med = |k: &str| median(&t.iter().filter(|x| x.client == k).map(|x| x.mpps).collect::<Vec<_>>());
            let (inc, proc_) = (med("in-core"), med("process"));
            out!(md, "");
            out!(md, "| client | median Mpps (vNIC tx) |");
            out!(md, "|---|---:|");
            out!(md, "| in-core reflect on the data core (CPU 1) | {inc:.2} |");
            out!(md, "| vnic-client reflect process (CPU 0), zero copy | {proc_:.2} |");
            out!(md, "process / in-core: {:.3}", proc_ / inc);
            client_json = serde_json::json!({"trials": t, "median_in_core_mpps": inc, "median_process_mpps": proc_, "ratio": proc_ / inc});
        }
        if all.contains(&Scenario::Attach) {
            let cycles = if args.quick { 200 } else { 1000 };
            eprintln!("attach: {cycles} ATTACH/DETACH cycles");
            let (a, d) = clientbench::attach_latency(&env.vnicd, &env.dir, cycles)?;
            out!(md, "");
            out!(md, "| op | samples | p50 µs | p90 µs | p99 µs | max µs |");
            out!(md, "|---|---:|---:|---:|---:|---:|");
            for (n, l) in [("ATTACH", &a), ("DETACH", &d)] {
                out!(md, "| {n} | {} | {:.1} | {:.1} | {:.1} | {:.1} |", l.samples, l.p50_us, l.p90_us, l.p99_us, l.max_us);
            }
            attach_json = serde_json::json!({"attach": a, "detach": d});
        }
        if all.contains(&Scenario::Failover) {
            if !env.huge {
                return Err("the failover scenario needs hugepages (its client is a separate process)".into());
            }
            let reps = if args.quick { 3 } else { 20 };
            let rate = 100_000;
            eprintln!("failover: {reps} unplanned (peer killed) and {reps} planned switches at {rate} frames/s");
            let mut t = Vec::new();
            for r in 0..reps {
                for planned in [false, true] {
                    check_stop()?;
                    let x = failbench::trial(&env.vnicd, &env.dir, planned, rate)?;
                    eprintln!(
                        "  {:>2} {:<9} lost {:>5} of {:>7} ({:.2} ms), detection {} us, switch {} us, vnicd drops rx {} tx {}",
                        r + 1,
                        if planned { "planned" } else { "unplanned" },
                        x.lost,
                        x.sent,
                        x.outage_ms,
                        x.detection_us,
                        x.switch_us,
                        x.vnicd_rx_drops,
                        x.vnicd_tx_drops
                    );
                    t.push(x);
                }
            }
            let pct = |v: &mut Vec<f64>, q: f64| {
                v.sort_by(|a, b| a.total_cmp(b));
                v[((v.len() - 1) as f64 * q).round() as usize]
            };
            let mut rows = Vec::new();
            out!(md, "");
            out!(md, "| failover | metric | median | p99 | max |");
            out!(md, "|---|---|---:|---:|---:|");
            for planned in [false, true] {
                let sel: Vec<&failbench::FailTrial> = t.iter().filter(|x| x.planned == planned).collect();
                let kind = if planned { "planned" } else { "unplanned (peer killed)" };
                for (metric, mut v) in [
                    ("outage ms (lost / rate)", sel.iter().map(|x| x.outage_ms).collect::<Vec<f64>>()),
                    ("frames lost", sel.iter().map(|x| x.lost as f64).collect()),
                    ("detection µs", sel.iter().map(|x| x.detection_us as f64).collect()),
                    ("switch µs", sel.iter().map(|x| x.switch_us as f64).collect()),
                ] {
                    let (m, p, x) = (pct(&mut v, 0.5), pct(&mut v, 0.99), pct(&mut v, 1.0));
                    out!(md, "| {kind} | {metric} | {m:.2} | {p:.2} | {x:.2} |");
                    rows.push(serde_json::json!({"kind": kind, "metric": metric, "median": m, "p99": p, "max": x}));
                }
            }
            failover_json = serde_json::json!({"rate": rate, "trials": t, "summary": rows});
        }
        if all.contains(&Scenario::Reload) {
            let reloads = if args.quick { 20 } else { 100 };
            // Each vNIC's backing device is an ethdev port, and Debian's DPDK has 32 of them:
            // the largest config here is 31 vNICs plus the one added and removed.
            let n = vnic_dataplane::MAX_PORTS as usize - 1;
            eprintln!("reload: {reloads} reloads of one vNIC beside {n} busy ones (RTE_MAX_ETHPORTS = {})", vnic_dataplane::MAX_PORTS);
            let r = reloadbench::run(&env.vnicd, &env.dir, n, reloads)?;
            out!(md, "");
            out!(md, "| reload (1 vNIC added or removed beside {n} busy ones) | p50 | p99 | max | drops on untouched vNICs |");
            out!(md, "|---|---:|---:|---:|---:|");
            out!(md,
                "| {} reloads | {:.2} ms | {:.2} ms | {:.2} ms | {} (of {} frames they moved meanwhile) |",
                r.reloads, r.p50_ms, r.p99_ms, r.max_ms, r.untouched_drops, r.untouched_packets
            );
            reload_json = serde_json::to_value(&r)?;
        }
        if all.contains(&Scenario::Sizes) {
            let sizes: &[u32] = if args.quick { &[64, 512, 1518] } else { &[64, 128, 256, 512, 1024, 1518] };
            let reps = if args.quick { 1 } else { 3 };
            eprintln!("sizes: memif, vnicd-lcore vs testpmd-io at {sizes:?}, {reps} rounds");
            let mut rows = Vec::new();
            out!(md, "");
            out!(md, "| frame bytes | testpmd-io Mpps | vnicd Mpps | vnicd Gbit/s | vnicd / testpmd (median per-round) |");
            out!(md, "|---:|---:|---:|---:|---:|");
            for &len in sizes {
                let e = Env { frame_len: len, ..env.clone() };
                let (mut a, mut b, mut r) = (Vec::new(), Vec::new(), Vec::new());
                for round in 0..reps {
                    let order = if round % 2 == 0 { [Dut::TestpmdIo, Dut::VnicdLcore] } else { [Dut::VnicdLcore, Dut::TestpmdIo] };
                    let mut got = [0.0f64; 2];
                    for d in order {
                        check_stop()?;
                        let t = trial(&e, Scenario::Memif, d, round)?;
                        got[(d == Dut::VnicdLcore) as usize] = t.mpps;
                    }
                    a.push(got[0]);
                    b.push(got[1]);
                    r.push(got[1] / got[0]);
                }
                let (ma, mb, mr) = (median(&a), median(&b), median(&r));
                // On the wire a frame also costs 20 bytes of preamble and gap.
                let gbps = mb * 1e6 * (len as f64 + 20.0) * 8.0 / 1e9;
                out!(md, "| {len} | {ma:.2} | {mb:.2} | {gbps:.1} | {mr:.3} |");
                eprintln!("  {len} B: testpmd {ma:.2} Mpps, vnicd {mb:.2} Mpps ({mr:.3})");
                rows.push(serde_json::json!({"frame_len": len, "testpmd_mpps": a, "vnicd_mpps": b, "median_ratio": mr}));
            }
            sizes_json = serde_json::json!(rows);
        }
        if all.contains(&Scenario::Scale) {
            let counts = [1usize, 8, 16, 32];
            let reps = if args.quick { 1 } else { 3 };
            eprintln!("scale: {counts:?} vNICs on one data core, {reps} rounds");
            let r = scalebench::run(&env.vnicd, &env.dir, &counts, reps, seconds)?;
            out!(md, "");
            out!(md, "| vNICs on one data core | median Mpps (all vNICs) | vs 1 vNIC |");
            out!(md, "|---:|---:|---:|");
            for x in &r {
                out!(md, "| {} | {:.2} | {:.3} |", x.vnics, x.median_mpps, x.vs_one);
            }
            scale_json = serde_json::to_value(&r)?;
        }
        if all.contains(&Scenario::Latency) {
            if !env.huge {
                return Err("the latency scenario needs hugepages (its client is a separate process)".into());
            }
            let rates = [10_000u64, 100_000, 500_000];
            eprintln!("latency: timestamped frames at {rates:?} frames/s");
            let r = latbench::run(&env.vnicd, &env.dir, &rates, if args.quick { 2.0 } else { 5.0 })?;
            out!(md, "");
            out!(md, "| offered frames/s | round trip through vnicd and a reflecting testpmd (µs) |");
            out!(md, "|---:|---|");
            for x in &r {
                out!(md, "| {} | {} |", x.rate, x.line.trim_start_matches("latency_us "));
            }
            latency_json = serde_json::to_value(&r)?;
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    let incomplete = result.is_err();
    if let Err(e) = &result {
        eprintln!(
            "vnic-bench: run stopped early: {e}; writing what was measured, marked incomplete"
        );
    }

    let mut summaries = Vec::new();
    for &sc in &scenarios {
        let of = |d: Dut| {
            trials
                .iter()
                .filter(|t: &&Trial| t.scenario == sc && t.dut == d)
                .collect::<Vec<_>>()
        };
        let base = of(Dut::TestpmdIo);
        let base_med = median(&base.iter().map(|t| t.mpps).collect::<Vec<_>>());
        let base_best = base.iter().map(|t| t.mpps).fold(0.0, f64::max);
        for d in duts_for(sc) {
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
        out!(md, "| scenario | device under test | median Mpps | min | max | cycles/pkt | ratio of medians | median per-round ratio | ratio of best |");
        out!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    }
    for s in &summaries {
        out!(
            md,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {} | {:.3} | {:.3} | {:.3} |",
            format!("{:?}", s.scenario).to_lowercase(),
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
    out!(md, "");
    for s in summaries.iter().filter(|s| s.dut != Dut::TestpmdIo) {
        out!(
            md,
            "{:?} {}: {:.3} x testpmd io (median per-round ratio); goal >= 0.95 {}",
            s.scenario,
            s.dut.name(),
            s.median_round_ratio,
            if s.median_round_ratio >= 0.95 {
                "met"
            } else {
                "NOT met"
            }
        );
    }

    let out = serde_json::json!({
        "benchmark": "forwarding",
        "incomplete": incomplete,
        "date_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "machine": {
            "cpu": cpu,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "dpdk": vnic_dataplane::eal::dpdk_version(),
            "hugepages": env.huge,
        },
        "cores": {"wire": 0, "dut": 1, "dut_main": 0},
        "rounds": rounds, "seconds": seconds, "seed_bursts": env.seed_bursts,
        "trials": trials, "summary": summaries,
        "client": client_json, "attach": attach_json, "failover": failover_json, "reload": reload_json, "sizes": sizes_json, "scale": scale_json, "latency": latency_json,
        "duration_s": started.elapsed().as_secs_f64(),
    });
    let path = args.json.unwrap_or_else(|| {
        let day = Command::new("date")
            .arg("+%Y-%m-%d")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        PathBuf::from(format!("bench/results/{day}-forwarding.json"))
    });
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&out)?)?;
    let header = format!(
        "# vnic-bench {}\n\n{machine}; {} s{}\n\n",
        path.display(),
        started.elapsed().as_secs_f64().round(),
        if incomplete { " (INCOMPLETE)" } else { "" }
    );
    std::fs::write(path.with_extension("md"), header + &md)?;
    eprintln!(
        "results written to {} ({:.0} s)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    result
}

fn which_testpmd() -> bool {
    Command::new(vnic_bench::testpmd::testpmd_bin())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn sock(dir: &Path, i: usize) -> String {
    dir.join(format!("bench{i}.sock")).display().to_string()
}

/// The two ports the DUT forwards between, as devargs.
fn dut_vdevs(env: &Env, sc: Scenario) -> Vec<String> {
    (0..2)
        .map(|i| match sc {
            Scenario::Memif | Scenario::Pvp => {
                format!("net_memif{i},role=client,socket={},id=0", sock(&env.dir, i))
            }
            _ => format!("net_null{i}"),
        })
        .collect()
}

fn port_rate(
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
fn wire_rate(w: &mut Testpmd, env: &Env) -> Res<f64> {
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
fn window(p: &mut Testpmd, env: &Env, rx: bool) -> Res<f64> {
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

fn trial(env: &Env, sc: Scenario, dut: Dut, round: u32) -> Res<Trial> {
    let mut wire = if matches!(sc, Scenario::Memif | Scenario::Pvp) {
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
            d.cmd("stop")?;
            let cyc = d
                .wait_line(|l| l.contains("CPU cycles/packet="), Duration::from_secs(5))
                .ok()
                .and_then(|l| {
                    l.split("CPU cycles/packet=")
                        .nth(1)?
                        .split_whitespace()
                        .next()?
                        .parse::<f64>()
                        .ok()
                });
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
        Dut::VnicdLcore | Dut::VnicdThread | Dut::VnicdPvp => {
            let pvp = dut == Dut::VnicdPvp;
            let launch = if dut == Dut::VnicdThread {
                "thread"
            } else {
                "lcore"
            };
            let mut eal = serde_json::json!({"cores": [0, 1], "main_core": 0, "memory_mb": 512});
            if pvp {
                // The clients are DPDK secondaries: they need shared hugepage memory.
                eal["hugepages"] = "on".into();
                eal["file_prefix"] = format!("vnicp{}", std::process::id()).into();
            }
            let cfg = serde_json::json!({
                "eal": eal,
                // With client processes sharing CPU 1 the data core must yield when idle.
                "data_cores": [{"core": 1, "launch": launch, "idle_sleep_us": if pvp { 50 } else { 0 }}],
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
            let mut args = vec!["--json-summary".to_string()];
            if !pvp {
                args.extend(["--inline-client".into(), "bounce".into()]);
            }
            if sc == Scenario::Null {
                // Totals since start over vnicd's own clock; null traffic is steady from the
                // first burst, so no warm-up is needed.
                args.extend(["--duration".into(), format!("{}", env.seconds + 1.0)]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut g = vnicd::spawn(&env.vnicd, &env.dir.join("vnicd.json"), &cfg, &args, true)?;
            let (reader, ereader) = g.collect_output();
            let mut clients = Vec::new();
            if pvp {
                let admin = env.dir.join("admin.sock");
                vnicd::wait_for(&admin, &mut g, "vnicd", Duration::from_secs(20), |_| true)?;
                for i in 0..2 {
                    let sock = env.dir.join("control.sock");
                    let vnic = format!("vnic{i}");
                    clients.push(vnicd::client(
                        &env.vnicd,
                        "reflect",
                        &vnic,
                        &sock,
                        1,
                        &[],
                        vnicd::Output::Drop,
                    )?);
                }
                vnicd::wait_all_attached(&admin, &mut g)?;
            }
            let wire_mpps = match wire.as_mut() {
                Some(w) => {
                    let r = wire_rate(w, env)?;
                    std::thread::sleep(Duration::from_millis(100));
                    for c in &mut clients {
                        c.stop(Duration::from_secs(5));
                    }
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
