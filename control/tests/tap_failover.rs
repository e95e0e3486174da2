//! Failover on link loss of a `net_tap` backing device, with the link really taken down by
//! `ip link set … down`, and a flapping link held in check by the flap limit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
mod common;
use common::ip_link;
use serde_json::json;
use std::time::{Duration, Instant};

/// vnic0: `a` = net_tap (priority 10), `b` = net_null (priority 20, always up).
fn start(iface: &str, hold_down_ms: u32, flap_limit: u32) -> common::Fx {
    let iface = iface.to_string();
    common::start_with(60_000, move |j| {
        j["vnics"] = json!([{
            "name": "vnic0", "mac": "02:00:00:00:00:01",
            "hold_down_ms": hold_down_ms, "flap_limit": flap_limit,
            "backing": [
                {"name": "a", "devargs": format!("net_tap0,iface={iface}"), "priority": 10, "port_label": "p0"},
                {"name": "b", "devargs": "net_null1", "priority": 20, "port_label": "p1"}]
        }]);
    })
}

fn iface() -> String {
    format!("vnt{}", std::process::id() % 100_000)
}

fn wait_active(fx: &common::Fx, name: &str) -> Duration {
    let t = Instant::now();
    loop {
        let v = fx.vnic("vnic0");
        if v["active_backing"] == name && v["link_up"] == true {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "not active on {name}: {v}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn taking_the_tap_link_down_fails_over_and_bringing_it_up_fails_back() {
    let ifc = iface();
    let fx = start(&ifc, 200, 3);
    wait_active(&fx, "a");
    let base = fx.vnic("vnic0")["failover_count"].as_u64().unwrap();
    ip_link(&ifc, "down");
    let took = wait_active(&fx, "b");
    let v = fx.vnic("vnic0");
    assert_eq!(v["backing"][0]["state"], "failed");
    assert_eq!(v["backing"][0]["last_failure"], "link down");
    assert_eq!(v["failover_count"].as_u64().unwrap(), base + 1);
    let ls = &v["last_switch"];
    assert_eq!(
        (ls["from"].as_str(), ls["reason"].as_str()),
        (Some("a"), Some("failure: link down"))
    );
    eprintln!(
        "link down → active on b in {took:?}: detection {} µs, switch {} µs",
        ls["detection_us"], ls["switch_us"]
    );
    // The clock starts before `ip link set up`: vnicd may see the link up before `ip` has
    // exited and been reaped (7 ms once), and the hold-down counts from when vnicd saw it.
    let t = Instant::now();
    ip_link(&ifc, "up");
    wait_active(&fx, "a");
    let back = t.elapsed();
    assert!(
        back >= Duration::from_millis(200),
        "fail-back after {back:?}, before the 200 ms hold-down"
    );
    let v = fx.vnic("vnic0");
    assert_eq!(v["failover_count"].as_u64().unwrap(), base + 2);
    // By reason (the metrics' vnicd_vnic_failovers_total{reason}): one failure, one fail-back.
    assert_eq!(
        v["failovers_by_reason"],
        serde_json::json!({"failure": 1, "fail_back": 1, "planned": 0, "recovery": 0})
    );
    fx.finish();
}

#[test]
fn a_flapping_link_is_held_back_by_the_flap_limit() {
    let ifc = iface();
    let fx = start(&ifc, 30, 2);
    wait_active(&fx, "a");
    let base = fx.vnic("vnic0")["failover_count"].as_u64().unwrap();
    // Down and up every 100 ms for 3 s.
    let t = Instant::now();
    let mut up = true;
    while t.elapsed() < Duration::from_secs(3) {
        up = !up;
        ip_link(&ifc, if up { "up" } else { "down" });
        std::thread::sleep(Duration::from_millis(100));
    }
    ip_link(&ifc, "up");
    std::thread::sleep(Duration::from_millis(200));
    let v = fx.vnic("vnic0");
    let switches = v["failover_count"].as_u64().unwrap() - base;
    // One failure, then at most `flap_limit` fail-backs each followed by one more failure.
    assert!(switches <= 1 + 2 * 2, "{switches} switches: {v}");
    assert!(switches >= 3, "the flapping did cause switches: {v}");
    assert_eq!(v["active_backing"], "b", "stays on the steady device: {v}");
    assert_eq!(v["flap_suppressed"], true, "{v}");
    fx.finish();
}
