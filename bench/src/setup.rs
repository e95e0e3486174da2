//! Deciding what a run does from the command line and the host, before anything starts.
use crate::topo;
use crate::{Args, Res, Scenario};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// What a run does, decided from the command line and the host before anything starts: every
/// input error (values, CPUs, programs, hugepages) is named here, then the busy-host check.
pub(crate) struct Setup {
    pub(crate) quick: bool,
    pub(crate) ncpu: u32,
    pub(crate) rounds: u32,
    pub(crate) seconds: f64,
    pub(crate) client_cpu: u32,
    pub(crate) vnicd: PathBuf,
    pub(crate) huge: bool,
    pub(crate) set: Vec<Scenario>,
    pub(crate) label: String,
    pub(crate) topos: Vec<topo::Topo>,
    pub(crate) ovs_skipped: Option<String>,
    pub(crate) plan: topo::Plan,
}

pub(crate) fn setup(args: &Args) -> Res<Setup> {
    let quick = args.quick;
    let rounds = args.rounds.unwrap_or(if quick { 1 } else { 5 });
    let seconds = args.seconds.unwrap_or(if quick { 1.0 } else { 3.0 });
    if rounds == 0 || !(seconds > 0.0 && seconds.is_finite()) {
        return Err("--rounds and --seconds must be positive".into());
    }
    // Not available_parallelism(): this process is pinned to one CPU by now.
    let ncpu = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(1)
        .max(1) as u32;
    if args.gen_cpu == args.dut_cpu || args.gen_cpu >= ncpu || args.dut_cpu >= ncpu {
        return Err(format!(
            "--gen-cpu {} / --dut-cpu {}: need two different CPUs below {ncpu}",
            args.gen_cpu, args.dut_cpu
        )
        .into());
    }
    let client_cpu = args.client_cpu.unwrap_or(args.dut_cpu);
    if client_cpu >= ncpu || client_cpu == args.gen_cpu {
        return Err(format!(
            "--client-cpu {client_cpu}: must be below {ncpu} and not the generator's CPU"
        )
        .into());
    }
    let vnicd = match args.vnicd.clone() {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("vnicd"),
    };
    for b in ["vnicd", "vnic-gen", "vnic-client"] {
        let p = vnicd.with_file_name(b);
        if !p.exists() {
            return Err(format!("{} not found: build with `make build`", p.display()).into());
        }
    }
    let huge = vnic_dataplane::eal::host_hugepages_usable();
    let comparison = args.scenario.is_empty();
    let mut set: Vec<Scenario> = if comparison {
        let mut v = vec![
            Scenario::Pvp,
            Scenario::BaselineTestpmd,
            Scenario::BaselineOvs,
            Scenario::PvVhost,
            Scenario::PvMemif,
            Scenario::Scale,
            Scenario::Failover,
            Scenario::Reload,
        ];
        if !quick {
            v.extend([Scenario::Null, Scenario::Memif]);
        }
        v
    } else {
        args.scenario.clone()
    };
    set.dedup();
    let label = if comparison {
        "comparison".to_string()
    } else {
        set.iter().map(|s| s.name()).collect::<Vec<_>>().join("+")
    };
    let needs_testpmd = set.iter().any(|s| {
        matches!(
            s,
            Scenario::BaselineTestpmd
                | Scenario::Latency
                | Scenario::Failover
                | Scenario::Null
                | Scenario::Memif
                | Scenario::PvVhost
                | Scenario::PvMemif
        )
    });
    if needs_testpmd && !which_testpmd() {
        return Err("dpdk-testpmd not found (it is in Debian's dpdk-dev: `make deps`)".into());
    }
    let mut topos: Vec<topo::Topo> = Vec::new();
    for s in &set {
        match s {
            Scenario::Pvp => {
                // The same vNIC path with the client on the data core: what vnicd costs
                // without a third poller sharing the DUT's CPU (a 2-CPU host's artefact).
                topos.extend([topo::Topo::Vnicd, topo::Topo::VnicdInline]);
            }
            Scenario::BaselineTestpmd => topos.push(topo::Topo::TestpmdIo),
            Scenario::BaselineOvs => topos.push(topo::Topo::OvsDpdk),
            Scenario::Latency => topos.extend([topo::Topo::Vnicd, topo::Topo::TestpmdIo]),
            // The shm path (vnicd with client processes) runs in the same rounds: what the copy
            // of the other transports costs.
            Scenario::PvVhost => topos.extend([
                topo::Topo::PvVhostVnicd,
                topo::Topo::PvVhostTestpmdIo,
                topo::Topo::PvVhostOvsDpdk,
                topo::Topo::Vnicd,
            ]),
            Scenario::PvMemif => topos.extend([
                topo::Topo::PvMemifVnicd,
                topo::Topo::PvMemifTestpmdIo,
                topo::Topo::PvMemifOvsDpdk,
                topo::Topo::Vnicd,
            ]),
            _ => {}
        }
    }
    let mut seen = Vec::new();
    topos.retain(|t| {
        let new = !seen.contains(t);
        seen.push(*t);
        new
    });
    let mut ovs_skipped: Option<String> = None;
    if topos.iter().any(|t| t.dut() == topo::DutKind::Ovs) {
        if let Some(why) = vnic_bench::ovs::missing() {
            if set == [Scenario::BaselineOvs] {
                return Err(why.into());
            }
            eprintln!("vnic-bench: baseline-ovs skipped: {why}");
            ovs_skipped = Some(why);
            topos.retain(|t| t.dut() != topo::DutKind::Ovs);
        }
    }
    // The host check comes after every input check (programs, CPUs, hugepages): what the user
    // can fix in the command is named first, whatever else runs on the host.
    if !topos.is_empty() && !huge {
        return Err("the line-rate topologies need hugepages (vnicd's clients are DPDK secondaries): `make hugepages`".into());
    }
    if !args.force {
        let busy = busy_pollers();
        if !busy.is_empty() {
            return Err(format!(
                "other DPDK processes are running and would skew every figure: {} (stop them, or --force)",
                busy.join(", ")
            )
            .into());
        }
    }
    let plan = if quick {
        topo::Plan {
            sizes: vec![
                ("64".into(), vec![64]),
                ("imix".into(), vnic_bench::gen::IMIX.to_vec()),
            ],
            search_sizes: vec!["64".into()],
            latency_at: vec![0.5],
            mrr_seconds: 1.0,
            short_seconds: 0.25,
            final_seconds: 0.5,
            latency_seconds: 0.5,
            warmup: 0.1,
            precision: 0.05,
        }
    } else {
        let only_latency = set == [Scenario::Latency];
        let mut sizes: Vec<(String, Vec<u16>)> = [64u16, 128, 256, 512, 1024, 1518]
            .iter()
            .map(|&l| (l.to_string(), vec![l]))
            .collect();
        sizes.push(("imix".into(), vnic_bench::gen::IMIX.to_vec()));
        if only_latency {
            sizes.truncate(1);
        }
        topo::Plan {
            search_sizes: if only_latency {
                vec!["64".into()]
            } else {
                vec!["64".into(), "imix".into()]
            },
            sizes,
            latency_at: vec![0.1, 0.5, 0.9],
            mrr_seconds: 2.0,
            short_seconds: 1.0,
            final_seconds: 3.0,
            latency_seconds: 3.0,
            warmup: 0.3,
            precision: 0.02,
        }
    };
    Ok(Setup {
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
    })
}

/// Other DPDK pollers on this host would take CPU from every trial.
fn busy_pollers() -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if [
            "vnicd",
            "dpdk-testpmd",
            "vnic-gen",
            "vnic-client",
            "ovs-vswitchd-dp",
        ]
        .contains(&comm)
        {
            found.push(format!("{comm} (pid {pid})"));
        }
    }
    found
}

pub(crate) fn which_testpmd() -> bool {
    Command::new(vnic_bench::testpmd::testpmd_bin())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}
