//! vnicd: the vNIC appliance daemon.
#![forbid(unsafe_code)]
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vnic_control::appliance::{Appliance, StartOptions, Status};
use vnic_control::config;
use vnic_control::mainloop::{MainLoop, Reloaded};
use vnic_control::server::Server;
use vnic_dataplane::InlineMode;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Inline {
    /// No in-core client: clients attach over the control socket.
    None,
    /// Swap MACs and send every packet back (a reflecting client on the data core).
    Reflect,
    /// Send every packet back untouched (pointer moves only, for peak-rate benchmarks).
    Bounce,
}

/// vnicd — virtual NICs for clients, backed by SR-IOV VFs, switched by a pinned poll-mode core.
#[derive(Debug, Parser)]
#[command(name = "vnicd", version)]
struct Args {
    /// Config file (JSON). Without it the embedded demo config is used.
    #[arg(long, value_name = "FILE", conflicts_with = "check_config")]
    config: Option<PathBuf>,
    /// Validate a config file and exit: 0 when valid, 2 with the errors otherwise.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    /// Check what the config (--config, else the embedded one) needs from this host and exit:
    /// a table of checks with the command that fixes each; 0 when none failed, 1 otherwise.
    #[arg(long, conflicts_with = "check_config")]
    preflight: bool,
    /// Serve every vNIC with an in-core client on its data core (demo, benchmarks).
    #[arg(long, value_enum, default_value = "none")]
    inline_client: Inline,
    /// Stop by itself after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Print the final status as JSON on stdout at exit.
    #[arg(long)]
    json_summary: bool,
    /// No per-interval status lines.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Some(code) = vnic_cliassets::generate::<Args>("vnicd") {
        return code;
    }
    let args = Args::parse();

    if let Some(p) = &args.check_config {
        let checked = config::load(p)
            .and_then(|c| vnic_control::eal_options::check_build_limits(&c).map(|()| c));
        return match checked {
            Ok(c) => {
                println!(
                    "{}: valid ({} vNICs, {} backing devices, {} data cores)",
                    p.display(),
                    c.vnics().len(),
                    c.vnics().iter().map(|v| v.backing.len()).sum::<usize>(),
                    c.data_cores().len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: invalid config:\n{e}", p.display());
                ExitCode::from(2)
            }
        };
    }

    let cfg = match &args.config {
        Some(p) => config::load(p).map_err(|e| format!("{}: invalid config:\n{e}", p.display())),
        None => {
            config::parse(config::DEMO_CONFIG).map_err(|e| format!("embedded demo config:\n{e}"))
        }
    };
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.preflight {
        let checks = vnic_control::preflight::run(&cfg);
        println!("{}", vnic_control::preflight::table(&checks));
        println!("{}", vnic_control::preflight::summary(&checks));
        return if vnic_control::preflight::passed(&checks) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    if let Some(d) = args.duration {
        if !(d.is_finite() && d > 0.0) {
            eprintln!("--duration must be a positive number of seconds (got {d})");
            return ExitCode::from(2);
        }
    }
    let interval = Duration::from_millis(cfg.raw().stats_interval_ms as u64);

    // Signal handlers only set a flag; the main loop does the rest.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("cannot install signal handler: {e}");
            return ExitCode::FAILURE;
        }
    }

    let opts = StartOptions {
        inline_client: match args.inline_client {
            Inline::None => None,
            Inline::Reflect => Some(InlineMode::Reflect),
            Inline::Bounce => Some(InlineMode::Bounce),
        },
        host_hugepages: None,
    };
    // The directories of vnicd's own sockets first: client sockets may live there too (the
    // demo config's do), and they are opened before the control sockets.
    for s in [&cfg.raw().control_socket, &cfg.raw().admin_socket] {
        if let Some(d) = s.parent() {
            if let Err(e) = std::fs::create_dir_all(d) {
                eprintln!("vnicd: cannot create {}: {e}", d.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let started = Instant::now();
    let app = match Appliance::start(cfg, &opts) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vnicd: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(app.config()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vnicd: cannot open the control sockets: {e}");
            drop(app.shutdown());
            return ExitCode::FAILURE;
        }
    };
    // SIGHUP re-reads the config file (the handler only sets a flag).
    let hup = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone()) {
        eprintln!("cannot install the SIGHUP handler: {e}");
    }
    let first = app.status();
    eprintln!(
        "vnicd: up in {:.0} ms (DPDK {}, EAL: {}); control socket {}, admin socket {}",
        started.elapsed().as_secs_f64() * 1e3,
        first.dpdk_version,
        first.eal_args.join(" "),
        app.config().raw().control_socket.display(),
        app.config().raw().admin_socket.display()
    );
    for v in &first.vnics {
        let b: Vec<String> = v
            .backing
            .iter()
            .map(|b| format!("{}(prio {}, {})", b.name, b.priority, state_word(&b.state)))
            .collect();
        eprintln!(
            "  {} {} core {}: {}",
            v.name,
            v.mac,
            v.data_core,
            b.join(", ")
        );
    }

    let config_path = args
        .config
        .as_ref()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()));
    let mut main = MainLoop::new(app, server, config_path, hup);
    match main.start_metrics() {
        Ok(Some(l)) => eprintln!("vnicd: metrics on {l}/metrics"),
        Ok(None) => {}
        Err(e) => {
            eprintln!("vnicd: cannot serve metrics: {e}");
            drop(main.into_appliance().shutdown());
            return ExitCode::FAILURE;
        }
    }
    // Everything listens: tell the service manager (Type=notify).
    main.notify_ready();
    let t0 = Instant::now();
    let mut prev = first.clone();
    let mut prev_t = Instant::now();
    let mut next = prev_t + interval;
    while !stop.load(Ordering::Relaxed) {
        if args
            .duration
            .is_some_and(|d| t0.elapsed().as_secs_f64() >= d)
        {
            break;
        }
        let now = Instant::now();
        if now >= next {
            let cur = main.app().status();
            if !args.quiet {
                eprintln!(
                    "{}",
                    status_line(&prev, &cur, (now - prev_t).as_secs_f64(), t0.elapsed())
                );
            }
            prev = cur;
            prev_t = now;
            next += interval;
        }
        // The control thread's work: sessions, admin requests, health, events, reloads.
        match main.turn() {
            Some(Reloaded {
                result: Ok(r),
                source,
            }) => eprintln!(
                "vnicd: reloaded (generation {}) by {source}: {}",
                r.generation,
                if r.steps.is_empty() {
                    "no change".to_string()
                } else {
                    r.steps.join("; ")
                }
            ),
            Some(Reloaded {
                result: Err(e),
                source,
            }) => eprintln!(
                "vnicd: reload refused ({source}), running config unchanged: {}",
                e.message
            ),
            None => {}
        }
    }
    main.notify_stopping();
    let app = main.into_appliance();
    let fin = app.status();
    let secs = t0.elapsed().as_secs_f64();
    let report = app.shutdown();
    summary(&first, &fin, secs, &report);
    if args.json_summary {
        let j = serde_json::json!({"status": fin, "seconds": secs, "shutdown": report});
        println!("{j}");
    }
    if report.leaked() > 0 {
        eprintln!(
            "vnicd: LEAK: {} mbufs not returned to their pools",
            report.leaked()
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn state_word(s: &vnic_control::appliance::BackingState) -> String {
    match s {
        vnic_control::appliance::BackingState::Active => "active".into(),
        vnic_control::appliance::BackingState::Standby => "standby".into(),
        vnic_control::appliance::BackingState::Failed(r) => format!("failed: {r}"),
        vnic_control::appliance::BackingState::Disabled => "disabled".into(),
    }
}

fn mpps(p: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        p as f64 / secs / 1e6
    } else {
        0.0
    }
}

fn status_line(a: &Status, b: &Status, secs: f64, t: Duration) -> String {
    let mut s = format!("[{:>5.1}s]", t.as_secs_f64());
    for (x, y) in a.vnics.iter().zip(&b.vnics) {
        s += &format!(
            " {}@{}: rx {:.2} tx {:.2} Mpps drop {}/{}",
            y.name,
            y.active_backing.as_deref().unwrap_or("-"),
            mpps(y.stats.rx_packets - x.stats.rx_packets, secs),
            mpps(y.stats.tx_packets - x.stats.tx_packets, secs),
            y.stats.rx_drops - x.stats.rx_drops,
            y.stats.tx_drops - x.stats.tx_drops,
        );
    }
    for (x, y) in a.cores.iter().zip(&b.cores) {
        let cyc = y
            .stats
            .cycles_per_packet_since(&x.stats)
            .map(|c| format!("{c:.0}"))
            .unwrap_or_else(|| "-".into());
        s += &format!(
            " | core{} {} cyc/pkt, idle {:.0}%",
            y.core,
            cyc,
            100.0 * y.stats.idle_share_since(&x.stats)
        );
    }
    s
}

fn summary(a: &Status, b: &Status, secs: f64, r: &vnic_control::appliance::ShutdownReport) {
    eprintln!("vnicd summary over {secs:.1} s:");
    for (x, y) in a.vnics.iter().zip(&b.vnics) {
        let rx = y.stats.rx_packets - x.stats.rx_packets;
        let tx = y.stats.tx_packets - x.stats.tx_packets;
        eprintln!(
            "  {}: rx {} pkts ({:.2} Mpps), tx {} pkts ({:.2} Mpps), drops rx {} tx {} client {}",
            y.name,
            rx,
            mpps(rx, secs),
            tx,
            mpps(tx, secs),
            y.stats.rx_drops,
            y.stats.tx_drops,
            y.stats.client_drops
        );
    }
    let total: u64 = b
        .vnics
        .iter()
        .map(|v| v.stats.rx_packets + v.stats.tx_packets)
        .sum();
    eprintln!(
        "  moved {} packets in total, VF->client plus client->VF ({:.2} Mpps)",
        total,
        mpps(total, secs)
    );
    for (x, y) in a.cores.iter().zip(&b.cores) {
        if let Some(c) = y.stats.cycles_per_packet_since(&x.stats) {
            eprintln!(
                "  core {}: {c:.1} busy cycles per packet hop, forwarding table generation {}",
                y.core, y.table_generation
            );
        }
    }
    let leaked = r.leaked();
    eprintln!(
        "  mempools: {} ({} mbufs drained from client rings at teardown)",
        if leaked == 0 {
            "all back to full, no leak".to_string()
        } else {
            format!("{leaked} mbufs LEAKED")
        },
        r.drained_from_rings
    );
}
