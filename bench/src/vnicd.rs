//! A `vnicd` process under the harness: start it on a config, ask its admin socket, wait for a
//! state, read its JSON summary. Shared by every scenario and the demo.
use crate::procs::Guard;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Harness errors.
pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Write `cfg` to `cfg_path` and start `vnicd --config cfg_path --quiet ARGS`. With `capture`,
/// stdout (the `--json-summary` line) and stderr (why it failed) are piped for
/// [`Guard::collect_output`]; otherwise both are dropped.
pub fn spawn(
    vnicd: &Path,
    cfg_path: &Path,
    cfg: &Value,
    args: &[&str],
    capture: bool,
) -> Res<Guard> {
    std::fs::write(cfg_path, cfg.to_string())?;
    let child = Command::new(vnicd)
        .arg("--config")
        .arg(cfg_path)
        .arg("--quiet")
        .args(args)
        .stdin(Stdio::null())
        .stdout(if capture {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if capture {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()?;
    Ok(Guard::new("vnicd", child))
}

/// One request on the admin socket.
pub fn admin(socket: &Path, op: &str, fields: Value) -> Res<Value> {
    Ok(vnic_control::client::Client::connect(socket)?.request(op, fields)?)
}

/// `STATUS` on the admin socket.
pub fn status(socket: &Path) -> Res<Value> {
    admin(socket, "STATUS", json!({}))
}

/// Poll `STATUS` until `pred` holds; fails when vnicd exits or after `timeout`.
pub fn wait_for(
    socket: &Path,
    vd: &mut Guard,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Res<()> {
    let end = Instant::now() + timeout;
    loop {
        if status(socket).is_ok_and(|st| pred(&st)) {
            return Ok(());
        }
        if !vd.running() {
            return Err(format!("vnicd exited while waiting for {what}").into());
        }
        if Instant::now() > end {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `--json-summary` line of vnicd's stdout.
pub fn summary(stdout: &str) -> Res<Value> {
    Ok(stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or("vnicd printed no JSON summary")?)
}

/// Frames sent by all vNICs in a summary, per second, in millions.
pub fn tx_mpps(summary: &Value) -> f64 {
    let tx: f64 = summary["status"]["vnics"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v["tx_packets"].as_f64().unwrap_or(0.0))
                .sum()
        })
        .unwrap_or(0.0);
    tx / summary["seconds"].as_f64().unwrap_or(f64::NAN) / 1e6
}

/// What happens to a child's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Dropped.
    Drop,
    /// Piped, for [`Guard::collect_output`].
    Capture,
    /// stderr shown on ours (the demo), stdout dropped.
    ShowErrors,
}

/// Stop a `vnic-client` (SIGINT) and read what it said it sent and got back from its last
/// summary line ("vnic-client: detached (...); rx N tx N drops D in S s"): (sent, received).
pub fn stop_client(
    c: &mut Guard,
    stderr: std::thread::JoinHandle<String>,
    timeout: Duration,
) -> Res<(u64, u64)> {
    c.signal(libc::SIGINT);
    c.wait_timeout(timeout).ok_or("vnic-client did not stop")?;
    c.child.take();
    let text = stderr.join().unwrap_or_default();
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("detached ("))
        .ok_or_else(|| format!("no client summary in {text:?}"))?;
    let num = |key: &str| -> Option<u64> {
        line.split(key)
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    match (num(" tx "), num(" rx ")) {
        (Some(tx), Some(rx)) => Ok((tx, rx)),
        _ => Err(format!("no counts in the client summary {line:?}").into()),
    }
}

/// Start `vnic-client MODE --vnic VNIC --socket SOCKET --cpu CPU --quiet EXTRA…`, the binary
/// next to `vnicd`.
pub fn client(
    vnicd: &Path,
    mode: &str,
    vnic: &str,
    socket: &Path,
    cpu: u32,
    extra: &[&str],
    out: Output,
) -> Res<Guard> {
    let (o, e) = match out {
        Output::Drop => (Stdio::null(), Stdio::null()),
        Output::Capture => (Stdio::piped(), Stdio::piped()),
        Output::ShowErrors => (Stdio::null(), Stdio::inherit()),
    };
    let child = Command::new(vnicd.with_file_name("vnic-client"))
        .args([
            mode,
            "--vnic",
            vnic,
            "--cpu",
            &cpu.to_string(),
            "--quiet",
            "--socket",
        ])
        .arg(socket)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(o)
        .stderr(e)
        .spawn()?;
    Ok(Guard::new(format!("vnic-client {vnic}"), child))
}

/// Wait until every vNIC is attached.
pub fn wait_all_attached(socket: &Path, vd: &mut Guard) -> Res<()> {
    wait_for(
        socket,
        vd,
        "the clients to attach",
        Duration::from_secs(20),
        |st| {
            st["vnics"]
                .as_array()
                .is_some_and(|v| v.iter().all(|v| v["state"] == "attached"))
        },
    )
}
