//! Summaries of the line-rate topologies across rounds: medians with min/max, per-round ratios
//! against the baselines, Markdown tables and the goals stated as met or not.
use crate::median;
use crate::topo::{self, Topo, TopoRound};
use crate::{plots, scalebench, Res};
use serde::Serialize;
use std::path::Path;

/// Median, min and max of a metric over rounds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(v: &[f64]) -> Option<Stat> {
        let v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        (!v.is_empty()).then(|| Stat {
            median: median(&v),
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n: v.len(),
        })
    }
    fn show(&self, digits: usize) -> String {
        if self.n > 1 {
            format!(
                "{:.d$} ({:.d$}–{:.d$})",
                self.median,
                self.min,
                self.max,
                d = digits
            )
        } else {
            format!("{:.d$}", self.median, d = digits)
        }
    }
}

fn show(s: &Option<Stat>, digits: usize) -> String {
    s.as_ref().map(|s| s.show(digits)).unwrap_or("-".into())
}

/// Ratio of a metric between two topologies, round by round (the same round ran both within a
/// few seconds, so host drift cancels), summarised.
pub fn round_ratio(
    rounds: &[TopoRound],
    a: Topo,
    b: Topo,
    f: impl Fn(&TopoRound) -> Option<f64>,
) -> Option<Stat> {
    let v: Vec<f64> = rounds
        .iter()
        .filter(|r| r.topo == a)
        .filter_map(|ra| {
            let rb = rounds.iter().find(|r| r.topo == b && r.round == ra.round)?;
            let (x, y) = (f(ra)?, f(rb)?);
            (y > 0.0).then(|| x / y)
        })
        .collect();
    Stat::of(&v)
}

fn metric(rounds: &[TopoRound], t: Topo, f: impl Fn(&TopoRound) -> Option<f64>) -> Option<Stat> {
    let v: Vec<f64> = rounds
        .iter()
        .filter(|r| r.topo == t)
        .filter_map(f)
        .collect();
    Stat::of(&v)
}

pub fn mrr(r: &TopoRound, size: &str) -> Option<f64> {
    r.mrr.iter().find(|m| m.size == size).map(|m| m.mrr_mpps)
}
fn cpp(r: &TopoRound, size: &str) -> Option<f64> {
    r.mrr
        .iter()
        .find(|m| m.size == size)
        .and_then(|m| m.cycles_per_packet)
}
fn idle(r: &TopoRound, size: &str) -> Option<f64> {
    r.mrr
        .iter()
        .find(|m| m.size == size)
        .and_then(|m| m.idle_share)
}
pub fn ndr(r: &TopoRound, size: &str) -> Option<f64> {
    r.search.iter().find(|m| m.size == size).map(|m| m.ndr_mpps)
}
pub fn pdr(r: &TopoRound, size: &str) -> Option<f64> {
    r.search.iter().find(|m| m.size == size).map(|m| m.pdr_mpps)
}
fn lat(r: &TopoRound, share: f64, f: impl Fn(&vnic_bench::gen::Latency) -> f64) -> Option<f64> {
    r.latency
        .iter()
        .find(|l| (l.share - share).abs() < 1e-9 && l.latency.samples > 0)
        .map(|l| f(&l.latency))
}

/// The topologies present, in a fixed order.
pub fn topos(rounds: &[TopoRound]) -> Vec<Topo> {
    Topo::ALL
        .into_iter()
        .filter(|t| rounds.iter().any(|r| r.topo == *t))
        .collect()
}

/// JSON summary and Markdown of all rounds.
pub fn summarize(
    rounds: &[TopoRound],
    sizes: &[String],
    shares: &[f64],
) -> (serde_json::Value, String) {
    let mut md = String::new();
    let ts = topos(rounds);
    let mut push = |s: String| {
        md.push_str(&s);
        md.push('\n');
    };
    let bases: Vec<Topo> = ts.iter().copied().filter(|t| t.is_base()).collect();
    let duts: Vec<Topo> = ts.iter().copied().filter(|t| !bases.contains(t)).collect();
    let n_rounds = rounds.iter().map(|r| r.round).max().map_or(0, |m| m + 1);
    // MRR per size.
    push(String::new());
    push(format!(
        "MRR (frames received at full offered load), Mpps, median (min–max) over {n_rounds} rounds; ratios are medians of per-round ratios"
    ));
    push(String::new());
    let mut h = "| size |".to_string();
    let mut sep = "|---|".to_string();
    for t in &ts {
        h += &format!(" {} |", t.name());
        sep += "---:|";
    }
    for d in &duts {
        for b in &bases {
            h += &format!(" {} / {} |", d.name(), b.name());
            sep += "---:|";
        }
    }
    push(h);
    push(sep);
    let mut json_mrr = Vec::new();
    for s in sizes {
        let mut row = format!("| {s} |");
        let mut j = serde_json::json!({"size": s});
        for t in &ts {
            let st = metric(rounds, *t, |r| mrr(r, s));
            row += &format!(" {} |", show(&st, 2));
            j[t.name()] = serde_json::to_value(&st).unwrap_or_default();
        }
        for d in &duts {
            for b in &bases {
                let st = round_ratio(rounds, *d, *b, |r| mrr(r, s));
                row += &format!(" {} |", show(&st, 3));
                j[format!("{}/{}", d.name(), b.name())] =
                    serde_json::to_value(&st).unwrap_or_default();
            }
        }
        push(row);
        json_mrr.push(j);
    }
    // NDR/PDR.
    let searched: Vec<String> = sizes
        .iter()
        .filter(|s| rounds.iter().any(|r| ndr(r, s).is_some()))
        .cloned()
        .collect();
    let mut json_search = Vec::new();
    if !searched.is_empty() {
        push(String::new());
        push("NDR (0 loss) and PDR (≤ 0.5 % loss) by binary search, Mpps, median (min–max); `≥` = the generator's limit was reached without loss".into());
        push(String::new());
        let mut h = "| topology | size | NDR | PDR |".to_string();
        let mut sep = "|---|---|---:|---:|".to_string();
        for b in &bases {
            h += &format!(" NDR / {} | PDR / {} |", b.name(), b.name());
            sep += "---:|---:|";
        }
        push(h);
        push(sep);
        for t in &ts {
            for s in &searched {
                let n = metric(rounds, *t, |r| ndr(r, s));
                let p = metric(rounds, *t, |r| pdr(r, s));
                let at_max = rounds
                    .iter()
                    .any(|r| r.topo == *t && r.search.iter().any(|x| &x.size == s && x.at_max));
                let mut row = format!(
                    "| {} | {s} | {}{} | {} |",
                    t.name(),
                    if at_max { "≥ " } else { "" },
                    show(&n, 2),
                    show(&p, 2)
                );
                let mut j = serde_json::json!({"topology": t.name(), "size": s, "ndr_mpps": n, "pdr_mpps": p, "generator_limited": at_max});
                for b in &bases {
                    let rn = round_ratio(rounds, *t, *b, |r| ndr(r, s));
                    let rp = round_ratio(rounds, *t, *b, |r| pdr(r, s));
                    row += &format!(" {} | {} |", show(&rn, 3), show(&rp, 3));
                    j[format!("ndr/{}", b.name())] = serde_json::to_value(&rn).unwrap_or_default();
                    j[format!("pdr/{}", b.name())] = serde_json::to_value(&rp).unwrap_or_default();
                }
                push(row);
                json_search.push(j);
            }
        }
    }
    // Latency.
    let mut json_lat = Vec::new();
    if rounds.iter().any(|r| !r.latency.is_empty()) {
        push(String::new());
        push("Round-trip latency generator → DUT → generator (µs, medians over rounds), at shares of the DUT's own NDR (64 B)".into());
        push(String::new());
        push("| topology | load | median rate Mpps | p50 | p90 | p99 | p99.9 | max |".into());
        push("|---|---|---:|---:|---:|---:|---:|---:|".into());
        for t in &ts {
            for &sh in shares {
                let rate = metric(rounds, *t, |r| {
                    r.latency
                        .iter()
                        .find(|l| (l.share - sh).abs() < 1e-9)
                        .map(|l| l.rate_fps as f64 / 1e6)
                });
                let Some(rate) = rate else { continue };
                let of = rounds
                    .iter()
                    .filter(|r| r.topo == *t)
                    .flat_map(|r| r.latency.iter())
                    .find(|l| (l.share - sh).abs() < 1e-9)
                    .map(|l| l.of.clone())
                    .unwrap_or_default();
                let q =
                    |f: fn(&vnic_bench::gen::Latency) -> f64| metric(rounds, *t, |r| lat(r, sh, f));
                let (p50, p90, p99, p999, max) = (
                    q(|l| l.p50_us),
                    q(|l| l.p90_us),
                    q(|l| l.p99_us),
                    q(|l| l.p99_9_us),
                    q(|l| l.max_us),
                );
                push(format!(
                    "| {} | {:.0} % of {of} | {:.2} | {} | {} | {} | {} | {} |",
                    t.name(),
                    sh * 100.0,
                    rate.median,
                    show(&p50, 1),
                    show(&p90, 1),
                    show(&p99, 1),
                    show(&p999, 1),
                    show(&max, 1)
                ));
                json_lat.push(serde_json::json!({"topology": t.name(), "share": sh, "of": of, "rate_mpps": rate,
                    "p50_us": p50, "p90_us": p90, "p99_us": p99, "p99_9_us": p999, "max_us": max}));
            }
        }
    }
    // Cost of the DUT core.
    let mut json_cost = Vec::new();
    if let Some(s0) = sizes.first() {
        push(String::new());
        push(format!(
            "DUT core at MRR, {s0}: busy cycles per forwarded frame and idle-poll share (medians)"
        ));
        push(String::new());
        push("| topology | cycles/frame | idle share |".into());
        push("|---|---:|---:|".into());
        for t in &ts {
            let c = metric(rounds, *t, |r| cpp(r, s0));
            let i = metric(rounds, *t, |r| idle(r, s0));
            push(format!(
                "| {} | {} | {} |",
                t.name(),
                show(&c, 1),
                show(&i, 3)
            ));
            json_cost.push(
                serde_json::json!({"topology": t.name(), "cycles_per_frame": c, "idle_share": i}),
            );
        }
    }
    let json_trials = mrr_trials(rounds, &ts, &mut push);
    let j = serde_json::json!({"mrr": json_mrr, "ndr_pdr": json_search, "latency": json_lat, "dut_core": json_cost, "mrr_trials": json_trials});
    (j, md)
}

/// Every MRR trial: what the generator got into the DUT, what the DUT refused, lost and counted
/// as dropped itself, and the host's mode, so a low figure can be told apart from a slow host.
fn mrr_trials(
    rounds: &[TopoRound],
    ts: &[Topo],
    push: &mut dyn FnMut(String),
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    if rounds.iter().all(|r| r.mrr.is_empty()) {
        return out;
    }
    push(String::new());
    push("MRR trials: sent = frames the DUT's port took (the generator's attempts minus those it refused); lost in DUT = sent − received; DUT drops = the DUT's own counters over the trial; host = a calibration just before the trial on the generator's CPU (ns per step of a dependent chain, GB/s copying 4 MiB) and the CPU time the hypervisor stole during it".into());
    push(String::new());
    push("| round | topology | size | sent Mpps | received Mpps | refused | lost in DUT | DUT drops | chain ns | copy GB/s | steal |".into());
    push("|---:|---|---|---:|---:|---:|---:|---|---:|---:|---:|".into());
    let mut rs: Vec<&TopoRound> = rounds.iter().collect();
    rs.sort_by_key(|r| (r.round, ts.iter().position(|t| *t == r.topo)));
    for r in rs {
        for m in &r.mrr {
            let drops = match &m.dut_drops {
                None => "-".to_string(),
                Some(d) if d.values().all(|&v| v == 0) => "0".to_string(),
                Some(d) => d
                    .iter()
                    .filter(|(_, &v)| v > 0)
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            push(format!(
                "| {} | {} | {} | {:.2} | {:.2} | {:.1} % | {} | {} | {:.2} | {:.1} | {:.1} % |",
                r.round,
                r.topo.name(),
                m.size,
                m.sent_mpps,
                m.mrr_mpps,
                m.refused_share * 100.0,
                m.dut_lost,
                drops,
                m.host.chain_ns,
                m.host.copy_gbps,
                m.host.steal_share * 100.0
            ));
            out.push(serde_json::json!({"round": r.round, "topology": r.topo.name(), "size": m.size,
                "sent_mpps": m.sent_mpps, "received_mpps": m.mrr_mpps, "refused_share": m.refused_share,
                "dut_lost": m.dut_lost, "dut_drops": m.dut_drops, "host": m.host}));
        }
    }
    out
}

/// SVG plots beside the JSON; returns their file names.
pub(crate) fn write_plots(
    json: &Path,
    rounds: &[topo::TopoRound],
    plan: &topo::Plan,
    scale: &[scalebench::ScaleRow],
) -> Vec<String> {
    let stem = json
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut made = Vec::new();
    let mut plot = |name: &str, f: &dyn Fn(&Path) -> Res<()>| {
        let file = format!("{stem}-{name}.svg");
        let p = json.with_file_name(&file);
        match f(&p) {
            Ok(()) => made.push(file),
            Err(e) => eprintln!("vnic-bench: plot {name}: {e}"),
        }
    };
    let ts = topos(rounds);
    let fixed: Vec<&(String, Vec<u16>)> = plan.sizes.iter().filter(|(_, s)| s.len() == 1).collect();
    if fixed.len() > 1 {
        let series: Vec<plots::Series> = ts
            .iter()
            .map(|t| plots::Series {
                name: t.name().into(),
                points: fixed
                    .iter()
                    .filter_map(|(l, s)| {
                        let v: Vec<f64> = rounds
                            .iter()
                            .filter(|r| r.topo == *t)
                            .filter_map(|r| mrr(r, l))
                            .collect();
                        (!v.is_empty())
                            .then(|| (s[0] as f64, v.iter().copied().fold(0.0, f64::max)))
                    })
                    .collect(),
            })
            .collect();
        plot("throughput-vs-size", &|p| {
            plots::lines(
                p,
                "MRR vs frame size (best of the rounds)",
                "frame bytes",
                "Mpps",
                &series,
                false,
            )
        });
    }
    // Latency CDF at 50 % of NDR (or the share measured), from the first round that has it.
    let share = plan
        .latency_at
        .iter()
        .copied()
        .find(|s| (*s - 0.5).abs() < 1e-9)
        .or(plan.latency_at.first().copied());
    if let Some(sh) = share {
        let series: Vec<plots::Series> = ts
            .iter()
            .filter_map(|t| {
                let l = rounds
                    .iter()
                    .filter(|r| r.topo == *t)
                    .flat_map(|r| r.latency.iter())
                    .find(|l| (l.share - sh).abs() < 1e-9 && !l.latency.cdf.is_empty())?;
                Some(plots::Series {
                    name: format!("{} ({:.2} Mpps)", t.name(), l.rate_fps as f64 / 1e6),
                    points: l.latency.cdf.iter().map(|&(q, us)| (us, q)).collect(),
                })
            })
            .collect();
        if !series.is_empty() {
            plot("latency-cdf", &|p| {
                plots::lines(
                    p,
                    &format!("Round-trip latency CDF at {:.0} % of NDR, 64 B", sh * 100.0),
                    "µs (log)",
                    "share of frames",
                    &series,
                    true,
                )
            });
        }
    }
    if scale.len() > 1 {
        let series = vec![plots::Series {
            name: "vnicd, one data core".into(),
            points: scale
                .iter()
                .map(|r| (r.vnics as f64, r.median_mpps))
                .collect(),
        }];
        plot("throughput-vs-vnics", &|p| {
            plots::lines(
                p,
                "Throughput vs vNICs on one data core (net_null)",
                "vNICs",
                "Mpps (all vNICs)",
                &series,
                false,
            )
        });
    }
    made
}
