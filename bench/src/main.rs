//! `vnic-bench`: line-rate benchmarks of vnicd against what a user would pick instead, measured
//! in the same run, the way DPDK and FD.io CSIT benchmark forwarders.
//!
//! Line-rate topologies (see `topo.rs`): the paced generator `vnic-gen` ↔ memif ↔ a device under
//! test (vnicd with client processes = `pvp`, `dpdk-testpmd` io = `baseline-testpmd`, Open vSwitch
//! with DPDK = `baseline-ovs`), interleaved round by round: MRR per frame size and IMIX, NDR/PDR by
//! binary search, latency at 10/50/90 % of NDR, cycles per frame of the DUT core.
//!
//! PV topologies (`pv-vhost`, `pv-memif`): the generator owns the wire and the client side; the
//! device under test forwards between a memif wire port and a vhost-user or memif client port.
//!
//! Other scenarios: `scale` (vNICs on one data core), `failover` (outage), `reload` (latency and
//! loss), and the closed-loop forwarding A/B of the foundation issue (`null`, `memif`: vnicd vs
//! testpmd io on two `net_null` ports and on a seeded memif loop), `client`, `attach`.
use clap::{Parser, ValueEnum};
use serde::Serialize;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

mod clientbench;
mod closedloop;
mod failbench;
mod goals;
mod migratebench;
mod plots;
mod reloadbench;
mod report;
mod results;
mod scalebench;
mod setup;
mod topo;
use closedloop::{trial, Env, DUTS};
use report::write_plots;
use results::{compare, write_rounds};
use setup::{setup, Setup};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    /// vnicd with a `vnic-client reflect` process per vNIC, paced generator on memif.
    Pvp,
    /// dpdk-testpmd io in vnicd's place (the software limit of the topology).
    BaselineTestpmd,
    /// Open vSwitch with DPDK in vnicd's place.
    BaselineOvs,
    /// 1..32 vNICs on one data core (net_null, in-core bounce).
    Scale,
    /// Latency at 10/50/90 % of NDR, vnicd against testpmd io.
    Latency,
    /// Outage on an unplanned failover (peer killed) and loss on a planned one.
    Failover,
    /// Reload latency beside 31 busy vNICs and loss on the untouched ones.
    Reload,
    /// Closed loop on two net_null ports: vnicd vs testpmd io, DUT-bound.
    Null,
    /// Closed loop on a seeded memif wire: vnicd vs testpmd io.
    Memif,
    /// In-core vs separate-process client on one vNIC.
    Client,
    /// PV over vhost-user: the generator's virtio-user port is the client; vnicd vs testpmd io
    /// (net_vhost) vs OVS-DPDK (dpdkvhostuserclient), with the shm path in the same run.
    PvVhost,
    /// PV over memif: the generator's memif client port is the client; same devices.
    PvMemif,
    /// ATTACH/DETACH latency.
    Attach,
    /// A shm vNIC moved back and forth between two appliances under traffic: loss, outage,
    /// time per phase (20 moves at 100 kpps; quick: 4).
    Migrate,
}

impl Scenario {
    fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "vnic-bench",
    version,
    about = "Line-rate benchmarks of vnicd against dpdk-testpmd io and OVS-DPDK on the same topology"
)]
struct Args {
    /// Short run for reviewers (under 2 minutes).
    #[arg(long)]
    quick: bool,
    /// Scenarios to run (repeat or comma-separate); none = the comparison set.
    #[arg(long, value_enum, value_delimiter = ',')]
    scenario: Vec<Scenario>,
    /// Rounds; each round runs every device under test once (order rotates). Default 5 (quick 1).
    #[arg(long)]
    rounds: Option<u32>,
    /// Measurement window of the closed-loop and scale trials, seconds.
    #[arg(long)]
    seconds: Option<f64>,
    /// Write results as JSON here (default: bench/results/<date>-<scenario>.json; Markdown and
    /// SVG plots beside it).
    #[arg(long)]
    json: Option<PathBuf>,
    /// vnicd binary (default: next to this one; vnic-gen and vnic-client beside it).
    #[arg(long)]
    vnicd: Option<PathBuf>,
    /// CPU of the traffic generator (and of every main/control thread).
    #[arg(long, default_value_t = 0)]
    gen_cpu: u32,
    /// CPU of the device under test's forwarding core.
    #[arg(long, default_value_t = 1)]
    dut_cpu: u32,
    /// CPU of pvp's `vnic-client` processes (default: the DUT's CPU, as a 2-CPU host must; on a
    /// bigger host give them their own, and vnicd's data core then polls without backing off).
    #[arg(long)]
    client_cpu: Option<u32>,
    /// memif closed loop: bursts of 32 seeded per wire port (`start tx_first N`).
    #[arg(long, default_value_t = 8)]
    seed_bursts: u32,
    /// Run even if other DPDK processes are running (their polling would skew every figure).
    #[arg(long)]
    force: bool,
    #[command(subcommand)]
    cmd: Option<Sub>,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Compare two result files (A = before, B = after).
    Compare { a: PathBuf, b: PathBuf },
}
type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Keep a line for the Markdown report.
macro_rules! out {
    ($md:ident, $($t:tt)*) => {{
        // Printed once, whole, at the end of the run (and written beside the JSON).
        let line = format!($($t)*);
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
    if let Some(code) = vnic_cliassets::generate::<Args>("vnic-bench") {
        return code;
    }
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
    // Keep the harness, and every helper thread its children start before they pin their own
    // pollers, on the generator's CPU: the DUT's CPU is left to the DUT.
    if !core_affinity::set_for_current(core_affinity::CoreId {
        id: args.gen_cpu as usize,
    }) {
        eprintln!("vnic-bench: cannot pin to CPU {}", args.gen_cpu);
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

/// Progress on the terminal: a bar with ETA when stderr is a terminal, plain lines otherwise.
/// The bar counts estimated seconds of work, so its ETA holds across steps of unequal length.
struct Progress {
    pb: indicatif::ProgressBar,
    done: f64,
}

impl Progress {
    fn new(total_s: f64) -> Progress {
        let pb = indicatif::ProgressBar::new(total_s.max(1.0) as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {percent:>3}% ETA {eta:>4} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Progress { pb, done: 0.0 }
    }
    /// A step of about `est_s` seconds starts.
    fn step(&mut self, msg: &str, est_s: f64) {
        self.pb.set_position(self.done as u64);
        self.done += est_s;
        self.pb.set_message(msg.to_string());
    }
    /// A line above the bar (or on stderr when there is no bar).
    fn line(&self, s: &str) {
        if self.pb.is_hidden() {
            eprintln!("{s}");
        } else {
            self.pb.println(s);
        }
    }
    fn finish(&self) {
        self.pb.finish_and_clear();
    }
}

fn today() -> String {
    Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn run(args: Args) -> Res<()> {
    let mut md = String::new();
    let Setup {
        quick,
        ncpu,
        rounds,
        seconds,
        client_cpu,
        vnicd,
        huge,
        set,
        label,
        topos,
        ovs_skipped,
        plan,
    } = setup(&args)?;
    let dir = std::env::temp_dir().join(format!("vnic-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let env = Env {
        frame_len: 64,
        dir: dir.clone(),
        huge,
        vnicd: vnicd.clone(),
        seconds,
        seed_bursts: args.seed_bursts.clamp(1, 64),
    };
    let tenv = topo::TopoEnv {
        vnicd: vnicd.clone(),
        dir: dir.clone(),
        huge,
        gen_cpu: args.gen_cpu,
        dut_cpu: args.dut_cpu,
        client_cpu,
    };
    let cpu = cpu_model();
    let ovs_version = Command::new("ovs-vsctl")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        });
    let machine = format!(
        "CPU {cpu} x{ncpu}, generator/main on CPU {}, DUT on CPU {}, DPDK {}, {}{}",
        args.gen_cpu,
        args.dut_cpu,
        vnic_dataplane::eal::dpdk_version(),
        if huge { "hugepages" } else { "no hugepages" },
        ovs_version
            .as_deref()
            .map(|v| format!(", {v}"))
            .unwrap_or_default()
    );
    let closed: Vec<Scenario> = set
        .iter()
        .copied()
        .filter(|s| matches!(s, Scenario::Null | Scenario::Memif))
        .collect();
    let closed_rounds = rounds.max(3);
    // Estimated seconds of each part, for the progress bar's ETA.
    let trial_est = |s: f64| s + plan.warmup + 0.15;
    let search_est = (8.0 * trial_est(plan.short_seconds) + 2.0 * trial_est(plan.final_seconds))
        * plan.search_sizes.len() as f64;
    let round_est = 3.0
        + plan.sizes.len() as f64 * trial_est(plan.mrr_seconds)
        + search_est
        + plan.latency_at.len() as f64 * trial_est(plan.latency_seconds);
    let failover_reps = if quick { 2 } else { 20 };
    let reloads = if quick { 20 } else { 100 };
    let migrate_moves = if quick { 4 } else { 20 };
    let scale_counts: Vec<usize> = if quick {
        vec![1, 8, 32]
    } else {
        vec![1, 8, 16, 32]
    };
    let scale_reps = if quick { 1 } else { 3 };
    let mut total = rounds as f64 * topos.len() as f64 * round_est
        + closed.len() as f64 * closed_rounds as f64 * 3.0 * (seconds + 3.0);
    for s in &set {
        total += match s {
            Scenario::Scale => scale_counts.len() as f64 * scale_reps as f64 * (seconds + 2.0),
            Scenario::Failover => failover_reps as f64 * 3.0 * 4.0,
            Scenario::Reload => 8.0 + reloads as f64 * 0.05,
            Scenario::Client => rounds as f64 * 2.0 * (seconds + 3.0),
            Scenario::Attach => 5.0,
            Scenario::Migrate => 35.0 + migrate_moves as f64 * 11.0,
            _ => 0.0,
        };
    }
    eprintln!(
        "vnic-bench: {label}: {:?}, {rounds} rounds; {machine}; about {:.0} s",
        set, total
    );
    let mut prog = Progress::new(total);
    let started = Instant::now();

    // Line-rate topologies, interleaved round by round.
    let mut topo_rounds: Vec<topo::TopoRound> = Vec::new();
    let result = (|| -> Res<()> {
        for r in 0..rounds {
            let mut order = topos.clone();
            if !order.is_empty() {
                let k = order.len();
                order.rotate_left(r as usize % k);
            }
            for t in order {
                check_stop()?;
                let tag = format!("round {}/{rounds} {}", r + 1, t.name());
                prog.step(&format!("{tag}: start"), 3.0);
                let mut progress = |what: &str| {
                    let est = if what.starts_with("MRR") {
                        trial_est(plan.mrr_seconds)
                    } else if what.starts_with("latency") {
                        trial_est(plan.latency_seconds)
                    } else if what.ends_with("(final)") {
                        trial_est(plan.final_seconds)
                    } else {
                        trial_est(plan.short_seconds)
                    };
                    prog.step(&format!("{tag}: {what}"), est);
                };
                let x = topo::run_round(&tenv, t, r, &plan, &mut progress, &check_stop)
                    .map_err(|e| format!("{tag}: {e}"))?;
                let s64 = x.search.first();
                prog.line(&format!(
                    "{tag}: MRR {} | NDR {} PDR {} Mpps | {}",
                    x.mrr
                        .iter()
                        .map(|m| format!("{} {:.2}", m.size, m.mrr_mpps))
                        .collect::<Vec<_>>()
                        .join(", "),
                    s64.map(|s| format!("{:.2}", s.ndr_mpps))
                        .unwrap_or("-".into()),
                    s64.map(|s| format!("{:.2}", s.pdr_mpps))
                        .unwrap_or("-".into()),
                    x.latency
                        .iter()
                        .map(|l| format!(
                            "{:.0}%: p50 {:.1} p99 {:.1} µs",
                            l.share * 100.0,
                            l.latency.p50_us,
                            l.latency.p99_us
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                topo_rounds.push(x);
            }
        }
        Ok(())
    })();

    // Closed-loop forwarding A/B (null, memif).
    let mut trials = Vec::new();
    let result = result.and_then(|()| {
        for &sc in &closed {
            for r in 0..closed_rounds {
                // Rotate the order each round so drift on a noisy host hits every device alike.
                let mut order = DUTS.to_vec();
                order.rotate_left(r as usize % DUTS.len());
                for d in order {
                    check_stop()?;
                    prog.step(
                        &format!("{} round {} {}", sc.name(), r + 1, d.name()),
                        seconds + 3.0,
                    );
                    let t = trial(&env, sc, d, r)?;
                    prog.line(&format!(
                        "{} round {} {:<13} {:.2} Mpps{}",
                        sc.name(),
                        r + 1,
                        d.name(),
                        t.mpps,
                        t.cycles_per_packet
                            .map(|c| format!(", {c:.1} cycles/pkt"))
                            .unwrap_or_default()
                    ));
                    trials.push(t);
                }
            }
        }
        Ok(())
    });
    let mut client_json = serde_json::Value::Null;
    let mut attach_json = serde_json::Value::Null;
    let mut failover_json = serde_json::Value::Null;
    let mut reload_json = serde_json::Value::Null;
    let mut migrate_json = serde_json::Value::Null;
    let mut scale_json = serde_json::Value::Null;
    let mut scale_rows: Vec<scalebench::ScaleRow> = Vec::new();
    let result = result.and_then(|()| {
        if set.contains(&Scenario::Scale) {
            prog.step(&format!("scale: {scale_counts:?} vNICs on one data core"), scale_counts.len() as f64 * scale_reps as f64 * (seconds + 2.0));
            let r = scalebench::run(&env.vnicd, &env.dir, &scale_counts, scale_reps, seconds)?;
            out!(md, "");
            out!(md, "| vNICs on one data core (net_null, in-core bounce) | median Mpps (all vNICs) | vs 1 vNIC |");
            out!(md, "|---:|---:|---:|");
            for x in &r {
                out!(md, "| {} | {:.2} | {:.3} |", x.vnics, x.median_mpps, x.vs_one);
            }
            out!(md, "64, 256 vNICs: not possible here, every backing device is an ethdev port and Debian's DPDK has RTE_MAX_ETHPORTS = {}.", vnic_dataplane::MAX_PORTS);
            scale_json = serde_json::to_value(&r)?;
            scale_rows = r;
        }
        if set.contains(&Scenario::Failover) {
            if !env.huge {
                return Err("the failover scenario needs hugepages (its client is a separate process)".into());
            }
            let reps = failover_reps;
            let rate = 100_000;
            let mut t = Vec::new();
            for r in 0..reps {
                for fault in failbench::Fault::ALL {
                    check_stop()?;
                    prog.step(&format!("failover {}/{reps} {}", r + 1, fault.label()), 4.0);
                    let x = failbench::trial(&env.vnicd, &env.dir, fault, rate, t.len())?;
                    prog.line(&format!(
                        "failover {:>2} {:<23} lost {:>5} of {:>7} ({:.2} ms), detection {} us, switch {} us, vnicd drops rx {} tx {}, seen by {}, fault->down {} us, ->reroute {} us, ->first frame {} us, false failovers before the fault {}",
                        r + 1,
                        fault.label(),
                        x.lost,
                        x.sent,
                        x.outage_ms,
                        x.detection_us,
                        x.switch_us,
                        x.vnicd_rx_drops,
                        x.vnicd_tx_drops,
                        x.detected_by.as_deref().unwrap_or("-"),
                        x.fault_to_down_us.map(|v| v.to_string()).unwrap_or("-".into()),
                        x.reroute_us.map(|v| v.to_string()).unwrap_or("-".into()),
                        x.first_frame_us.map(|v| v.to_string()).unwrap_or("-".into()),
                        x.false_failovers
                    ));
                    t.push(x);
                }
            }
            let pct = |v: &mut Vec<f64>, q: f64| {
                v.sort_by(|a, b| a.total_cmp(b));
                v[((v.len() - 1) as f64 * q).round() as usize]
            };
            let mut rows = Vec::new();
            out!(md, "");
            out!(md, "| failover at {rate} frames/s, {reps} each | metric | median | p99 | max |");
            out!(md, "|---|---|---:|---:|---:|");
            for fault in failbench::Fault::ALL {
                let sel: Vec<&failbench::FailTrial> = t.iter().filter(|x| x.fault == fault).collect();
                let kind = fault.label();
                for (metric, mut v) in [
                    ("outage ms (lost / rate)", sel.iter().map(|x| x.outage_ms).collect::<Vec<f64>>()),
                    ("frames lost", sel.iter().map(|x| x.lost as f64).collect()),
                    ("detection µs", sel.iter().map(|x| x.detection_us as f64).collect()),
                    ("switch µs", sel.iter().map(|x| x.switch_us as f64).collect()),
                    ("fault → marked down µs", sel.iter().filter_map(|x| x.fault_to_down_us).map(|v| v as f64).collect()),
                    ("marked down → first frame on the standby µs", sel.iter().filter_map(|x| x.first_frame_us).map(|v| v as f64).collect()),
                    ("false failovers before the fault (trial rerun)", sel.iter().map(|x| x.false_failovers as f64).collect()),
                ] {
                    if v.is_empty() {
                        continue;
                    }
                    let (m, p, x) = (pct(&mut v, 0.5), pct(&mut v, 0.99), pct(&mut v, 1.0));
                    out!(md, "| {kind} | {metric} | {m:.2} | {p:.2} | {x:.2} |");
                    rows.push(serde_json::json!({"kind": kind, "metric": metric, "median": m, "p99": p, "max": x}));
                }
            }
            failover_json = serde_json::json!({"rate": rate, "trials": t, "summary": rows});
        }
        if set.contains(&Scenario::Reload) {
            // Each vNIC's backing device is an ethdev port, and Debian's DPDK has 32 of them:
            // the largest config here is 31 vNICs plus the one added and removed.
            let n = vnic_dataplane::MAX_PORTS as usize - 1;
            prog.step(&format!("reload: {reloads} reloads beside {n} busy vNICs"), 8.0 + reloads as f64 * 0.05);
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
        if set.contains(&Scenario::Migrate) {
            let rate = 100_000;
            prog.step(
                &format!("migrate: {migrate_moves} moves at {rate} frames/s"),
                15.0 + migrate_moves as f64 * 3.0,
            );
            let mut r = migratebench::run(&env.vnicd, &env.dir, migrate_moves, rate)?;
            let vm_moves = if quick { 2 } else { 20 };
            prog.step(&format!("migrate: {vm_moves} live migrations of a QEMU guest"), 20.0 + vm_moves as f64 * 8.0);
            r.vm = migratebench::vm(&env.vnicd, &env.dir, vm_moves)?;
            let col = |f: fn(&migratebench::Move) -> f64| -> Vec<f64> { r.moves.iter().map(f).collect() };
            let (lost, gap, noise) = (
                col(|m| m.lost as f64),
                col(|m| m.gap_ms),
                col(|m| m.bystander_gap_ms),
            );
            out!(md, "");
            out!(md, "| migrate: shm vNIC, {} moves, {} frames/s per stream (asked {rate}; the most this host carried without loss) | median | max |", r.moves.len(), r.rate_per_stream);
            out!(md, "|---|---:|---:|");
            let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
            for (name, v) in [
                ("frames lost", lost.clone()),
                ("longest gap at the peer, ms", gap.clone()),
                ("bystanders' longest gap (host noise), ms", noise),
                ("prepare (B builds it), ms", col(|m| m.prepare_ms)),
                ("the client moves (successor attached on B), ms", col(|m| m.client_ms)),
                ("cutover (A stops → B forwards), ms", col(|m| m.cutover_ms)),
                ("whole move, ms", col(|m| m.total_ms)),
            ] {
                out!(md, "| {name} | {:.2} | {:.2} |", median(&v), max(&v));
            }
            let by: u64 = r.moves.iter().map(|m| m.bystander_lost).sum();
            out!(md, "bystander vNICs lost {by} frames in all (goal 0){}", if r.gen_limited { "; the generator could not keep the rate" } else { "" });
            out!(
                md,
                "goal (shm: 0 frames lost and a median gap < 1 ms): {}",
                if median(&lost) == 0.0 && median(&gap) < 1.0 { "met" } else { "NOT met" }
            );
            let vcol = |f: fn(&migratebench::VmMove) -> f64| -> Vec<f64> { r.vm.iter().map(f).collect() };
            let (down, outage) = (vcol(|m| m.qemu_downtime_ms as f64), vcol(|m| m.outage_ms));
            out!(md, "");
            out!(md, "| migrate: QEMU guest (vhost-user, TCG), {} live migrations, pinged every 10 ms | median | max |", r.vm.len());
            out!(md, "|---|---:|---:|");
            for (name, v) in [
                ("QEMU's downtime, ms", down.clone()),
                ("network outage (longest run of lost pings), ms", outage.clone()),
                ("pings lost", vcol(|m| m.lost_pings as f64)),
                ("cutover (A stops → B forwards), ms", vcol(|m| m.cutover_ms)),
                ("whole move, ms", vcol(|m| m.total_ms)),
            ] {
                out!(md, "| {name} | {:.1} | {:.1} |", median(&v), max(&v));
            }
            let within = r.vm.iter().filter(|m| m.outage_ms <= m.qemu_downtime_ms as f64 + 10.0).count();
            out!(md, "goal (VM: outage ≤ QEMU's downtime + 10 ms): {within} of {} moves", r.vm.len());
            migrate_json = serde_json::to_value(&r)?;
        }
        if set.contains(&Scenario::Client) {
            prog.step("client: in-core vs process", rounds as f64 * 2.0 * (seconds + 3.0));
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
        if set.contains(&Scenario::Attach) {
            let cycles = if quick { 200 } else { 1000 };
            prog.step(&format!("attach: {cycles} ATTACH/DETACH cycles"), 5.0);
            let (a, d) = clientbench::attach_latency(&env.vnicd, &env.dir, cycles)?;
            out!(md, "");
            out!(md, "| op | samples | p50 µs | p90 µs | p99 µs | max µs |");
            out!(md, "|---|---:|---:|---:|---:|---:|");
            for (n, l) in [("ATTACH", &a), ("DETACH", &d)] {
                out!(md, "| {n} | {} | {:.1} | {:.1} | {:.1} | {:.1} |", l.samples, l.p50_us, l.p90_us, l.p99_us, l.max_us);
            }
            attach_json = serde_json::json!({"attach": a, "detach": d});
        }
        Ok(())
    });
    prog.finish();
    let _ = std::fs::remove_dir_all(&dir);
    let incomplete = result.is_err();
    if let Err(e) = &result {
        eprintln!(
            "vnic-bench: run stopped early: {e}; writing what was measured, marked incomplete"
        );
    }

    // Line-rate summary first in the report.
    let size_labels: Vec<String> = plan.sizes.iter().map(|(l, _)| l.clone()).collect();
    // Each family of topologies is compared within itself (its own baselines).
    let family_rounds = |f: topo::Family| -> Vec<topo::TopoRound> {
        topo_rounds
            .iter()
            .filter(|r| r.topo.family() == f)
            .cloned()
            .collect()
    };
    let (topo_json, mut topo_md) = report::summarize(
        &family_rounds(topo::Family::Wire),
        &size_labels,
        &plan.latency_at,
    );
    let mut pv_json = serde_json::json!({});
    for (f, key, title) in [
        (topo::Family::PvVhost, "pv_vhost", "PV over vhost-user: vnic-gen's net_virtio_user port is the client; DUT between a memif wire port and a vhost-user port"),
        (topo::Family::PvMemif, "pv_memif", "PV over memif: vnic-gen's memif client port is the client; DUT between a memif wire port and a memif server port"),
    ] {
        let rs = family_rounds(f);
        if rs.is_empty() {
            continue;
        }
        let (j, m) = report::summarize(&rs, &size_labels, &plan.latency_at);
        pv_json[key] = j;
        topo_md.push_str(&format!("\n{title}\n{m}"));
    }
    let mut goals = goals::goals(&topo_rounds, &scale_rows, &failover_json);
    let mut head = String::new();
    if let Some(why) = &ovs_skipped {
        head.push_str(&format!("\nbaseline-ovs: not run: {why}\n"));
    }
    if !topo_rounds.is_empty() {
        head.push_str(&format!(
            "\nLine-rate topologies: vnic-gen (CPU {}) ↔ 2 memif ports ↔ DUT (CPU {}); {} rounds, order rotated each round; trials: MRR {} s, search {} s short / {} s final, latency {} s, warm-up {} s each\n",
            args.gen_cpu, args.dut_cpu, rounds, plan.mrr_seconds, plan.short_seconds, plan.final_seconds, plan.latency_seconds, plan.warmup
        ));
        head.push_str(&topo_md);
    }
    md = head + &md;

    let (summaries, closed_md, closed_goals) =
        closedloop::summarize(&trials, &closed, closed_rounds);
    md.push_str(&closed_md);
    goals.extend(closed_goals);
    if !goals.is_empty() {
        md.push_str("\nGoals\n\n");
        for g in &goals {
            md.push_str(&format!("- {g}\n"));
        }
    }
    print!("{md}");

    let out = serde_json::json!({
        "benchmark": label,
        "incomplete": incomplete,
        "error": result.as_ref().err().map(|e| e.to_string()),
        "date_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "machine": {
            "cpu": cpu,
            "cpus": ncpu,
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "dpdk": vnic_dataplane::eal::dpdk_version(),
            "ovs": ovs_version,
            "hugepages": env.huge,
        },
        "cores": {"generator": args.gen_cpu, "dut": args.dut_cpu, "dut_main": args.gen_cpu, "pvp_clients": client_cpu},
        "quick": quick,
        "rounds": rounds, "seconds": seconds, "seed_bursts": env.seed_bursts,
        "plan": {"sizes": plan.sizes, "search_sizes": plan.search_sizes, "latency_at": plan.latency_at,
                 "mrr_seconds": plan.mrr_seconds, "short_seconds": plan.short_seconds,
                 "final_seconds": plan.final_seconds, "latency_seconds": plan.latency_seconds,
                 "warmup": plan.warmup, "precision": plan.precision},
        "ovs_skipped": ovs_skipped,
        "line_rate": {"summary": topo_json, "pv": pv_json},
        "goals": goals,
        "trials": trials, "summary": summaries,
        "client": client_json, "attach": attach_json, "failover": failover_json, "reload": reload_json, "migrate": migrate_json, "scale": scale_json,
        "duration_s": started.elapsed().as_secs_f64(),
    });
    // Never overwrite an earlier run of the same day: number the next one.
    let path = args.json.unwrap_or_else(|| {
        let base = format!("bench/results/{}-{label}", today());
        (1..)
            .map(|n| match n {
                1 => PathBuf::from(format!("{base}.json")),
                n => PathBuf::from(format!("{base}-{n}.json")),
            })
            .find(|p| !p.exists())
            .unwrap_or_else(|| PathBuf::from(format!("{base}.json")))
    });
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    // Summary figures in plain JSON (diffable, small); every trial of every round compressed
    // beside it (`vnic-bench compare` reads either).
    let mut out = out;
    if !topo_rounds.is_empty() {
        let rounds = write_rounds(&path, &serde_json::json!(topo_rounds))?;
        out["line_rate"]["rounds_file"] =
            serde_json::json!(rounds.file_name().map(|n| n.to_string_lossy().into_owned()));
    }
    std::fs::write(&path, serde_json::to_string_pretty(&out)?)?;
    let plots = write_plots(&path, &topo_rounds, &plan, &scale_rows);
    let header = format!(
        "# vnic-bench {label}\n\n{machine}; {} s{}\n{}",
        started.elapsed().as_secs_f64().round(),
        if incomplete { " (INCOMPLETE)" } else { "" },
        plots
            .iter()
            .map(|p| format!("\n![{}]({})\n", p, p))
            .collect::<String>()
    );
    std::fs::write(path.with_extension("md"), header + &md)?;
    eprintln!(
        "results written to {} (+ .md{}) in {:.0} s",
        path.display(),
        if plots.is_empty() { "" } else { ", .svg plots" },
        started.elapsed().as_secs_f64()
    );
    result
}
