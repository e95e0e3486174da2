//! The appliance's one event stream, and failures that must be reported as failures: a switch or
//! a reload whose table a data core does not take.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
mod common;
use common::ip_link;
use std::time::{Duration, Instant};
use vnic_control::appliance::{
    Appliance, BackingState, Command, CommandError, Event, LinkState, Outcome, StartOptions,
};
use vnic_control::config;
use vnic_control::reload::ReloadError;
use vnic_control::switch::FailoverError;

fn cfg(backing: serde_json::Value, hold_down_ms: u32) -> config::Config {
    config::parse(
        &serde_json::json!({
            "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 256},
            "data_cores": [{"core": 1, "idle_sleep_us": 50}],
            "vnics": [{"name": "vnic0", "mac": "02:00:00:00:00:01", "hold_down_ms": hold_down_ms,
                       "backing": backing}]
        })
        .to_string(),
    )
    .unwrap()
}

/// Run health ticks until `want` events arrived (or fail after 10 s).
fn events_until(app: &mut Appliance, want: usize) -> Vec<Event> {
    let t = Instant::now();
    let mut got = Vec::new();
    while got.len() < want {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "only these events within 10 s: {got:?}"
        );
        app.health_tick();
        got.extend(app.drain_events());
        std::thread::sleep(Duration::from_millis(1));
    }
    got
}

fn link(up: bool, active: &str) -> LinkState {
    LinkState {
        up,
        active_backing: Some(active.into()),
    }
}

#[test]
fn link_changes_and_failovers_come_out_of_one_event_stream_in_order() {
    let ifc = format!("vne{}", std::process::id() % 100_000);
    let c = cfg(
        serde_json::json!([
            {"name": "a", "devargs": format!("net_tap0,iface={ifc}"), "priority": 10, "port_label": "p0"},
            {"name": "b", "devargs": "net_null1", "priority": 20, "port_label": "p1"}]),
        100,
    );
    let mut app = Appliance::start(c, &StartOptions::default()).unwrap();
    // The tap comes up on its own; until then the vNIC may already have failed over to b.
    let t = Instant::now();
    while app.status().vnics[0].active_backing.as_deref() != Some("a")
        || !app.status().vnics[0].link_up
    {
        assert!(t.elapsed() < Duration::from_secs(10), "a never active");
        app.health_tick();
        std::thread::sleep(Duration::from_millis(1));
    }
    app.drain_events();
    ip_link(&ifc, "down");
    let ev = events_until(&mut app, 2);
    assert_eq!(
        ev,
        vec![
            Event::Failover {
                vnic: "vnic0".into(),
                from: Some("a".into()),
                to: "b".into(),
                reason: "failure: link down".into()
            },
            Event::Link {
                vnic: "vnic0".into(),
                link: link(true, "b")
            },
        ]
    );
    ip_link(&ifc, "up");
    // After the hold-down, fail-back: the same two kinds of event, the other way.
    let ev = events_until(&mut app, 2);
    assert!(
        matches!(&ev[0], Event::Failover { to, .. } if to == "a"),
        "{ev:?}"
    );
    assert_eq!(
        ev[1],
        Event::Link {
            vnic: "vnic0".into(),
            link: link(true, "a")
        }
    );
    // The only device left goes down: the client's link goes down, and that is an event too.
    assert!(matches!(
        app.apply(Command::SetBacking {
            vnic: "vnic0".into(),
            backing: "b".into(),
            enabled: false,
            force: false
        }),
        Ok(Outcome::Changed(None))
    ));
    app.drain_events();
    ip_link(&ifc, "down");
    let ev = events_until(&mut app, 1);
    assert_eq!(
        ev,
        vec![Event::Link {
            vnic: "vnic0".into(),
            link: link(false, "a")
        }]
    );
    ip_link(&ifc, "up");
    let ev = events_until(&mut app, 1);
    assert_eq!(
        ev,
        vec![Event::Link {
            vnic: "vnic0".into(),
            link: link(true, "a")
        }]
    );
    assert_eq!(app.shutdown().leaked(), 0);
}

#[test]
fn a_switch_or_reload_the_data_core_does_not_take_is_reported_and_the_switch_undone() {
    let backing = serde_json::json!([
        {"name": "a", "devargs": "net_null0", "priority": 10, "port_label": "p0"},
        {"name": "b", "devargs": "net_null1", "priority": 20, "port_label": "p1"}]);
    let mut app = Appliance::start(cfg(backing.clone(), 100), &StartOptions::default()).unwrap();
    app.health_tick();
    app.drain_events();
    assert!(app.stop_data_core(1));
    let e = app
        .apply(Command::Failover {
            vnic: "vnic0".into(),
            to: Some("b".into()),
            why: "test".into(),
        })
        .unwrap_err();
    let CommandError::Failover(FailoverError::Publish(p)) = &e else {
        panic!("not a publish error: {e}")
    };
    assert_eq!(p.core, 1);
    assert_eq!(
        e.to_string(),
        "data core 1 did not take the new forwarding table: invalid argument to publish: the data core on 1 has stopped"
    );
    let v = &app.status().vnics[0];
    assert_eq!(
        v.active_backing.as_deref(),
        Some("a"),
        "the switch is undone"
    );
    assert_eq!(v.failover_count, 0);
    assert_eq!(v.backing[0].state, BackingState::Active);
    assert_eq!(v.backing[1].state, BackingState::Standby);
    assert!(
        app.drain_events().is_empty(),
        "no event for a switch that did not happen"
    );
    // A reload that changes vnic0's policy must be put in service by the core: reported.
    let new = cfg(backing, 500);
    let e = app
        .apply(Command::Reload {
            config: Box::new(new),
            source: "test".into(),
        })
        .unwrap_err();
    assert!(
        matches!(e, CommandError::Reload(ReloadError::Publish(_))),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("the new config was applied but not put in service: data core 1"),
        "{e}"
    );
    let last = app.reloads().pop().unwrap();
    assert!(!last.ok);
    assert_eq!(last.error.as_deref(), Some(e.to_string().as_str()));
    assert_eq!(app.shutdown().leaked(), 0);
}
