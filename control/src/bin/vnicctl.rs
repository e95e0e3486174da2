//! vnicctl: the admin command line for vnicd (talks to the admin socket).
#![forbid(unsafe_code)]
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use vnic_control::client::{Client, ClientError};

/// Inspect and steer a running vnicd.
#[derive(Debug, Parser)]
#[command(version, about)]
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

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vnicctl: {e}");
            match e {
                ClientError::Refused { .. } => ExitCode::from(1),
                _ => ExitCode::from(3),
            }
        }
    }
}

fn run(a: &Args) -> Result<(), ClientError> {
    let mut c = Client::connect(&a.socket).map_err(|e| match e {
        ClientError::Io(io) => ClientError::Io(std::io::Error::new(
            io.kind(),
            format!("{}: {io} (is vnicd running?)", a.socket.display()),
        )),
        e => e,
    })?;
    let (op, fields) = match &a.cmd {
        Cmd::Status => ("STATUS", json!({})),
        Cmd::Stats => ("STATS", json!({})),
        Cmd::Show { vnic } => ("SHOW", json!({"vnic": vnic})),
        Cmd::Detach { vnic } => ("DETACH", json!({"vnic": vnic})),
        Cmd::Failover { vnic, to } => ("FAILOVER", json!({"vnic": vnic, "to": to})),
        Cmd::Reload { file } => ("RELOAD", json!({"path": file.as_ref().map(|f| abs(f))})),
        Cmd::Config { what, file } if what == "diff" => (
            "CONFIG_DIFF",
            json!({"path": file.as_ref().map(|f| abs(f))}),
        ),
        Cmd::Config { .. } => ("CONFIG_SHOW", json!({})),
        Cmd::AutoFailback { vnic, state } => (
            "AUTO_FAILBACK",
            json!({"vnic": vnic, "enabled": state == "on"}),
        ),
        Cmd::Backing {
            action,
            vnic,
            backing,
            force,
        } if action == "remove" => ("REMOVE_BACKING", json!({"vnic": vnic, "backing": backing})),
        Cmd::Backing {
            action,
            vnic,
            backing,
            force,
        } => (
            "BACKING",
            json!({"vnic": vnic, "backing": backing, "enabled": action == "enable", "force": force}),
        ),
    };
    let mut r = c.request(op, fields)?;
    if a.json {
        if let Some(m) = r.as_object_mut() {
            for k in ["v", "id", "op", "epoch"] {
                m.remove(k);
            }
        }
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        return Ok(());
    }
    match &a.cmd {
        Cmd::Status => status_table(&r),
        Cmd::Stats => {
            status_table(&r);
            println!();
            println!(
                "{:<6} {:<7} {:>10} {:>14} {:>14} {:>10}",
                "CORE", "LAUNCH", "TABLE GEN", "LOOPS", "PACKETS", "CYC/PKT"
            );
            for c in r["cores"].as_array().into_iter().flatten() {
                let p = c["packets"].as_f64().unwrap_or(0.0);
                let cyc = if p > 0.0 {
                    format!("{:.1}", c["busy_cycles"].as_f64().unwrap_or(0.0) / p)
                } else {
                    "-".into()
                };
                println!(
                    "{:<6} {:<7} {:>10} {:>14} {:>14} {:>10}",
                    c["core"],
                    s(&c["launch"]),
                    c["table_generation"],
                    c["loops"],
                    c["packets"],
                    cyc
                );
            }
            println!(
                "DPDK {}; EAL {}",
                s(&r["dpdk_version"]),
                r["eal_args"]
                    .as_array()
                    .map(|a| a.iter().map(s).collect::<Vec<_>>().join(" "))
                    .unwrap_or_default()
            );
        }
        Cmd::Show { .. } => {
            let v = &r["vnic"];
            println!(
                "vNIC {}  mac {}  state {}  epoch {}",
                s(&v["name"]),
                s(&v["mac"]),
                s(&v["state"]),
                v["epoch"]
            );
            if let Some(o) = v["owner"].as_object() {
                println!("  client: {}", Value::Object(o.clone()));
            }
            println!(
                "  data core {}  queues {}  ring depth {}  mtu {}",
                v["data_core"], v["queues"], v["ring_depth"], v["mtu"]
            );
            println!(
                "  rx {} pkts {} bytes, drops {} | tx {} pkts {} bytes, drops {}, spoofed {}",
                v["rx_packets"],
                v["rx_bytes"],
                v["rx_drops"],
                v["tx_packets"],
                v["tx_bytes"],
                v["tx_drops"],
                v["spoof_drops"]
            );
            println!(
                "  mempool {} of {} mbufs in use",
                v["pool_in_use"], v["pool_size"]
            );
            println!(
                "  link {}  failovers {}{}",
                if v["link_up"] == true { "up" } else { "down" },
                v["failover_count"],
                if v["flap_suppressed"] == true {
                    "  (fail-back held back by the flap limit)"
                } else {
                    ""
                }
            );
            if let Some(l) = v["last_switch"].as_object() {
                println!(
                    "  last switch: {} -> {} ({}), detection {} us, switch {} us",
                    s(&l["from"]),
                    s(&l["to"]),
                    s(&l["reason"]),
                    l["detection_us"],
                    l["switch_us"]
                );
            }
            println!(
                "  {:<16} {:>4} {:<9} {:<5} {:<16} DEVARGS",
                "BACKING", "PRIO", "STATE", "LINK", "PORT"
            );
            for b in v["backing"].as_array().into_iter().flatten() {
                println!(
                    "  {:<16} {:>4} {:<9} {:<5} {:<16} {}{}",
                    s(&b["name"]),
                    b["priority"],
                    s(&b["state"]),
                    if b["link_up"] == true { "up" } else { "down" },
                    s(&b["port_label"]),
                    s(&b["devargs"]),
                    b["reason"]
                        .as_str()
                        .map(|r| format!("  ({r})"))
                        .unwrap_or_default()
                );
            }
        }
        Cmd::Detach { vnic } => println!(
            "{vnic}: detached, {} mbufs drained from its rings",
            r["drained"]
        ),
        Cmd::Failover { vnic, .. } => println!(
            "{vnic}: {} -> {} ({})",
            s(&r["from"]),
            s(&r["to"]),
            s(&r["reason"])
        ),
        Cmd::AutoFailback { vnic, state } => println!("{vnic}: automatic fail-back {state}"),
        Cmd::Reload { .. } => {
            println!(
                "reloaded: config generation {} in {} us",
                r["generation"], r["took_us"]
            );
            for st in r["steps"].as_array().into_iter().flatten() {
                println!("  {}", s(st));
            }
        }
        Cmd::Config { what, .. } if what == "diff" => {
            let steps = r["steps"].as_array().cloned().unwrap_or_default();
            if steps.is_empty() {
                println!("no change");
            }
            for st in steps {
                println!("  {}", s(&st));
            }
        }
        Cmd::Config { what, .. } if what == "history" => {
            for h in r["history"].as_array().into_iter().flatten() {
                println!(
                    "generation {:<4} {:<6} {:>8} us  {}  {}",
                    s(&h["generation"]),
                    if h["ok"] == true { "ok" } else { "FAILED" },
                    s(&h["took_us"]),
                    s(&h["source"]),
                    h["error"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| h["steps"]
                            .as_array()
                            .map(|a| a.iter().map(s).collect::<Vec<_>>().join("; "))
                            .unwrap_or_default())
                );
            }
        }
        Cmd::Config { .. } => println!(
            "{}",
            serde_json::to_string_pretty(&r["config"]).unwrap_or_default()
        ),
        Cmd::Backing {
            action,
            vnic,
            backing,
            ..
        } => {
            println!("{vnic}/{backing}: {action}d");
            if r["failover"].is_object() {
                let f = &r["failover"];
                println!(
                    "{vnic}: {} -> {} ({})",
                    s(&f["from"]),
                    s(&f["to"]),
                    s(&f["reason"])
                );
            }
        }
    }
    Ok(())
}

fn abs(p: &std::path::Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

fn s(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

fn status_table(r: &Value) {
    println!(
        "{:<16} {:<17} {:<9} {:>8} {:<16} {:>14} {:>14} {:>10} {:>10}",
        "VNIC", "MAC", "STATE", "PID", "ACTIVE", "RX PKTS", "TX PKTS", "RX DROPS", "TX DROPS"
    );
    for v in r["vnics"].as_array().into_iter().flatten() {
        println!(
            "{:<16} {:<17} {:<9} {:>8} {:<16} {:>14} {:>14} {:>10} {:>10}",
            s(&v["name"]),
            s(&v["mac"]),
            s(&v["state"]),
            v["client_pid"]
                .as_i64()
                .map(|p| p.to_string())
                .unwrap_or("-".into()),
            v["active_backing"].as_str().unwrap_or("-"),
            s(&v["rx_packets"]),
            s(&v["tx_packets"]),
            s(&v["rx_drops"]),
            s(&v["tx_drops"])
        );
    }
    if let Some(g) = r["generation"].as_u64() {
        println!("forwarding-table generation {g}");
    }
}
