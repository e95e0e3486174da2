//! `vnicd --preflight` on this host (vdevs only, no IOMMU): the demo config passes every check
//! that applies; hugepages released, a missing socket directory, a PCI address that does not
//! exist and more backing devices than DPDK ports each fail with the fix named, exit 1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn vnicd() -> &'static str {
    env!("CARGO_BIN_EXE_vnicd")
}

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vnic-pre-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `vnicd --preflight [--config]`: (exit code, the rows as (check, state, rest of the line)).
fn preflight(cfg: Option<&Path>) -> (Option<i32>, Vec<(String, String, String)>, String) {
    let mut c = Command::new(vnicd());
    c.arg("--preflight");
    if let Some(p) = cfg {
        c.arg("--config").arg(p);
    }
    let o = c.output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    // Rows: "│ check   state   detail   fix │" (into a pipe: one line per check).
    let rows = text
        .lines()
        .filter_map(|l| l.strip_prefix("│ ")?.strip_suffix('│').map(str::to_string))
        .skip(1)
        .map(|l| {
            let cols: Vec<String> = l
                .split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            (cols[0].clone(), cols[1].clone(), cols[2..].join(" | "))
        })
        .collect();
    (o.status.code(), rows, text)
}

fn write(d: &Path, j: &Value) -> PathBuf {
    let p = d.join("v.json");
    std::fs::write(&p, j.to_string()).unwrap();
    p
}

fn base(d: &Path) -> Value {
    json!({
        "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 256, "hugepages": "on"},
        "data_cores": [{"core": 1, "idle_sleep_us": 100}],
        "control_socket": d.join("c.sock"), "admin_socket": d.join("a.sock"),
        "vnics": [{"name": "vnic0", "mac": "02:00:00:00:00:01",
                   "backing": [{"name": "a", "devargs": "net_null0", "port_label": "p0"}]}]
    })
}

fn row<'a>(rows: &'a [(String, String, String)], name: &str) -> &'a (String, String, String) {
    rows.iter()
        .find(|r| r.0 == name)
        .unwrap_or_else(|| panic!("no {name} check in {rows:?}"))
}

#[test]
fn the_demo_config_passes_every_check_that_applies_here() {
    let (code, rows, text) = preflight(None);
    assert_eq!(code, Some(0), "{text}");
    assert!(rows.iter().all(|r| r.1 == "ok"), "{text}");
    for name in [
        "DPDK ports",
        "hugepages",
        "hugetlbfs",
        "CPUs",
        "data core 1",
        "driver net_memif",
        "control socket",
        "admin socket",
        "privileges",
        "memlock",
    ] {
        row(&rows, name);
    }
    // No PCI device: no IOMMU or VFIO checks.
    assert!(
        !rows.iter().any(|r| r.0 == "IOMMU" || r.0 == "/dev/vfio"),
        "{text}"
    );
    assert!(
        text.contains("preflight: 12 checks, 0 failed, 0 warnings"),
        "{text}"
    );
}

/// Hugepages released for the duration of one check, restored whatever happens.
struct Release(Vec<(PathBuf, String)>);

impl Release {
    fn free_ones() -> Release {
        let mut saved = Vec::new();
        for e in std::fs::read_dir("/sys/kernel/mm/hugepages")
            .unwrap()
            .flatten()
        {
            let nr = e.path().join("nr_hugepages");
            let total = std::fs::read_to_string(&nr).unwrap();
            let free: u64 = std::fs::read_to_string(e.path().join("free_hugepages"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let t: u64 = total.trim().parse().unwrap();
            // Only the free ones: pages another process holds stay its own.
            std::fs::write(&nr, (t - free).to_string()).unwrap();
            saved.push((nr, total));
        }
        Release(saved)
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        for (p, v) in &self.0 {
            let _ = std::fs::write(p, v.trim());
        }
    }
}

#[test]
fn released_hugepages_fail_with_the_command_that_reserves_them() {
    let d = dir("huge");
    let cfg = write(&d, &base(&d));
    let mut auto = base(&d);
    auto["eal"]["hugepages"] = json!("auto");
    auto["eal"]["file_prefix"] = json!("vnicpre");
    let auto_cfg = d.join("auto.json");
    std::fs::write(&auto_cfg, auto.to_string()).unwrap();
    let ((code, rows, text), (acode, arows, atext)) = {
        let _r = Release::free_ones();
        (preflight(Some(&cfg)), preflight(Some(&auto_cfg)))
    };
    // "auto" runs without them: a warning, exit 0.
    assert_eq!(acode, Some(0), "{atext}");
    let (_, state, rest) = row(&arows, "hugepages");
    assert_eq!(state, "WARN", "{atext}");
    assert!(
        rest.contains("vnicd would run without them, and shm clients could not attach"),
        "{rest}"
    );
    assert_eq!(code, Some(1), "{text}");
    let (_, state, rest) = row(&rows, "hugepages");
    assert_eq!(state, "FAIL", "{text}");
    assert!(
        rest.starts_with("0 MB free, eal.memory_mb needs 256"),
        "{rest}"
    );
    assert!(
        rest.contains("dpdk-hugepages.py --pagesize 2M --setup "),
        "{rest}"
    );
    assert!(text.contains("1 failed"), "{text}");
    // Restored: the same config passes again.
    assert_eq!(preflight(Some(&cfg)).0, Some(0));
}

#[test]
fn a_missing_socket_directory_is_named_with_mkdir() {
    let d = dir("sock");
    let mut j = base(&d);
    j["vnics"][0]["client"] =
        json!({"transport": "memif", "socket": "/nonexistent-vnicd-dir/v0.memif"});
    j["metrics"] = json!({"listen": "unix:/nonexistent-vnicd-metrics/m.sock"});
    let (code, rows, text) = preflight(Some(&write(&d, &j)));
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(
        row(&rows, "vnics[0].client.socket directory"),
        &(
            "vnics[0].client.socket directory".to_string(),
            "FAIL".to_string(),
            "/nonexistent-vnicd-dir does not exist | mkdir -p /nonexistent-vnicd-dir".to_string()
        )
    );
    assert_eq!(row(&rows, "metrics.listen directory").1, "FAIL");
    assert!(text.contains("2 failed"), "{text}");
}

#[test]
fn a_pci_address_that_does_not_exist_fails_with_lspci_and_the_field() {
    let d = dir("pci");
    let mut j = base(&d);
    j["vnics"][0]["backing"][0]["devargs"] = json!("0000:99:1f.7");
    let (code, rows, text) = preflight(Some(&write(&d, &j)));
    assert_eq!(code, Some(1), "{text}");
    let (_, state, rest) = row(&rows, "PCI 0000:99:1f.7");
    assert_eq!(state, "FAIL");
    assert!(
        rest.starts_with("vnics[0].backing[0].devargs: no such PCI device | lspci -D"),
        "{rest}"
    );
    // This host has no IOMMU and no VFIO: both named, with their fixes.
    let (_, s, rest) = row(&rows, "IOMMU");
    assert_eq!(s, "FAIL");
    assert!(rest.contains("intel_iommu=on iommu=pt"), "{rest}");
    let (_, s, rest) = row(&rows, "/dev/vfio");
    assert_eq!(s, "FAIL");
    assert!(rest.contains("modprobe vfio-pci"), "{rest}");
}

#[test]
fn more_backing_devices_than_dpdk_ports_fail() {
    let d = dir("ports");
    let mut j = base(&d);
    let vnics: Vec<Value> = (0..6)
        .map(|i| {
            json!({"name": format!("v{i}"), "mac": format!("02:00:00:00:01:{i:02x}"),
                   "backing": (0..6).map(|k| json!({"name": format!("b{i}{k}"), "devargs": format!("net_null{}", i * 6 + k), "port_label": format!("p{k}")})).collect::<Vec<_>>()})
        })
        .collect();
    j["vnics"] = json!(vnics);
    let (code, rows, text) = preflight(Some(&write(&d, &j)));
    assert_eq!(code, Some(1), "{text}");
    let (_, s, rest) = row(&rows, "DPDK ports");
    assert_eq!(s, "FAIL");
    assert!(
        rest.starts_with("vnics: 36 backing devices and 0 memif client ports in all, but this DPDK build supports at most 32 ports (RTE_MAX_ETHPORTS)"),
        "{rest}"
    );
}

#[test]
fn a_config_that_is_not_valid_is_refused_before_any_check() {
    let d = dir("bad");
    let p = d.join("v.json");
    std::fs::write(&p, "{\"vnics\": 7}").unwrap();
    let o = Command::new(vnicd())
        .arg("--preflight")
        .arg("--config")
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid config"));
    assert!(o.stdout.is_empty());
}
