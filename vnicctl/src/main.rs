//! vnicctl: the admin command line for vnicd (talks to the admin socket).
#![forbid(unsafe_code)]
use clap::{Parser, Subcommand};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use vnic_proto::client::{Client, ClientError};
use vnic_proto::msg::Failover;
use vnic_proto::status::{BackingState, Owner, VnicStatus};

/// Inspect and steer a running vnicd over its admin socket.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Admin socket of vnicd.
    #[arg(long, default_value = "/run/vnicd/admin.sock")]
    socket: PathBuf,
    /// Print the raw JSON reply (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// One line per vNIC: state, client, active backing device, counters.
    Status,
    /// Everything: vNICs, backing devices, data cores, EAL.
    Stats,
    /// One vNIC in detail.
    Show { vnic: String },
    /// Detach a vNIC's client (it is told), drain its rings and return its mbufs.
    Detach { vnic: String },
    /// Planned switch to another backing device (make-before-break: nothing is lost).
    Failover {
        vnic: String,
        /// Target backing device (default: the best other operational one).
        #[arg(long)]
        to: Option<String>,
    },
    /// Reload the config (the file vnicd runs, or FILE): only the differences are applied.
    Reload { file: Option<PathBuf> },
    /// The running config, what a file would change, or the reload history.
    Config {
        #[arg(value_parser = ["show", "diff", "history"])]
        what: String,
        file: Option<PathBuf>,
    },
    /// Turn automatic fail-back to the best-priority device on or off (a manual failover to a
    /// lower priority turns it off).
    AutoFailback {
        vnic: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Move a live vNIC to another vnicd (make-before-break): prepare there, the client moves,
    /// cutover, done. On separate hosts, forward the destination's admin socket first
    /// (`ssh -N -L /run/vnicd-b.sock:/run/vnicd/admin.sock hostB`).
    Migrate {
        vnic: String,
        /// The destination's admin socket.
        #[arg(long)]
        to: PathBuf,
        /// SRC_LABEL=DST_LABEL: put backing devices on port SRC_LABEL here onto DST_LABEL there
        /// (default: the same label).
        #[arg(long = "map", value_parser = parse_map)]
        map: Vec<(String, String)>,
        /// Only ask whether the destination can take the vNIC (it prepares, then releases).
        #[arg(long)]
        dry_run: bool,
        /// Give up following it after this many seconds (the move itself goes on).
        #[arg(long, default_value_t = 120.0)]
        timeout: f64,
    },
    /// Migrations this vnicd remembers (both directions), with their phases.
    Migrations,
    /// Take a backing device out of service or put it back, or hot-remove it.
    Backing {
        #[arg(value_parser = ["enable", "disable", "remove"])]
        action: String,
        vnic: String,
        backing: String,
        /// Disable even the last operational device (the vNIC's link goes down).
        #[arg(long)]
        force: bool,
    },
}

fn parse_map(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.into(), b.into())),
        _ => Err(format!("{s:?} is not SRC_LABEL=DST_LABEL")),
    }
}

/// Why `vnicctl migrate` did not end well.
#[derive(Debug, thiserror::Error)]
enum MoveError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("migration of {vnic} failed: {why}")]
    Failed { vnic: String, why: String },
    #[error("migration of {0} still running after the --timeout; follow it with `vnicctl show`")]
    Timeout(String),
}

fn main() -> ExitCode {
    if let Some(code) = vnic_cliassets::generate::<Args>("vnicctl") {
        return code;
    }
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vnicctl: {e}");
            match e {
                MoveError::Client(ClientError::Refused { .. }) | MoveError::Failed { .. } => {
                    ExitCode::from(1)
                }
                MoveError::Timeout(_) => ExitCode::from(2),
                MoveError::Client(_) => ExitCode::from(3),
            }
        }
    }
}

/// Start a move and follow its phases until it ends.
fn migrate(
    a: &Args,
    c: &mut Client,
    vnic: &str,
    to: &std::path::Path,
    map: &[(String, String)],
    dry_run: bool,
    timeout: f64,
) -> Result<(), MoveError> {
    let map: std::collections::BTreeMap<String, String> = map.iter().cloned().collect();
    let to = abs(to);
    let mut m = c.migrate(vnic, &to, &map, dry_run)?;
    let end = std::time::Instant::now() + std::time::Duration::from_secs_f64(timeout.max(0.1));
    let mut shown = 0;
    loop {
        if !a.json {
            for p in &m.phases[shown..] {
                println!(
                    "{vnic}: {:<14} at +{:.3} ms",
                    p.phase.as_str(),
                    p.after_us as f64 / 1e3
                );
            }
        }
        shown = m.phases.len();
        if m.phase.is_final() {
            break;
        }
        if std::time::Instant::now() > end {
            return Err(MoveError::Timeout(vnic.into()));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        m = c.migration(vnic)?;
    }
    if json(a, &m) {
    } else {
        for b in &m.backing {
            println!(
                "  {} ({}) -> {} ({}), priority {}",
                b.from, b.from_label, b.to, b.to_label, b.priority
            );
        }
        if let Some(s) = &m.client_socket {
            println!("  client on the destination: {s}");
        }
        if let Some(us) = m.cutover_us {
            println!("  cutover took {:.3} ms", us as f64 / 1e3);
        }
    }
    match m.phase {
        vnic_proto::mobility::Phase::Failed => Err(MoveError::Failed {
            vnic: vnic.into(),
            why: m.error.unwrap_or_default(),
        }),
        _ => {
            if !a.json {
                println!(
                    "{vnic}: {}",
                    if dry_run {
                        "the destination can take it (prepared and released again)"
                    } else {
                        "moved"
                    }
                );
            }
            Ok(())
        }
    }
}

fn run(a: &Args) -> Result<(), MoveError> {
    let mut c = Client::connect(&a.socket).map_err(|e| match e {
        ClientError::Io(io) => ClientError::Io(std::io::Error::new(
            io.kind(),
            format!("{}: {io} (is vnicd running?)", a.socket.display()),
        )),
        e => e,
    })?;
    match &a.cmd {
        Cmd::Status => {
            let r = c.status()?;
            if !json(a, &r) {
                status_table(&r.vnics, r.generation);
                for m in &r.migrated_out {
                    println!("{:<16} migrated-out to {}", m.vnic, m.to);
                }
            }
        }
        Cmd::Migrate {
            vnic,
            to,
            map,
            dry_run,
            timeout,
        } => migrate(a, &mut c, vnic, to, map, *dry_run, *timeout)?,
        Cmd::Migrations => {
            let r = c.migrations()?;
            if !json(a, &r) {
                let mut t = table(
                    &[
                        "VNIC",
                        "DIR",
                        "PEER",
                        "TRANSPORT",
                        "PHASE",
                        "CUTOVER",
                        "ERROR",
                    ],
                    &[5],
                );
                for m in &r.migrations {
                    t.add_row([
                        m.vnic.clone(),
                        match m.direction {
                            vnic_proto::mobility::Direction::Out => "out",
                            vnic_proto::mobility::Direction::In => "in",
                        }
                        .into(),
                        m.peer.clone(),
                        m.transport.clone(),
                        m.phase.as_str().into(),
                        m.cutover_us
                            .map(|u| format!("{:.3} ms", u as f64 / 1e3))
                            .unwrap_or("-".into()),
                        m.error.clone().unwrap_or_default(),
                    ]);
                }
                print_table(&t, "");
            }
        }
        Cmd::Stats => {
            let r = c.stats()?;
            if json(a, &r) {
                return Ok(());
            }
            status_table(&r.vnics, r.generation);
            println!();
            let mut t = table(
                &["CORE", "LAUNCH", "TABLE GEN", "LOOPS", "PACKETS", "CYC/PKT"],
                &[2, 3, 4, 5],
            );
            for c in &r.cores {
                let cyc = if c.stats.packets > 0 {
                    format!("{:.1}", c.stats.busy_cycles as f64 / c.stats.packets as f64)
                } else {
                    "-".into()
                };
                t.add_row([
                    c.core.to_string(),
                    c.launch.clone(),
                    c.table_generation.to_string(),
                    c.stats.loops.to_string(),
                    c.stats.packets.to_string(),
                    cyc,
                ]);
            }
            print_table(&t, "");
            println!("DPDK {}; EAL {}", r.dpdk_version, r.eal_args.join(" "));
        }
        Cmd::Show { vnic } => {
            let v = c.show(vnic)?;
            if !json(a, &vnic_proto::msg::Show { vnic: v.clone() }) {
                show(&v);
            }
        }
        Cmd::Detach { vnic } => {
            let r = c.admin_detach(vnic)?;
            if !json(a, &r) {
                println!(
                    "{vnic}: detached, {} mbufs drained from its rings",
                    r.drained.unwrap_or(0)
                );
            }
        }
        Cmd::Failover { vnic, to } => {
            let r = c.failover(vnic, to.as_deref())?;
            if !json(a, &r) {
                println!("{vnic}: {}", switch_line(&r));
            }
        }
        Cmd::AutoFailback { vnic, state } => {
            let r = c.auto_failback(vnic, state == "on")?;
            if !json(a, &r) {
                println!("{vnic}: automatic fail-back {state}");
            }
        }
        Cmd::Reload { file } => {
            let r = c.reload(file.as_deref().map(abs).as_deref())?;
            if !json(a, &r) {
                println!(
                    "reloaded: config generation {} in {} us",
                    r.generation, r.took_us
                );
                for st in &r.steps {
                    println!("  {st}");
                }
            }
        }
        Cmd::Config { what, file } if what == "diff" => {
            let r = c.config_diff(file.as_deref().map(abs).as_deref())?;
            if !json(a, &r) {
                if r.steps.is_empty() {
                    println!("no change");
                }
                for st in &r.steps {
                    println!("  {st}");
                }
            }
        }
        Cmd::Config { what, .. } => {
            let r = c.config_show()?;
            if json(a, &r) {
                return Ok(());
            }
            if what == "history" {
                for h in &r.history {
                    println!(
                        "generation {:<4} {:<6} {:>8} us  {}  {}",
                        h.generation,
                        if h.ok { "ok" } else { "FAILED" },
                        h.took_us,
                        h.source,
                        h.error.clone().unwrap_or_else(|| h.steps.join("; "))
                    );
                }
            } else {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r.config).unwrap_or_default()
                );
            }
        }
        Cmd::Backing {
            action,
            vnic,
            backing,
            force,
        } => {
            let r = if action == "remove" {
                c.remove_backing(vnic, backing)?
            } else {
                c.set_backing(vnic, backing, action == "enable", *force)?
            };
            if !json(a, &r) {
                println!("{vnic}/{backing}: {action}d");
                if let Some(f) = &r.failover {
                    println!("{vnic}: {}", switch_line(f));
                }
            }
        }
    }
    Ok(())
}

/// With --json, print the reply body (for scripts) and say so.
fn json(a: &Args, body: &impl Serialize) -> bool {
    if a.json {
        println!("{}", serde_json::to_string_pretty(body).unwrap_or_default());
    }
    a.json
}

fn abs(p: &std::path::Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

fn or_null(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("null")
}

fn switch_line(f: &Failover) -> String {
    format!("{} -> {} ({})", or_null(&f.from), f.to, f.reason)
}

fn state_word(s: &BackingState) -> (&'static str, Option<&str>) {
    match s {
        BackingState::Active => ("active", None),
        BackingState::Standby => ("standby", None),
        BackingState::Failed(r) => ("failed", Some(r)),
        BackingState::Disabled => ("disabled", None),
    }
}

fn show(v: &VnicStatus) {
    println!(
        "vNIC {}  mac {}  state {}  epoch {}",
        v.name, v.mac, v.state, v.epoch
    );
    println!(
        "  transport {}{}",
        v.transport,
        v.client_socket
            .as_deref()
            .map(|s| format!("  socket {s}"))
            .unwrap_or_default()
    );
    if let Some(o) = &v.owner {
        println!("  client: {}", client_words(o));
    }
    if let Some(e) = &v.client_error {
        println!("  client side: {e}");
    }
    println!(
        "  data core {}  queues {}  ring depth {}  mtu {}",
        v.data_core, v.queues, v.ring_depth, v.mtu
    );
    let s = &v.stats;
    println!(
        "  rx {} pkts {} bytes, drops {} | tx {} pkts {} bytes, drops {}, spoofed {}",
        s.rx_packets, s.rx_bytes, s.rx_drops, s.tx_packets, s.tx_bytes, s.tx_drops, s.spoof_drops
    );
    println!(
        "  mempool {} of {} mbufs in use",
        v.pool_in_use, v.pool_size
    );
    println!(
        "  link {}  failovers {}{}",
        if v.link_up { "up" } else { "down" },
        v.failover_count,
        if v.flap_suppressed {
            "  (fail-back held back by the flap limit)"
        } else {
            ""
        }
    );
    if let Some(m) = &v.migration {
        println!(
            "  migration {} {} {}: {}{}",
            match m.direction {
                vnic_proto::mobility::Direction::Out => "to",
                vnic_proto::mobility::Direction::In => "from",
            },
            m.peer,
            if m.dry_run { "(dry run)" } else { "" },
            m.phases
                .iter()
                .map(|p| format!("{} +{:.1} ms", p.phase.as_str(), p.after_us as f64 / 1e3))
                .collect::<Vec<_>>()
                .join(", "),
            m.error
                .as_deref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default()
        );
    }
    if let Some(l) = &v.last_switch {
        println!(
            "  last switch: {} -> {} ({}), detection {} us, switch {} us",
            or_null(&l.from),
            l.to,
            l.reason,
            l.detection_us,
            l.switch_us
        );
        if let Some(by) = &l.detected_by {
            let us = |v: Option<u64>| v.map(|v| format!("{v} us")).unwrap_or_else(|| "-".into());
            println!(
                "    failure seen by {by}; after it: rerouted {}, first frame on {} {}, official {}",
                us(l.reroute_us),
                l.to,
                us(l.first_frame_us),
                us(l.official_us)
            );
        }
    }
    let mut t = table(
        &[
            "BACKING", "PRIO", "STATE", "LINK", "STALLS", "PORT", "DEVARGS",
        ],
        &[1, 4],
    );
    for b in &v.backing {
        let (state, reason) = state_word(&b.state);
        t.add_row([
            b.name.clone(),
            b.priority.to_string(),
            reason
                .map(|r| format!("{state} ({r})"))
                .unwrap_or(state.into()),
            if b.link_up { "up" } else { "down" }.into(),
            b.tx_stalls.to_string(),
            b.port_label.clone(),
            b.devargs.clone(),
        ]);
    }
    print_table(&t, "  ");
}

fn print_table(t: &comfy_table::Table, indent: &str) {
    for l in t.lines() {
        println!("{indent}{}", l.trim_end());
    }
}

/// A plain table (no borders, two spaces between columns), the columns `right` right-aligned
/// (numbers).
fn table(header: &[&str], right: &[usize]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING)
        .set_header(header.to_vec());
    for (i, c) in t.column_iter_mut().enumerate() {
        c.set_padding((0, 2));
        if right.contains(&i) {
            c.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    t
}

/// Who the client is, in words.
fn client_words(o: &Owner) -> String {
    match o {
        Owner::Inline => "in-core client on the data core".into(),
        Owner::Client { pid, uid, gid, .. } => format!("shm process pid {pid} (uid {uid}, gid {gid})"),
        Owner::Vhost {
            mode,
            vid,
            pairs,
            enabled_pairs,
            features,
            kicks_off,
            ..
        } => format!(
            "vhost-user frontend, vnicd is the {mode}, device {vid}, {enabled_pairs} of {pairs} queue pairs enabled, features {features}, kicks {}",
            if *kicks_off { "off" } else { "on" }
        ),
        Owner::Memif { id, .. } => format!("memif client, interface id {id}"),
    }
}

fn status_table(vnics: &[VnicStatus], generation: u64) {
    let mut t = table(
        &[
            "VNIC",
            "MAC",
            "STATE",
            "TRANSPORT",
            "PID",
            "ACTIVE",
            "RX PKTS",
            "TX PKTS",
            "RX DROPS",
            "TX DROPS",
        ],
        &[4, 6, 7, 8, 9],
    );
    for v in vnics {
        t.add_row([
            v.name.clone(),
            v.mac.clone(),
            v.state.clone(),
            v.transport.clone(),
            v.client_pid.map(|p| p.to_string()).unwrap_or("-".into()),
            v.active_backing.clone().unwrap_or("-".into()),
            v.stats.rx_packets.to_string(),
            v.stats.tx_packets.to_string(),
            v.stats.rx_drops.to_string(),
            v.stats.tx_drops.to_string(),
        ]);
    }
    print_table(&t, "");
    println!("forwarding-table generation {generation}");
}
