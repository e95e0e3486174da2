//! The `vnic-gen` traffic generator under the harness: started with its ports, driven by JSON
//! lines on stdin, results read as JSON lines from stdout.
use crate::procs::Guard;
use crate::vnicd::Res;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// Latency of one trial, in µs, as `vnic-gen` reports it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Latency {
    pub samples: u64,
    pub min_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p99_9_us: f64,
    pub max_us: f64,
    /// (quantile, µs) pairs.
    pub cdf: Vec<(f64, f64)>,
}

/// One trial's result.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct TrialResult {
    pub id: u32,
    /// Offered frames/s (0 = as fast as the generator can).
    pub rate: u64,
    pub seconds: f64,
    /// Send attempts.
    pub offered: u64,
    /// Frames of the schedule never attempted: the generator fell further behind than its
    /// backlog allows (its CPU stalled) and dropped that backlog rather than burst to catch
    /// up. `offered + skipped` is what the rate asked for.
    #[serde(default)]
    pub skipped: u64,
    /// Attempts the DUT's port refused (its ring full: back-pressure).
    pub refused: u64,
    /// What the DUT took (`offered - refused`).
    #[serde(default)]
    pub sent: u64,
    pub received: u64,
    /// `offered - received`.
    pub lost: u64,
    /// `sent - received`: taken by the DUT and never returned.
    #[serde(default)]
    pub dut_lost: u64,
    pub loss_ratio: f64,
    /// Send attempts per second.
    pub tx_fps: f64,
    /// Frames per second the DUT took.
    #[serde(default)]
    pub sent_fps: f64,
    pub rx_fps: f64,
    pub gen_limited: bool,
    pub latency: Option<Latency>,
    /// Per port, in `--port` order.
    #[serde(default)]
    pub ports: Vec<PortResult>,
    #[serde(default)]
    pub host: HostProbe,
    pub error: Option<String>,
}

/// The host's mode around a trial (see `vnic-gen`): a ratio of two DUTs means something only
/// when both ran in the same mode.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq)]
pub struct HostProbe {
    /// ns per step of a dependent chain on the generator's CPU just before the trial.
    pub chain_ns: f64,
    /// GB/s copying 4 MiB just before the trial.
    pub copy_gbps: f64,
    /// Share of all CPUs' time the hypervisor stole during the trial.
    pub steal_share: f64,
}

/// One port's share of a trial.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct PortResult {
    pub offered: u64,
    pub received: u64,
    pub lost: u64,
    /// Longest time between two frames coming back on this port (µs).
    pub max_gap_us: f64,
}

/// Where and how a generator runs beyond its ports.
#[derive(Debug, Clone, Default)]
pub struct GenPlace {
    /// Run inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
    /// Destination MAC per port (default 02:00:00:00:00:0N+1).
    pub dst: Vec<String>,
}

/// The IMIX the harness uses: the classic 7:4:1 of 64, 570 and 1518 bytes, interleaved.
pub const IMIX: [u16; 12] = [64, 570, 64, 64, 570, 64, 1518, 64, 570, 64, 64, 570];

/// A running generator.
pub struct Gen {
    guard: Guard,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    next_id: u32,
    /// Its stderr, for errors.
    errors: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Gen {
    /// Start `vnic-gen` (next to `vnicd`) on `cpu` with these ports. It answers once every link
    /// is up; call [`Gen::wait_ready`] after the device under test is started.
    pub fn spawn(vnicd: &Path, cpu: u32, ports: &[String], queues: u16, huge: bool) -> Res<Gen> {
        Self::spawn_at(vnicd, cpu, ports, queues, huge, &GenPlace::default())
    }

    /// [`Gen::spawn`] in a network namespace and/or with chosen destination MACs.
    pub fn spawn_at(
        vnicd: &Path,
        cpu: u32,
        ports: &[String],
        queues: u16,
        huge: bool,
        place: &GenPlace,
    ) -> Res<Gen> {
        let bin = vnicd.with_file_name("vnic-gen");
        let mut cmd = match &place.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        for d in &place.dst {
            cmd.arg("--dst").arg(d);
        }
        cmd.arg("--cpu").arg(cpu.to_string());
        cmd.arg("--queues").arg(queues.to_string());
        for p in ports {
            cmd.arg("--port").arg(p);
        }
        if !huge {
            cmd.arg("--no-huge");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start vnic-gen (build it: `make build`): {e}"))?;
        let stdin = child.stdin.take();
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for l in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
        }
        let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        if let Some(err) = child.stderr.take() {
            let e = errors.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Ok(mut v) = e.lock() {
                        v.push(l);
                    }
                }
            });
        }
        Ok(Gen {
            guard: Guard::new("vnic-gen", child),
            stdin,
            lines: rx,
            next_id: 1,
            errors,
        })
    }

    fn why(&self) -> String {
        self.errors
            .lock()
            .map(|v| v[v.len().saturating_sub(3)..].join(" | "))
            .unwrap_or_default()
    }

    /// The next line, or `None` when none came within `timeout`.
    fn next_line(&mut self, timeout: Duration) -> Res<Option<String>> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => Ok(Some(l)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(_) => Err(format!("vnic-gen exited: {}", self.why()).into()),
        }
    }

    fn line(&mut self, timeout: Duration) -> Res<String> {
        self.next_line(timeout)?
            .ok_or_else(|| format!("vnic-gen did not answer: {}", self.why()).into())
    }

    /// `Ok(true)` once the status line with `key` arrives, `Ok(false)` if none came in `timeout`.
    fn status(&mut self, key: &str, timeout: Duration) -> Res<bool> {
        match self.next_line(timeout)? {
            None => Ok(false),
            Some(l) if l.contains(key) => Ok(true),
            Some(l) => Err(format!("vnic-gen: unexpected {l:?}").into()),
        }
    }

    /// Wait until its ports are started (memif servers listening).
    pub fn wait_listening(&mut self, timeout: Duration) -> Res<()> {
        if !self.status("\"listening\":true", timeout)? {
            return Err(format!("vnic-gen did not start its ports: {}", self.why()).into());
        }
        Ok(())
    }

    /// Whether every link came up within `timeout` (poll it while watching the peer).
    pub fn poll_ready(&mut self, timeout: Duration) -> Res<bool> {
        self.status("\"ready\":true", timeout)
    }

    /// Wait until every link is up.
    pub fn wait_ready(&mut self, timeout: Duration) -> Res<()> {
        if !self.poll_ready(timeout)? {
            return Err(format!("vnic-gen: links not up after {timeout:?}: {}", self.why()).into());
        }
        Ok(())
    }

    /// Run one trial: `warmup` seconds not counted, then `seconds` counted.
    pub fn trial(
        &mut self,
        rate: u64,
        seconds: f64,
        warmup: f64,
        sizes: &[u16],
        latency: bool,
    ) -> Res<TrialResult> {
        let id = self.next_id;
        self.next_id += 1;
        let cmd = serde_json::json!({"op": "trial", "id": id, "rate": rate, "seconds": seconds,
            "warmup": warmup, "sizes": sizes, "latency": latency});
        let s = self.stdin.as_mut().ok_or("vnic-gen stdin closed")?;
        writeln!(s, "{cmd}")
            .and_then(|_| s.flush())
            .map_err(|e| format!("vnic-gen: {e}: {}", self.why()))?;
        let l = self.line(Duration::from_secs_f64(seconds + warmup + 15.0))?;
        let r: TrialResult =
            serde_json::from_str(&l).map_err(|e| format!("vnic-gen said {l:?}: {e}"))?;
        if let Some(e) = &r.error {
            return Err(format!("vnic-gen: {e}").into());
        }
        Ok(r)
    }

    /// Stop it (quit, then signals).
    pub fn quit(mut self) {
        if let Some(mut s) = self.stdin.take() {
            let _ = writeln!(s, r#"{{"op":"quit"}}"#);
        }
        if self.guard.wait_timeout(Duration::from_secs(5)).is_some() {
            self.guard.child.take();
        }
    }

    /// Is it still running?
    pub fn running(&mut self) -> bool {
        self.guard.running()
    }
}
