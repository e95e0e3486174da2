//! Appliance bring-up and teardown with the real EAL on vdevs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
use std::time::{Duration, Instant};
use vnic_control::appliance::{Appliance, BackingState, StartOptions};
use vnic_control::config;
use vnic_dataplane::InlineMode;

fn cfg(backing: serde_json::Value) -> config::Config {
    config::parse(
        &serde_json::json!({
            "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 256},
            "data_cores": [{"core": 1, "idle_sleep_us": 50}],
            "vnics": [{"name": "vnic0", "mac": "02:00:00:00:00:01", "backing": backing}]
        })
        .to_string(),
    )
    .unwrap()
}

#[test]
fn a_backing_device_that_cannot_be_probed_is_failed_and_the_next_best_is_active() {
    // `bogus` is not a net_null argument, so the probe fails for real.
    let c = cfg(serde_json::json!([
        {"name": "best", "devargs": "net_null0,bogus=1", "priority": 1, "port_label": "p0"},
        {"name": "worst", "devargs": "net_null2", "priority": 90, "port_label": "p2"},
        {"name": "next", "devargs": "net_null1", "priority": 20, "port_label": "p1"}
    ]));
    let app = Appliance::start(c, &StartOptions::default()).unwrap();
    let s = app.status();
    let v = &s.vnics[0];
    assert_eq!(v.active_backing.as_deref(), Some("next"));
    match &v.backing[0].state {
        BackingState::Failed(why) => {
            assert!(why.contains("rte_dev_probe(net_null0,bogus=1)"), "{why}")
        }
        other => panic!("expected failed, got {other:?}"),
    }
    assert_eq!(v.backing[1].state, BackingState::Standby);
    assert_eq!(v.backing[2].state, BackingState::Active);
    let r = app.shutdown();
    assert_eq!(r.leaked(), 0);
}

#[test]
fn traffic_through_an_inline_client_then_teardown_returns_every_mbuf() {
    // net_null rx makes packets endlessly; the in-core client bounces them back to net_null tx.
    let c = cfg(serde_json::json!([{"name": "vf0", "devargs": "net_null0", "port_label": "p0"}]));
    let app = Appliance::start(
        c,
        &StartOptions {
            inline_client: Some(InlineMode::Reflect),
            host_hugepages: None,
        },
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.status().vnics[0].stats.tx_packets < 1_000_000 {
        assert!(Instant::now() < deadline, "{:?}", app.status().vnics[0]);
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = app.status();
    assert!(s.cores[0].table_generation >= 1);
    assert_eq!(s.generation, 1);
    // (No in-use assertion here: between bursts every mbuf can sit in a mempool cache.)
    let r = app.shutdown();
    assert_eq!(r.leaked(), 0, "{r:?}");
    assert_eq!(r.pools.len(), 1);
}

#[test]
fn a_vnic_whose_every_backing_device_failed_has_no_active_device_and_carries_nothing() {
    let c = cfg(
        serde_json::json!([{"name": "vf0", "devargs": "net_null0,bogus=1", "port_label": "p0"}]),
    );
    let app = Appliance::start(c, &StartOptions::default()).unwrap();
    let v = &app.status().vnics[0];
    assert_eq!(v.active_backing, None);
    assert!(matches!(v.backing[0].state, BackingState::Failed(_)));
    assert_eq!(v.stats.tx_packets + v.stats.rx_packets, 0);
    assert_eq!(app.shutdown().leaked(), 0);
}
