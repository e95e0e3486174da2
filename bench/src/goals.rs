//! The goals the report states, each with its figure and whether it is met: vnicd against
//! testpmd io and OVS-DPDK on the wire and PV topologies, what the copy of each transport costs,
//! latency added, scale and failover outage.
use crate::scalebench::ScaleRow;
use crate::{report, topo};

/// vnicd against `dpdk-testpmd --forward-mode=io` on the same topology (DESIGN §7, issue 13:
/// the vNIC features cost nothing measurable).
pub(crate) const VS_TESTPMD_IO: f64 = 1.0;

pub(crate) fn goals(
    topo_rounds: &[topo::TopoRound],
    scale_rows: &[ScaleRow],
    failover_json: &serde_json::Value,
) -> Vec<String> {
    let mut goals: Vec<String> = Vec::new();
    if !topo_rounds.is_empty() {
        let has = |t: topo::Topo| topo_rounds.iter().any(|r| r.topo == t);
        let mut g = |s: String| goals.push(s);
        if has(topo::Topo::Vnicd) && has(topo::Topo::TestpmdIo) {
            for (what, f) in [
                (
                    "MRR",
                    report::mrr as fn(&topo::TopoRound, &str) -> Option<f64>,
                ),
                // Not NDR: zero-loss trials fail at random on a host that stalls (README).
                ("PDR", report::pdr),
            ] {
                for t in [topo::Topo::Vnicd, topo::Topo::VnicdInline] {
                    if let Some(s) =
                        report::round_ratio(topo_rounds, t, topo::Topo::TestpmdIo, |r| f(r, "64"))
                    {
                        g(format!(
                            "{} {what} 64 B = {:.3} x testpmd io (median per-round ratio): goal >= {VS_TESTPMD_IO} {}",
                            t.name(),
                            s.median,
                            if s.median >= VS_TESTPMD_IO { "met" } else { "NOT met" }
                        ));
                    }
                }
            }
        }
        if has(topo::Topo::Vnicd) && has(topo::Topo::OvsDpdk) {
            for (what, f) in [
                (
                    "MRR",
                    report::mrr as fn(&topo::TopoRound, &str) -> Option<f64>,
                ),
                ("PDR", report::pdr),
            ] {
                if let Some(s) =
                    report::round_ratio(topo_rounds, topo::Topo::Vnicd, topo::Topo::OvsDpdk, |r| {
                        f(r, "64")
                    })
                {
                    g(format!(
                        "vnicd {what} 64 B = {:.3} x OVS-DPDK: goal > 1 (ahead of OVS) {}",
                        s.median,
                        if s.median > 1.0 { "met" } else { "NOT met" }
                    ));
                }
            }
        }
        // PV over vhost-user: vnicd against the software limit and against what VMs get today.
        for (base, goal) in [
            (topo::Topo::PvVhostTestpmdIo, 1.0),
            (topo::Topo::PvVhostOvsDpdk, 1.3),
        ] {
            if !(has(topo::Topo::PvVhostVnicd) && has(base)) {
                continue;
            }
            for (what, f) in [
                (
                    "MRR",
                    report::mrr as fn(&topo::TopoRound, &str) -> Option<f64>,
                ),
                ("PDR", report::pdr),
            ] {
                if let Some(s) =
                    report::round_ratio(topo_rounds, topo::Topo::PvVhostVnicd, base, |r| f(r, "64"))
                {
                    g(format!(
                        "pv-vhost vnicd {what} 64 B = {:.3} x {}: goal >= {goal} {}",
                        s.median,
                        base.name(),
                        if s.median >= goal { "met" } else { "NOT met" }
                    ));
                }
            }
        }
        // What the copy costs: vnicd's cycles per frame on each transport at 64 B MRR.
        let cpf = |t: topo::Topo| {
            report::Stat::of(
                &topo_rounds
                    .iter()
                    .filter(|r| r.topo == t)
                    .filter_map(|r| r.mrr.iter().find(|m| m.size == "64"))
                    .filter_map(|m| m.cycles_per_packet)
                    .collect::<Vec<_>>(),
            )
        };
        let shm = cpf(topo::Topo::Vnicd);
        for t in [topo::Topo::PvVhostVnicd, topo::Topo::PvMemifVnicd] {
            if let (Some(a), Some(b)) = (cpf(t), shm.as_ref()) {
                g(format!(
                    "vnicd cycles per frame at 64 B MRR: {} {:.0} vs shm (zero copy, pvp) {:.0} = {:.2} x (medians; the shm figure includes its client process sharing the CPU)",
                    t.name(),
                    a.median,
                    b.median,
                    a.median / b.median
                ));
            }
        }
        let p99 = |t: topo::Topo| {
            report::Stat::of(
                &topo_rounds
                    .iter()
                    .filter(|r| r.topo == t)
                    .filter_map(|r| r.latency.iter().find(|l| (l.share - 0.5).abs() < 1e-9))
                    .map(|l| l.latency.p99_us)
                    .collect::<Vec<_>>(),
            )
        };
        if let (Some(v), Some(b)) = (p99(topo::Topo::Vnicd), p99(topo::Topo::TestpmdIo)) {
            let added = v.median - b.median;
            g(format!(
                "p99 latency added by vnicd at 50 % of NDR = {added:.1} µs (vnicd {:.1} - testpmd io {:.1}, medians): goal < 10 µs {}",
                v.median,
                b.median,
                if added < 10.0 { "met" } else { "NOT met" }
            ));
        }
    }
    if let Some(last) = scale_rows.last() {
        goals.push(format!(
            "{} vNICs = {:.3} x the 1-vNIC rate; the goal is 256 vNICs >= 0.8 x: 256 cannot be configured here (RTE_MAX_ETHPORTS = {}), {} vNICs {} 0.8",
            last.vnics,
            last.vs_one,
            vnic_dataplane::MAX_PORTS,
            last.vnics,
            if last.vs_one >= 0.8 { "meet" } else { "do NOT meet" }
        ));
    }
    if let Some(rows) = failover_json["summary"].as_array() {
        for kind in ["unplanned (link down)", "unplanned (peer killed)"] {
            let Some(m) = rows
                .iter()
                .find(|r| r["kind"] == kind && r["metric"] == "outage ms (lost / rate)")
            else {
                continue;
            };
            let med = m["median"].as_f64().unwrap_or(f64::NAN);
            let p99 = m["p99"].as_f64().unwrap_or(f64::NAN);
            goals.push(format!(
                "failover outage, {kind}: median {med:.2} ms (goal < 1 ms {}), p99 {p99:.2} ms (goal < 5 ms {})",
                if med < 1.0 { "met" } else { "NOT met" },
                if p99 < 5.0 { "met" } else { "NOT met" }
            ));
        }
        if let Some(m) = rows
            .iter()
            .find(|r| r["kind"] == "planned" && r["metric"] == "frames lost")
        {
            let max = m["max"].as_f64().unwrap_or(f64::NAN);
            goals.push(format!(
                "planned failover: at most {max:.0} frames lost in a trial (goal 0 in every trial {})",
                if max == 0.0 { "met" } else { "NOT met" }
            ));
        }
    }
    goals
}
