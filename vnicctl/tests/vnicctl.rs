//! vnicctl against a live control thread: tables, --json for scripts, exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test

// The appliance fixture is control's; vnicctl only dev-depends on control, so its own build
// (`cargo tree -p vnicctl -e normal`) still links no DPDK.
#[path = "../../control/tests/common/mod.rs"]
mod common;
use common::raw;
use std::process::Command;
use std::time::Duration;

/// Cargo builds this crate's binary for its own integration tests, whatever else is built.
fn vnicctl_bin() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_vnicctl"))
}

fn vnicctl(fx: &common::Fx, args: &[&str]) -> (i32, String, String) {
    common::run(
        Command::new(vnicctl_bin())
            .arg("--socket")
            .arg(&fx.admin)
            .args(args),
    )
}

#[test]
fn status_show_stats_and_detach() {
    let fx = common::start(5000);
    let mut c = fx.client();
    raw::hello(&mut c, "vnic0", None).unwrap();
    raw::attach(&mut c, 1, 256, 1500, false).unwrap();

    let (code, out, err) = vnicctl(&fx, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(j["generation"].as_u64().unwrap() >= 1);
    let v0 = &j["vnics"][0];
    for k in [
        "name",
        "mac",
        "state",
        "client_pid",
        "active_backing",
        "backing",
        "rx_packets",
        "tx_packets",
        "rx_drops",
        "tx_drops",
    ] {
        assert!(v0.get(k).is_some(), "status --json lacks {k}: {v0}");
    }
    assert_eq!(
        (v0["name"].as_str(), v0["state"].as_str()),
        (Some("vnic0"), Some("attached"))
    );
    assert_eq!(v0["client_pid"].as_i64(), Some(std::process::id() as i64));
    let b = &v0["backing"][0];
    assert_eq!(
        (
            b["name"].as_str(),
            b["priority"].as_u64(),
            b["state"].as_str()
        ),
        (Some("vf0"), Some(50), Some("active"))
    );
    assert_eq!(j["vnics"][1]["state"], "detached");

    let (code, out, _) = vnicctl(&fx, &["status"]);
    assert_eq!(code, 0);
    assert!(out.lines().next().unwrap().starts_with("VNIC"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("vnic0") && l.contains("attached") && l.contains("vf0")),
        "{out}"
    );

    let (code, out, _) = vnicctl(&fx, &["show", "vnic0"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("vNIC vnic0  mac 02:00:00:00:00:01  state attached"),
        "{out}"
    );
    assert!(out.contains("net_ring0"), "{out}");

    let (code, out, _) = vnicctl(&fx, &["stats"]);
    assert_eq!(code, 0);
    assert!(out.contains("CORE") && out.contains("DPDK 22.11"), "{out}");

    let (code, out, _) = vnicctl(&fx, &["detach", "vnic0"]);
    assert_eq!(code, 0);
    assert!(out.contains("vnic0: detached"), "{out}");
    assert_eq!(fx.vnic("vnic0")["state"], "detached");
    // The client was told and its session closed.
    std::thread::sleep(Duration::from_millis(50));
    let pushes = c.pushes_json();
    assert!(
        pushes
            .iter()
            .any(|p| p["op"] == "DETACHED" && p["reason"] == "detached by the administrator"),
        "{pushes:?}"
    );

    let (code, _, err) = vnicctl(&fx, &["detach", "vnic0"]);
    assert_eq!(code, 1);
    assert!(err.contains("not_attached"), "{err}");
    let (code, _, err) = vnicctl(&fx, &["show", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown vNIC \"nope\""), "{err}");
    fx.finish();
}

#[test]
fn vnicctl_without_vnicd_says_so() {
    let o = Command::new(vnicctl_bin())
        .args(["--socket", "/nonexistent/admin.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/nonexistent/admin.sock") && err.contains("is vnicd running?"),
        "{err}"
    );
}
