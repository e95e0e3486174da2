//! Result files: the summary JSON and the compressed per-round data beside it, and
//! `vnic-bench compare A B`, which reads either.
use crate::Res;
use std::path::{Path, PathBuf};

/// A results file: JSON, or gzip-compressed JSON (the raw per-round data, and whole older
/// runs compressed to keep the repository small).
pub(crate) fn read_results(bytes: &[u8]) -> Result<serde_json::Value, String> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut text)
            .map_err(|e| format!("not gzip: {e}"))?;
        serde_json::from_slice(&text).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// Write the raw per-round line-rate data beside the summary, compressed.
pub(crate) fn write_rounds(summary: &Path, rounds: &serde_json::Value) -> Res<PathBuf> {
    let name = summary
        .file_stem()
        .map(|s| format!("{}.rounds.json.gz", s.to_string_lossy()))
        .unwrap_or_else(|| "rounds.json.gz".into());
    let path = summary.with_file_name(name);
    let mut gz =
        flate2::write::GzEncoder::new(std::fs::File::create(&path)?, flate2::Compression::best());
    std::io::Write::write_all(&mut gz, serde_json::to_string(rounds)?.as_bytes())?;
    gz.finish()?;
    Ok(path)
}

/// Print what changed between two result files, figure by figure.
pub(crate) fn compare(a: &Path, b: &Path) -> Res<()> {
    let load = |p: &Path| -> Res<serde_json::Value> {
        let bytes = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(read_results(&bytes).map_err(|e| format!("{}: {e}", p.display()))?)
    };
    let (ja, jb) = (load(a)?, load(b)?);
    let mut rows: Vec<(String, f64, f64)> = Vec::new();
    let key = |s: &serde_json::Value| {
        format!(
            "{} {}",
            s["scenario"].as_str().unwrap_or("?"),
            s["dut"].as_str().unwrap_or("?")
        )
    };
    for sa in ja["summary"].as_array().into_iter().flatten() {
        if let Some(sb) = jb["summary"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|sb| key(sb) == key(sa))
        {
            for f in ["median_mpps", "median_round_ratio"] {
                if let (Some(x), Some(y)) = (sa[f].as_f64(), sb[f].as_f64()) {
                    rows.push((format!("{} {f}", key(sa)), x, y));
                }
            }
        }
    }
    // Line-rate summaries: MRR per size and topology, NDR/PDR, latency percentiles.
    let lr = |j: &serde_json::Value, k: &str| j["line_rate"]["summary"][k].clone();
    for ra in lr(&ja, "mrr").as_array().into_iter().flatten() {
        let size = s(&ra["size"]);
        let rb = lr(&jb, "mrr");
        let Some(rb) = rb
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| s(&r["size"]) == size)
            .cloned()
        else {
            continue;
        };
        if let Some(o) = ra.as_object() {
            for (k, v) in o {
                let (x, y) = (v["median"].as_f64(), rb[k]["median"].as_f64());
                if let (Some(x), Some(y)) = (x, y) {
                    rows.push((format!("MRR {size} {k}"), x, y));
                }
            }
        }
    }
    for (kind, list, fields) in [
        ("", "ndr_pdr", &["ndr_mpps", "pdr_mpps"][..]),
        ("latency", "latency", &["p50_us", "p99_us"][..]),
    ] {
        for ra in lr(&ja, list).as_array().into_iter().flatten() {
            let id = |r: &serde_json::Value| {
                format!("{} {} {}", s(&r["topology"]), s(&r["size"]), s(&r["share"]))
            };
            let rb = lr(&jb, list);
            let Some(rb) = rb
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| id(r) == id(ra))
                .cloned()
            else {
                continue;
            };
            for f in fields {
                if let (Some(x), Some(y)) = (ra[f]["median"].as_f64(), rb[f]["median"].as_f64()) {
                    let who = s(&ra["topology"]);
                    let at = if kind == "latency" {
                        format!("at {:.0} %", ra["share"].as_f64().unwrap_or(0.0) * 100.0)
                    } else {
                        s(&ra["size"])
                    };
                    rows.push((format!("{who} {f} {at}"), x, y));
                }
            }
        }
    }
    for f in ["p50_ms", "p99_ms", "untouched_drops"] {
        if let (Some(x), Some(y)) = (ja["reload"][f].as_f64(), jb["reload"][f].as_f64()) {
            rows.push((format!("reload {f}"), x, y));
        }
    }
    for (ra, rb) in ja["scale"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(jb["scale"].as_array().into_iter().flatten())
    {
        if let (Some(x), Some(y)) = (ra["median_mpps"].as_f64(), rb["median_mpps"].as_f64()) {
            rows.push((format!("scale {} vNICs Mpps", ra["vnics"]), x, y));
        }
    }
    for (ra, rb) in ja["failover"]["summary"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(jb["failover"]["summary"].as_array().into_iter().flatten())
    {
        if let (Some(x), Some(y)) = (ra["median"].as_f64(), rb["median"].as_f64()) {
            rows.push((
                format!("failover {} {} median", s(&ra["kind"]), s(&ra["metric"])),
                x,
                y,
            ));
        }
    }
    if rows.is_empty() {
        return Err("no figure appears in both files".into());
    }
    let mut t = format!("| figure | {} | {} | change |\n", a.display(), b.display());
    t.push_str("|---|---:|---:|---:|\n");
    for (k, x, y) in rows {
        let change = if x != 0.0 {
            format!("{:+.1} %", (y - x) / x * 100.0)
        } else {
            "-".into()
        };
        t.push_str(&format!("| {k} | {x:.3} | {y:.3} | {change} |\n"));
    }
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), t.as_bytes());
    Ok(())
}

/// A JSON value as text (strings without quotes).
fn s(v: &serde_json::Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}
