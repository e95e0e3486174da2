//! Open vSwitch with DPDK (Debian `openvswitch-switch-dpdk`) as a baseline device under test:
//! a private ovsdb-server and ovs-vswitchd (their db, run and log files in the harness's folder,
//! never the system service), one `netdev` bridge, one DPDK port per memif devargs, and
//! `in_port` flows that cross-connect port 1 and port 2, so OVS does what testpmd io does.
use crate::procs::Guard;
use crate::vnicd::Res;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The DPDK build of ovs-vswitchd in Debian (installed beside the plain one, not made the
/// default by the package).
pub const VSWITCHD: &str = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// Why OVS-DPDK cannot run here, or `None` when everything it needs is installed.
pub fn missing() -> Option<String> {
    let mut gone: Vec<&str> = Vec::new();
    for b in [
        "ovsdb-tool",
        "ovsdb-server",
        "ovs-vsctl",
        "ovs-ofctl",
        "ovs-appctl",
    ] {
        if Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            gone.push(b);
        }
    }
    for f in [VSWITCHD, SCHEMA] {
        if !Path::new(f).exists() {
            gone.push(f);
        }
    }
    (!gone.is_empty()).then(|| {
        format!(
            "Open vSwitch with DPDK is not installed (missing {}): `make bench-deps` installs openvswitch-switch-dpdk",
            gone.join(", ")
        )
    })
}

/// A running OVS-DPDK.
pub struct Ovs {
    dir: PathBuf,
    // Field order is drop order: the switch goes before its database.
    vswitchd: Guard,
    _ovsdb: Guard,
}

fn run(dir: &Path, prog: &str, args: &[&str]) -> Res<String> {
    let out = Command::new(prog)
        .args(args)
        .env("OVS_RUNDIR", dir)
        .env("OVS_DBDIR", dir)
        .env("OVS_LOGDIR", dir)
        .env("OVS_SYSCONFDIR", dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{prog}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A port given as `vhostuserclient:PATH` is a `dpdkvhostuserclient` port on PATH (OVS dials the
/// frontend there); any other is `type=dpdk` with those devargs.
pub const VHOST_USER_CLIENT: &str = "vhostuserclient:";

impl Ovs {
    /// Start OVS in `dir` (made empty first) with its PMD thread on `pmd_cpu` and its main
    /// thread on `main_cpu`, and add one port per devargs (their memif servers must be up) or
    /// [`VHOST_USER_CLIENT`] path.
    pub fn start(dir: &Path, ports: &[String], pmd_cpu: u32, main_cpu: u32) -> Res<Ovs> {
        if let Some(why) = missing() {
            return Err(why.into());
        }
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let db = dir.join("conf.db");
        let db_s = db.display().to_string();
        run(dir, "ovsdb-tool", &["create", &db_s, SCHEMA])?;
        let remote = format!("punix:{}", dir.join("db.sock").display());
        let spawn = |prog: &str, args: Vec<String>| -> Res<Guard> {
            let child = Command::new(prog)
                .args(&args)
                .env("OVS_RUNDIR", dir)
                .env("OVS_DBDIR", dir)
                .env("OVS_LOGDIR", dir)
                .env("OVS_SYSCONFDIR", dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("{prog}: {e}"))?;
            Ok(Guard::new(prog.to_string(), child))
        };
        let mut ovsdb = spawn(
            "ovsdb-server",
            vec![
                format!("--remote={remote}"),
                format!("--unixctl={}", dir.join("ovsdb.ctl").display()),
                format!("--log-file={}", dir.join("ovsdb.log").display()),
                db_s.clone(),
            ],
        )?;
        let dbarg = format!("--db=unix:{}", dir.join("db.sock").display());
        let end = Instant::now() + Duration::from_secs(10);
        while !dir.join("db.sock").exists() {
            if !ovsdb.running() || Instant::now() > end {
                return Err(format!(
                    "ovsdb-server did not start (see {})",
                    dir.join("ovsdb.log").display()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mask = |c: u32| format!("0x{:x}", 1u64 << c);
        run(
            dir,
            "ovs-vsctl",
            &[
                &dbarg,
                "--no-wait",
                "init",
                "--",
                "set",
                "Open_vSwitch",
                ".",
                "other_config:dpdk-init=true",
                &format!("other_config:dpdk-lcore-mask={}", mask(main_cpu)),
                &format!("other_config:pmd-cpu-mask={}", mask(pmd_cpu)),
                "other_config:dpdk-socket-mem=512",
                // One process of many here: no files under /dev/hugepages, no PCI scan.
                "other_config:dpdk-extra=--in-memory --no-pci --no-telemetry",
            ],
        )?;
        let vswitchd = spawn(
            VSWITCHD,
            vec![
                format!("unix:{}", dir.join("db.sock").display()),
                format!("--unixctl={}", dir.join("vswitchd.ctl").display()),
                format!("--log-file={}", dir.join("vswitchd.log").display()),
            ],
        )?;
        let mut o = Ovs {
            dir: dir.to_path_buf(),
            vswitchd,
            _ovsdb: ovsdb,
        };
        let log = || dir.join("vswitchd.log").display().to_string();
        // ovs-vsctl (without --no-wait) returns once vswitchd has applied the change.
        let vsctl = |args: &[&str]| -> Res<String> {
            let mut a = vec![dbarg.as_str(), "--timeout=30"];
            a.extend_from_slice(args);
            run(dir, "ovs-vsctl", &a)
        };
        vsctl(&[
            "add-br",
            "br0",
            "--",
            "set",
            "bridge",
            "br0",
            "datapath_type=netdev",
        ])
        .map_err(|e| format!("{e} (see {})", log()))?;
        for (i, p) in ports.iter().enumerate() {
            let name = format!("p{i}");
            let ofport = format!("ofport_request={}", i + 1);
            let mut args = vec!["add-port", "br0", &name, "--", "set", "Interface", &name];
            let devargs;
            let server_path;
            if let Some(path) = p.strip_prefix(VHOST_USER_CLIENT) {
                // A VM's port as OVS users set it up: OVS dials the frontend's socket.
                server_path = format!("options:vhost-server-path={path}");
                args.extend(["type=dpdkvhostuserclient", server_path.as_str()]);
            } else {
                devargs = format!("options:dpdk-devargs={p}");
                // OVS opens two tx queues per port; a memif server must offer two (DESIGN §8).
                args.extend(["type=dpdk", devargs.as_str(), "options:n_rxq=2"]);
            }
            args.push(&ofport);
            vsctl(&args).map_err(|e| format!("{e} (see {})", log()))?;
            let err = vsctl(&["get", "Interface", &name, "error"]).unwrap_or_default();
            if !err.trim().is_empty() && err.trim() != "[]" {
                return Err(format!("OVS port {name} ({p}): {}", err.trim()).into());
            }
        }
        o.ofctl(&["del-flows", "br0"])?;
        if ports.len() == 2 {
            o.ofctl(&["add-flow", "br0", "in_port=1,actions=output:2"])?;
            o.ofctl(&["add-flow", "br0", "in_port=2,actions=output:1"])?;
        }
        if !o.vswitchd.running() {
            return Err(format!("ovs-vswitchd exited (see {})", log()).into());
        }
        Ok(o)
    }

    fn ofctl(&mut self, args: &[&str]) -> Res<String> {
        // ovs-ofctl finds the bridge's management socket in OVS_RUNDIR.
        run(&self.dir, "ovs-ofctl", args)
    }

    fn appctl(&self, args: &[&str]) -> Res<String> {
        let t = self.dir.join("vswitchd.ctl").display().to_string();
        let mut a = vec!["-t", t.as_str()];
        a.extend_from_slice(args);
        run(&self.dir, "ovs-appctl", &a)
    }

    /// Zero the PMD counters (before a measured trial).
    pub fn clear_stats(&self) -> Res<()> {
        self.appctl(&["dpif-netdev/pmd-stats-clear"]).map(|_| ())
    }

    /// (processing cycles per packet, idle share) of the PMD thread since the last clear.
    pub fn pmd_cost(&self) -> Res<(Option<f64>, Option<f64>)> {
        let s = self.appctl(&["dpif-netdev/pmd-stats-show"])?;
        Ok(parse_pmd_stats(&s))
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        self.vswitchd.running()
    }

    /// The datapath's drop counters summed over its ports (`dpctl/show -s`).
    pub fn drops(&self) -> Res<std::collections::BTreeMap<String, u64>> {
        Ok(parse_dpctl_drops(&self.appctl(&["dpctl/show", "-s"])?))
    }
}

/// From `dpctl/show -s`: "RX packets:N errors:N dropped:N …" and "TX packets:N errors:N
/// dropped:N …" per port, summed as `rx_dropped` and `tx_dropped`.
pub fn parse_dpctl_drops(s: &str) -> std::collections::BTreeMap<String, u64> {
    let mut m =
        std::collections::BTreeMap::from([("rx_dropped".into(), 0), ("tx_dropped".into(), 0)]);
    for l in s.lines().map(str::trim) {
        let key = if l.starts_with("RX packets:") {
            "rx_dropped"
        } else if l.starts_with("TX packets:") {
            "tx_dropped"
        } else {
            continue;
        };
        let n = l
            .split_whitespace()
            .find_map(|w| w.strip_prefix("dropped:")?.parse::<u64>().ok())
            .unwrap_or(0);
        *m.entry(key.to_string()).or_default() += n;
    }
    m
}

/// From `dpif-netdev/pmd-stats-show`: "avg processing cycles per packet: 230.37 (…)" and
/// "idle cycles: N (12.34 %)".
pub fn parse_pmd_stats(s: &str) -> (Option<f64>, Option<f64>) {
    let after = |key: &str| -> Option<&str> {
        let l = s.lines().find(|l| l.trim_start().starts_with(key))?;
        Some(l.split_once(':')?.1.trim())
    };
    let cpp = after("avg processing cycles per packet")
        .and_then(|v| v.split_whitespace().next()?.parse().ok());
    let idle = after("idle cycles").and_then(|v| {
        let pct = v.split_once('(')?.1.split('%').next()?.trim();
        pct.parse::<f64>().ok().map(|p| p / 100.0)
    });
    (cpp, idle)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pmd_stats_parse() {
        let s = "pmd thread numa_id 0 core_id 1:\n  packets received: 100\n  idle cycles: 5000 (12.50%)\n  processing cycles: 35000 (87.50%)\n  avg cycles per packet: 400.00 (40000/100)\n  avg processing cycles per packet: 350.00 (35000/100)\n";
        assert_eq!(super::parse_pmd_stats(s), (Some(350.0), Some(0.125)));
        assert_eq!(super::parse_pmd_stats(""), (None, None));
    }

    #[test]
    fn dpctl_drops_parse() {
        let s = "netdev@ovs-netdev:\n  lookups: hit:9 missed:2 lost:0\n  port 1: p0 (dpdk)\n    RX packets:100 errors:0 dropped:7 overruns:0 frame:0\n    TX packets:90 errors:0 dropped:3 aborted:0 carrier:0\n  port 2: p1 (dpdk)\n    RX packets:5 errors:0 dropped:1 overruns:0 frame:0\n    TX packets:5 errors:0 dropped:? aborted:0 carrier:0\n";
        let m = super::parse_dpctl_drops(s);
        assert_eq!((m["rx_dropped"], m["tx_dropped"]), (8, 3));
    }
}
