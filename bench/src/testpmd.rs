//! A `dpdk-testpmd` peer in interactive mode: commands on stdin, output parsed from stdout.
use crate::procs::Guard;
use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How to start testpmd.
#[derive(Debug, Clone)]
pub struct TestpmdOpts {
    /// CPU of the forwarding lcore.
    pub fwd_core: u32,
    /// CPU of the main lcore (blocks on the prompt; nearly idle).
    pub main_core: u32,
    /// `--vdev` strings, one port each.
    pub vdevs: Vec<String>,
    /// Use hugepages (`--in-memory`) or `--no-huge`.
    pub hugepages: bool,
    /// `io`, `macswap`, `rxonly`, ...
    pub forward_mode: String,
    /// `paired`, `chained` or `loop`.
    pub port_topology: String,
    /// Extra application args (after `--`).
    pub extra: Vec<String>,
    /// Extra EAL args (before `--`), e.g. `--single-file-segments` for a virtio-user port (a
    /// vhost-user backend maps at most 8 memory regions; one file per hugepage would be more).
    pub eal_extra: Vec<String>,
}

impl TestpmdOpts {
    /// io forwarding on the given memif-style vdevs.
    pub fn io(
        fwd_core: u32,
        main_core: u32,
        vdevs: Vec<String>,
        hugepages: bool,
        topology: &str,
    ) -> Self {
        TestpmdOpts {
            fwd_core,
            main_core,
            vdevs,
            hugepages,
            forward_mode: "io".into(),
            port_topology: topology.into(),
            extra: vec![],
            eal_extra: vec![],
        }
    }

    /// The full argv (without the program).
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "-l".to_string(),
            format!(
                "{},{}",
                self.fwd_core.min(self.main_core),
                self.fwd_core.max(self.main_core)
            ),
            "--main-lcore".into(),
            self.main_core.to_string(),
            "--no-pci".into(),
            "--no-telemetry".into(),
            "--log-level=4".into(),
        ];
        if self.hugepages {
            a.extend(["--in-memory".into(), "-m".into(), "512".into()]);
        } else {
            a.extend([
                "--no-huge".into(),
                "-m".into(),
                "512".into(),
                "--no-shconf".into(),
            ]);
        }
        for v in &self.vdevs {
            a.push(format!("--vdev={v}"));
        }
        a.extend(self.eal_extra.iter().cloned());
        a.extend([
            "--".into(),
            "-i".into(),
            format!("--forward-mode={}", self.forward_mode),
            format!("--port-topology={}", self.port_topology),
            "--nb-cores=1".into(),
            "--total-num-mbufs=32768".into(),
        ]);
        a.extend(self.extra.iter().cloned());
        a
    }
}

/// The value after `key` in one of testpmd's output lines (`RX-packets: 123  RX-dropped: 0`).
fn field<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    let i = line.find(key)?;
    line[i + key.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What testpmd's `stop` prints for the period since `start`, summed over its ports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ForwardStats {
    /// Frames the device missed on receive (its rx queue was full).
    pub rx_dropped: u64,
    /// Frames the forwarding engine dropped because the tx queue refused them.
    pub tx_dropped: u64,
    /// Busy cycles per packet (`--record-core-cycles` only).
    pub cycles_per_packet: Option<f64>,
}

/// Port counters as testpmd shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    pub rx_packets: u64,
    pub rx_missed: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
}

/// A started testpmd peer that reflects what it receives (io, loop topology) on one memif
/// server port `net_memif{i}` listening on `sock` (a stale socket file is removed first).
pub fn memif_reflector(sock: &std::path::Path, i: usize, huge: bool) -> Result<Testpmd, PeerError> {
    let _ = std::fs::remove_file(sock);
    let mut p = Testpmd::spawn(&TestpmdOpts::io(
        0,
        1,
        vec![format!(
            "net_memif{i},role=server,socket={},id=0",
            sock.display()
        )],
        huge,
        "loop",
    ))?;
    p.cmd("start")?;
    Ok(p)
}

/// A running testpmd.
pub struct Testpmd {
    guard: Guard,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    ports: usize,
    /// Every line seen (for diagnostics when something fails).
    pub log: Vec<String>,
}

/// Harness errors, with what testpmd printed last.
#[derive(Debug)]
pub struct PeerError(pub String);

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for PeerError {}

/// The testpmd binary: `$TESTPMD` or `dpdk-testpmd` on PATH.
pub fn testpmd_bin() -> String {
    std::env::var("TESTPMD").unwrap_or_else(|_| "dpdk-testpmd".into())
}

impl Testpmd {
    /// Start testpmd and wait for its prompt.
    pub fn spawn(o: &TestpmdOpts) -> Result<Testpmd, PeerError> {
        // stdbuf: line-buffered stdout so stats arrive when printed (DESIGN §8).
        let mut cmd = Command::new("stdbuf");
        cmd.arg("-oL").arg(testpmd_bin()).args(o.args());
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            PeerError(format!(
                "cannot start {} (install dpdk-dev): {e}",
                testpmd_bin()
            ))
        })?;
        let stdin = child.stdin.take();
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
        }
        let mut t = Testpmd {
            guard: Guard::new("dpdk-testpmd", child),
            stdin,
            lines: rx,
            ports: o.vdevs.len(),
            log: Vec::new(),
        };
        // "Done" follows the link-status check at the end of start-up.
        t.wait_line(
            |l| l.trim() == "Done" || l.contains("Press enter"),
            Duration::from_secs(30),
        )
        .map_err(|e| PeerError(format!("testpmd did not come up: {e}")))?;
        Ok(t)
    }

    /// PID of the process.
    pub fn pid(&self) -> Option<u32> {
        self.guard.pid()
    }

    /// Send one command line.
    pub fn cmd(&mut self, line: &str) -> Result<(), PeerError> {
        let s = self
            .stdin
            .as_mut()
            .ok_or_else(|| PeerError("testpmd stdin closed".into()))?;
        writeln!(s, "{line}")
            .and_then(|_| s.flush())
            .map_err(|e| PeerError(format!("testpmd command {line:?}: {e}")))
    }

    fn next_line(&mut self, deadline: Instant) -> Result<String, PeerError> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(l) => {
                self.log.push(l.clone());
                Ok(l)
            }
            Err(RecvTimeoutError::Timeout) => Err(PeerError(format!(
                "timeout; last output: {:?}",
                self.tail(8)
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(PeerError(format!(
                "testpmd exited; last output: {:?}",
                self.tail(12)
            ))),
        }
    }

    /// Last `n` lines of output.
    pub fn tail(&self, n: usize) -> Vec<String> {
        self.log[self.log.len().saturating_sub(n)..].to_vec()
    }

    /// Wait for a line matching `f`.
    pub fn wait_line(
        &mut self,
        f: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, PeerError> {
        let deadline = Instant::now() + timeout;
        loop {
            let l = self.next_line(deadline)?;
            if f(&l) {
                return Ok(l);
            }
        }
    }

    /// `show port stats all`, parsed per port.
    pub fn port_stats(&mut self) -> Result<Vec<PortCounters>, PeerError> {
        self.cmd("show port stats all")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut out = vec![PortCounters::default(); self.ports];
        let mut cur: Option<usize> = None;
        let mut done = 0;
        while done < self.ports {
            let l = self.next_line(deadline)?;
            if let Some(i) = l.find("NIC statistics for port") {
                cur = l[i + 23..]
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok());
                continue;
            }
            let Some(p) = cur else { continue };
            if p >= out.len() {
                continue;
            }
            let num = |key: &str| field::<u64>(&l, key);
            if let Some(v) = num("RX-packets:") {
                out[p].rx_packets = v;
            }
            if let Some(v) = num("RX-missed:") {
                out[p].rx_missed = v;
            }
            if let Some(v) = num("TX-packets:") {
                out[p].tx_packets = v;
            }
            if let Some(v) = num("TX-errors:") {
                out[p].tx_errors = v;
            }
            let t = l.trim();
            if t.len() > 20 && t.chars().all(|c| c == '#') {
                cur = None;
                done += 1;
            }
        }
        Ok(out)
    }

    /// `stop` forwarding and read the busy cycles per packet since the last `start` (printed
    /// when testpmd runs with `--record-core-cycles`; `None` otherwise).
    pub fn stop_cycles_per_packet(&mut self) -> Result<Option<f64>, PeerError> {
        Ok(self.stop_forward_stats()?.cycles_per_packet)
    }

    /// `stop` forwarding and read what it prints about the period since the last `start`.
    pub fn stop_forward_stats(&mut self) -> Result<ForwardStats, PeerError> {
        self.cmd("stop")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut s = ForwardStats::default();
        let mut accumulated = false;
        loop {
            let l = self.next_line(deadline)?;
            if l.contains("Accumulated forward statistics") {
                accumulated = true;
            }
            if accumulated {
                if let Some(v) = field(&l, "RX-dropped:") {
                    s.rx_dropped = v;
                }
                if let Some(v) = field(&l, "TX-dropped:") {
                    s.tx_dropped = v;
                }
            }
            if let Some(v) = field(&l, "CPU cycles/packet=") {
                s.cycles_per_packet = Some(v);
            }
            if l.trim() == "Done." {
                return Ok(s);
            }
        }
    }

    /// Whether port `p`'s link is up (`show port info`).
    pub fn link_up(&mut self, p: usize) -> Result<bool, PeerError> {
        self.cmd(&format!("show port info {p}"))?;
        let l = self.wait_line(|l| l.contains("Link status:"), Duration::from_secs(5))?;
        Ok(l.contains("up"))
    }

    /// Poll until every port in `ports` has link up.
    pub fn wait_links(&mut self, ports: &[usize], timeout: Duration) -> Result<(), PeerError> {
        let end = Instant::now() + timeout;
        for &p in ports {
            while !self.link_up(p)? {
                if Instant::now() > end {
                    return Err(PeerError(format!(
                        "link of testpmd port {p} did not come up in {timeout:?}"
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Stop forwarding (before tearing peers down: DESIGN §8), then quit and reap.
    pub fn quit(mut self) -> Option<std::process::ExitStatus> {
        let _ = self.cmd("stop");
        let _ = self.cmd("quit");
        self.stdin.take();
        if let Some(s) = self.guard.wait_timeout(Duration::from_secs(5)) {
            self.guard.child.take();
            return Some(s);
        }
        self.guard.stop(Duration::from_secs(2))
    }

    /// Is it still running?
    pub fn running(&mut self) -> bool {
        self.guard.running()
    }
}
