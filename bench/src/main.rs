//! `vnic-bench`: forwarding rate of vnicd against `dpdk-testpmd --forward-mode=io` on the same
//! memif topology and the same pinned core, alternating A/B in one run.
//!
//! Topology (both devices under test see exactly the same wire):
//!   wire: dpdk-testpmd, 2 memif server ports, io/paired, forwarding on CPU 0
//!   DUT:  2 memif client ports, forwarding on CPU 1
//!     - testpmd-io:    dpdk-testpmd io/paired
//!     - vnicd-lcore:   vnicd, 2 vNICs (one backing device each), in-core bounce client, EAL lcore
//!     - vnicd-thread:  the same on a registered pinned thread instead of an EAL lcore
//!
//! Traffic is seeded with `start tx_first` and circulates; the rate is the wire's receive rate
//! over the measurement window. Figures are medians with min/max and ratios against testpmd-io
//! measured in the same run.
use clap::Parser;
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use vnic_bench::procs::Guard;
use vnic_bench::testpmd::{Testpmd, TestpmdOpts};

#[derive(Debug, Parser)]
#[command(about = "vnicd forwarding benchmark against dpdk-testpmd io on the same topology")]
struct Args {
    /// Short run for reviewers (3 rounds, 2 s windows).
    #[arg(long)]
    quick: bool,
    /// Rounds; each round runs every device under test once (order alternates).
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Dut {
    TestpmdIo,
    VnicdLcore,
    VnicdThread,
}

impl Dut {
    fn name(self) -> &'static str {
        match self {
            Dut::TestpmdIo => "testpmd-io",
            Dut::VnicdLcore => "vnicd-lcore",
            Dut::VnicdThread => "vnicd-thread",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Trial {
    dut: Dut,
    round: u32,
    mpps: f64,
    /// Busy cycles per forwarded packet on the DUT's forwarding core.
    cycles_per_packet: Option<f64>,
    /// vnicd only: share of idle polls.
    idle_share: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
struct Summary {
    dut: Dut,
    median_mpps: f64,
    min_mpps: f64,
    max_mpps: f64,
    median_cycles_per_packet: Option<f64>,
    ratio_vs_testpmd: f64,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vnic-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Env {
    dir: PathBuf,
    huge: bool,
    vnicd: PathBuf,
    seconds: f64,
}

fn sock(dir: &Path, i: usize) -> String {
    dir.join(format!("bench{i}.sock")).display().to_string()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let rounds = args.rounds.unwrap_or(if args.quick { 3 } else { 5 });
    let seconds = args.seconds.unwrap_or(if args.quick { 2.0 } else { 4.0 });
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
    let dir = std::env::temp_dir().join(format!("vnic-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let env = Env {
        dir: dir.clone(),
        huge: vnic_dataplane::eal::host_hugepages_usable(),
        vnicd,
        seconds,
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    eprintln!(
        "vnic-bench: {rounds} rounds x 3 devices, {seconds} s windows; CPU {cpu}; DPDK {}; {}",
        vnic_dataplane::eal::dpdk_version(),
        if env.huge {
            "hugepages"
        } else {
            "no hugepages"
        }
    );
    let duts = [Dut::TestpmdIo, Dut::VnicdLcore, Dut::VnicdThread];
    let mut trials = Vec::new();
    let total = rounds as usize * duts.len();
    let started = Instant::now();
    for r in 0..rounds {
        // Rotate the order each round so drift on a noisy host hits every device alike.
        let mut order = duts.to_vec();
        order.rotate_left(r as usize % duts.len());
        for d in order {
            let n = trials.len() + 1;
            let eta = if n > 1 {
                started.elapsed().as_secs_f64() / (n - 1) as f64 * (total - n + 1) as f64
            } else {
                f64::NAN
            };
            eprint!(
                "[{n:>2}/{total}] round {} {:<13} (ETA {:.0} s) ... ",
                r + 1,
                d.name(),
                eta
            );
            let t = trial(&env, d, r)?;
            eprintln!(
                "{:.2} Mpps{}",
                t.mpps,
                t.cycles_per_packet
                    .map(|c| format!(", {c:.0} cycles/pkt"))
                    .unwrap_or_default()
            );
            trials.push(t);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    let base = {
        let mut v: Vec<f64> = trials
            .iter()
            .filter(|t| t.dut == Dut::TestpmdIo)
            .map(|t| t.mpps)
            .collect();
        median(&mut v)
    };
    let summaries: Vec<Summary> = duts
        .iter()
        .map(|&d| {
            let mut v: Vec<f64> = trials
                .iter()
                .filter(|t| t.dut == d)
                .map(|t| t.mpps)
                .collect();
            let mut c: Vec<f64> = trials
                .iter()
                .filter(|t| t.dut == d)
                .filter_map(|t| t.cycles_per_packet)
                .collect();
            let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = v.iter().cloned().fold(0.0, f64::max);
            let med = median(&mut v);
            Summary {
                dut: d,
                median_mpps: med,
                min_mpps: min,
                max_mpps: max,
                median_cycles_per_packet: (!c.is_empty()).then(|| median(&mut c)),
                ratio_vs_testpmd: med / base,
            }
        })
        .collect();
    // Per-round ratios (each vnicd trial against the testpmd trial of the same round).
    let mut per_round = Vec::new();
    for r in 0..rounds {
        let b = trials
            .iter()
            .find(|t| t.round == r && t.dut == Dut::TestpmdIo)
            .map(|t| t.mpps);
        let v = trials
            .iter()
            .find(|t| t.round == r && t.dut == Dut::VnicdLcore)
            .map(|t| t.mpps);
        if let (Some(b), Some(v)) = (b, v) {
            per_round.push(v / b);
        }
    }
    let per_round_median = median(&mut per_round.clone());

    println!();
    println!("| device under test | median Mpps | min | max | cycles/pkt | vs testpmd io |");
    println!("|---|---:|---:|---:|---:|---:|");
    for s in &summaries {
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {} | {:.3} |",
            s.dut.name(),
            s.median_mpps,
            s.min_mpps,
            s.max_mpps,
            s.median_cycles_per_packet
                .map(|c| format!("{c:.0}"))
                .unwrap_or("-".into()),
            s.ratio_vs_testpmd
        );
    }
    let best = summaries
        .iter()
        .filter(|s| s.dut != Dut::TestpmdIo)
        .max_by(|a, b| a.median_mpps.total_cmp(&b.median_mpps))
        .map(|s| s.dut.name())
        .unwrap_or("-");
    println!();
    println!(
        "vnicd-lcore / testpmd-io: {:.3} (median of per-round ratios {:.3}); goal >= 0.95: {}; faster launch: {best}",
        summaries[1].ratio_vs_testpmd,
        per_round_median,
        if summaries[1].ratio_vs_testpmd >= 0.95 { "met" } else { "NOT met" }
    );

    let out = serde_json::json!({
        "scenario": "forwarding-memif-2port",
        "date_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "machine": {"cpu": cpu, "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "dpdk": vnic_dataplane::eal::dpdk_version(), "hugepages": env.huge},
        "cores": {"wire": 0, "dut": 1},
        "rounds": rounds, "seconds": seconds,
        "trials": trials, "summary": summaries, "per_round_ratio_median": per_round_median,
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
    eprintln!("results written to {}", path.display());
    Ok(())
}

fn wire_opts(env: &Env) -> TestpmdOpts {
    let vdevs = (0..2)
        .map(|i| format!("net_memif{i},role=server,socket={},id=0", sock(&env.dir, i)))
        .collect();
    TestpmdOpts::io(0, 1, vdevs, env.huge, "paired")
}

/// Seed the wire, wait one second, measure the receive rate over the window, stop the wire.
fn measure(wire: &mut Testpmd, seconds: f64) -> Result<f64, Box<dyn std::error::Error>> {
    wire.cmd("start tx_first 4")?;
    std::thread::sleep(Duration::from_secs(1));
    let a = wire.port_stats()?;
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let b = wire.port_stats()?;
    let secs = t.elapsed().as_secs_f64();
    wire.cmd("stop")?;
    let rx: u64 = b
        .iter()
        .zip(&a)
        .map(|(b, a)| b.rx_packets - a.rx_packets)
        .sum();
    if rx == 0 {
        return Err(format!(
            "no traffic reached the wire; testpmd said: {:?}",
            wire.tail(10)
        )
        .into());
    }
    Ok(rx as f64 / secs / 1e6)
}

fn trial(env: &Env, dut: Dut, round: u32) -> Result<Trial, Box<dyn std::error::Error>> {
    for i in 0..2 {
        let _ = std::fs::remove_file(sock(&env.dir, i));
    }
    // Not started here: `start tx_first` in measure() starts forwarding and seeds at once.
    let mut wire = Testpmd::spawn(&wire_opts(env))?;
    let client_vdevs: Vec<String> = (0..2)
        .map(|i| format!("net_memif{i},role=client,socket={},id=0", sock(&env.dir, i)))
        .collect();
    match dut {
        Dut::TestpmdIo => {
            let mut o = TestpmdOpts::io(1, 0, client_vdevs, env.huge, "paired");
            o.extra.push("--record-core-cycles".into());
            let mut d = Testpmd::spawn(&o)?;
            d.cmd("start")?;
            wire.wait_links(&[0, 1], Duration::from_secs(10))?;
            let mpps = measure(&mut wire, env.seconds)?;
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
            wire.quit();
            Ok(Trial {
                dut,
                round,
                mpps,
                cycles_per_packet: cyc,
                idle_share: None,
            })
        }
        Dut::VnicdLcore | Dut::VnicdThread => {
            let launch = if dut == Dut::VnicdLcore {
                "lcore"
            } else {
                "thread"
            };
            let cfg = serde_json::json!({
                "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 512},
                "data_cores": [{"core": 1, "launch": launch, "idle_sleep_us": 0}],
                "control_socket": env.dir.join("control.sock"),
                "vnics": (0..2).map(|i| serde_json::json!({
                    "name": format!("vnic{i}"),
                    "mac": format!("02:00:00:00:00:{:02x}", i + 1),
                    "backing": [{"name": format!("vf{i}"), "devargs": client_vdevs[i], "port_label": format!("p{i}")}]
                })).collect::<Vec<_>>()
            });
            let cfg_path = env.dir.join("vnicd.json");
            std::fs::write(&cfg_path, cfg.to_string())?;
            let mut cmd = Command::new(&env.vnicd);
            cmd.arg("--config")
                .arg(&cfg_path)
                .args(["--inline-client", "bounce", "--json-summary", "--quiet"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            let mut g = Guard::new("vnicd", cmd.spawn()?);
            let mut out = g
                .child
                .as_mut()
                .and_then(|c| c.stdout.take())
                .ok_or("vnicd stdout")?;
            let reader = std::thread::spawn(move || {
                let mut s = String::new();
                let _ = out.read_to_string(&mut s);
                s
            });
            wire.wait_links(&[0, 1], Duration::from_secs(10))?;
            let mpps = measure(&mut wire, env.seconds)?;
            std::thread::sleep(Duration::from_millis(100));
            g.signal(libc::SIGINT);
            let st = g
                .wait_timeout(Duration::from_secs(10))
                .ok_or("vnicd did not exit")?;
            g.child.take();
            wire.quit();
            if !st.success() {
                return Err(format!("vnicd exited with {st}").into());
            }
            let s = reader.join().unwrap_or_default();
            let j: serde_json::Value = s
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str(l).ok())
                .ok_or("no vnicd summary")?;
            let core = &j["status"]["cores"][0];
            let packets = core["packets"].as_f64().unwrap_or(0.0);
            let busy = core["busy_cycles"].as_f64().unwrap_or(0.0);
            let loops = core["loops"].as_f64().unwrap_or(0.0);
            let busy_loops = core["busy_loops"].as_f64().unwrap_or(0.0);
            // `packets` counts hops (VF->ring and ring->VF): a forwarded packet is two hops.
            Ok(Trial {
                dut,
                round,
                mpps,
                cycles_per_packet: (packets > 0.0).then(|| busy / (packets / 2.0)),
                idle_share: (loops > 0.0).then(|| 1.0 - busy_loops / loops),
            })
        }
    }
}
