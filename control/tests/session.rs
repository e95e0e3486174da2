//! The control protocol over real Unix sockets against a real appliance (EAL, vdevs).
//! The appliance and its server run on a thread of their own, as vnicd's control thread does;
//! the test is the client (and reads state back over the admin socket).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
mod common;
use common::raw;
use common::start;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use vnic_control::client::Client;
use vnic_dataplane::{Burst, Mempool, Ring};

fn frame(seq: u32, src: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xee]);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    f
}

/// Send `n` frames on queue rings and read them back (net_ring loops tx to rx).
fn round_trip(pool: &Mempool, rx: &Ring, tx: &Ring, n: u32, src: [u8; 6]) -> u32 {
    let mut got = 0;
    let mut sent = 0;
    let mut b = Burst::default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got < n {
        assert!(Instant::now() < deadline, "round trip stuck at {got}/{n}");
        while sent < n && sent - got < 256 {
            let mut m = pool.alloc_with(&frame(sent, src)).unwrap();
            while let Err(back) = tx.enqueue_one(m) {
                m = back;
                std::thread::yield_now();
            }
            sent += 1;
        }
        if rx.dequeue(&mut b) == 0 {
            std::thread::yield_now();
            continue;
        }
        for m in b.drain() {
            assert_eq!(
                u32::from_be_bytes(m.data()[14..18].try_into().unwrap()),
                got,
                "in order, exactly once"
            );
            got += 1;
        }
    }
    got
}

#[test]
fn login_attach_traffic_detach_happy_path() {
    let fx = start(2000);
    let mut c = fx.client();
    let w = raw::hello(&mut c, "vnic0", None).unwrap();
    assert_eq!(
        (w["op"].as_str(), w["version"].as_u64(), w["epoch"].as_u64()),
        (Some("WELCOME"), Some(1), Some(0))
    );
    let caps = raw::caps(&mut c).unwrap();
    assert_eq!(
        (
            caps["max_queues"].as_u64(),
            caps["max_depth"].as_u64(),
            caps["spoof_check"].as_bool()
        ),
        (Some(2), Some(1024), Some(true))
    );
    let a = raw::attach(&mut c, 2, 512, 1500, false).unwrap();
    assert_eq!(a["op"], "ATTACHED");
    assert_eq!(a["epoch"], 1);
    assert_eq!(a["mac"], "02:00:00:00:00:01");
    assert_eq!(a["queues"], 2);
    assert_eq!(a["rings"].as_array().unwrap().len(), 2);
    assert_eq!(a["link"]["active_backing"], "vf0");
    assert_eq!(a["token"].as_str().unwrap().len(), 32);
    let v = fx.vnic("vnic0");
    assert_eq!(
        (v["state"].as_str(), v["client_pid"].as_i64()),
        (Some("attached"), Some(std::process::id() as i64))
    );
    assert_eq!(v["queues"], 2);
    // The client reaches its rings by name: zero copy, same process here.
    let pool = Mempool::lookup(a["mempool"].as_str().unwrap()).unwrap();
    let base = pool.in_use();
    let q0 = &a["rings"][0];
    let (rx, tx) = (
        Ring::lookup(q0["rx"].as_str().unwrap()).unwrap(),
        Ring::lookup(q0["tx"].as_str().unwrap()).unwrap(),
    );
    assert_eq!(
        round_trip(&pool, &rx, &tx, 3000, [0x02, 0, 0, 0, 0, 0x01]),
        3000
    );
    c.heartbeat().unwrap();
    let v = fx.vnic("vnic0");
    assert_eq!(
        (
            v["tx_packets"].as_u64(),
            v["rx_packets"].as_u64(),
            v["spoof_drops"].as_u64()
        ),
        (Some(3000), Some(3000), Some(0))
    );
    // Frames with someone else's source MAC never leave.
    for s in 0..10 {
        tx.enqueue_one(
            pool.alloc_with(&frame(s, [0x02, 0, 0, 0, 0, 0x99]))
                .unwrap(),
        )
        .unwrap();
    }
    let t = Instant::now();
    while fx.vnic("vnic0")["spoof_drops"] != 10 {
        assert!(t.elapsed() < Duration::from_secs(5));
    }
    let d = raw::detach(&mut c).unwrap();
    assert_eq!(d["op"], "DETACHED");
    assert_eq!(d["epoch"], 2);
    let v = fx.vnic("vnic0");
    assert_eq!(v["state"], "detached");
    assert_eq!(
        v["pool_in_use"].as_u64(),
        Some(base as u64),
        "every mbuf back"
    );
    drop(c);
    fx.finish();
}

fn refused(r: Result<Value, vnic_control::client::ClientError>) -> (String, String) {
    match r {
        Err(vnic_control::client::ClientError::Refused { code, message, .. }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn every_bad_input_gets_a_clear_error_and_changes_nothing() {
    let fx = start(2000);
    let before = fx.status();
    let mut c = fx.client();
    // Malformed JSON, oversized message, unknown op, wrong version: raw lines.
    for (raw, code, needle) in [
        ("{not json\n".to_string(), "malformed", "not JSON"),
        (
            format!(
                "{{\"v\":1,\"id\":1,\"op\":\"HELLO\",\"pad\":\"{}\"}}\n",
                "x".repeat(10_000)
            ),
            "too_large",
            "at most 4096",
        ),
        (
            "{\"v\":1,\"id\":2,\"op\":\"FLY\"}\n".to_string(),
            "unknown_op",
            "FLY",
        ),
        (
            "{\"v\":7,\"id\":3,\"op\":\"CAPS\"}\n".to_string(),
            "unsupported_version",
            "supported: [1]",
        ),
        ("[1,2,3]\n".to_string(), "malformed", "JSON object"),
    ] {
        c.send_raw(raw.as_bytes()).unwrap();
        let e = c.recv_json().unwrap();
        assert_eq!(e["op"], "ERROR", "{raw:.40}");
        assert_eq!(e["code"], code, "{e}");
        assert!(e["message"].as_str().unwrap().contains(needle), "{e}");
    }
    // Session order and identity.
    assert_eq!(
        refused(raw::attach(&mut c, 1, 256, 1500, false)).0,
        "no_hello"
    );
    assert_eq!(refused(raw::caps(&mut c,)).0, "no_hello");
    let (code, msg) = refused(c.request("HELLO", json!({"versions": [2, 3], "vnic": "vnic0"})));
    assert_eq!(code, "unsupported_version");
    assert!(msg.contains("no common protocol version"), "{msg}");
    assert_eq!(refused(raw::hello(&mut c, "nope", None)).0, "unknown_vnic");
    let (code, msg) = refused(raw::hello(&mut c, "vnic2", None));
    assert_eq!(code, "not_authorized");
    assert!(msg.contains("uid 0"), "{msg}");
    assert_eq!(
        refused(raw::hello(&mut c, "vnic0", Some("00112233"))).0,
        "bad_token"
    );
    assert_eq!(
        refused(c.request(
            "HELLO",
            json!({"versions": [1], "vnic": "vnic0", "extra": 1})
        ))
        .0,
        "bad_request"
    );
    raw::hello(&mut c, "vnic0", None).unwrap();
    assert_eq!(
        refused(raw::hello(&mut c, "vnic0", None)).0,
        "already_hello"
    );
    assert_eq!(refused(raw::detach(&mut c)).0, "not_attached");
    // Out-of-range ATTACH: nothing is attached afterwards.
    for (q, d, m, field) in [
        (3, 256, 1500, "queues"),
        (0, 256, 1500, "queues"),
        (1, 2048, 1500, "depth"),
        (1, 100, 1500, "depth"),
        (1, 32, 1500, "depth"),
        (1, 256, 9000, "mtu"),
    ] {
        let (code, msg) = refused(raw::attach(&mut c, q, d, m, false));
        assert_eq!(code, "out_of_range", "{msg}");
        assert!(msg.starts_with(field), "{msg}");
    }
    assert_eq!(fx.vnic("vnic0")["state"], "detached");
    assert_eq!(
        refused(c.request("REQUEST_FAILOVER", json!({"reason": "test"}))).0,
        "not_attached"
    );
    // A second client cannot take an attached vNIC.
    raw::attach(&mut c, 1, 256, 1500, false).unwrap();
    let epoch = c.epoch;
    // One backing device only: nothing to fail over to.
    let (code, msg) = refused(c.request("REQUEST_FAILOVER", json!({"reason": "test"})));
    assert_eq!(code, "no_standby", "{msg}");
    let mut other = fx.client();
    assert_eq!(refused(raw::hello(&mut other, "vnic0", None)).0, "busy");
    assert_eq!(
        refused(raw::attach(&mut c, 1, 256, 1500, false)).0,
        "already_attached"
    );
    // A request naming a stale epoch is refused, and changes nothing.
    let (code, msg) = refused(c.request("DETACH", json!({"epoch": epoch - 1})));
    assert_eq!(code, "stale_epoch");
    assert!(msg.contains(&format!("at epoch {epoch}")), "{msg}");
    assert_eq!(fx.vnic("vnic0")["state"], "attached");
    c.request("DETACH", json!({"epoch": epoch})).unwrap();
    // Admin socket refuses control ops and unknown vNICs.
    let mut a = Client::connect(&fx.admin).unwrap();
    assert_eq!(refused(raw::hello(&mut a, "vnic0", None)).0, "unknown_op");
    assert_eq!(
        refused(a.request("SHOW", json!({"vnic": "zzz"}))).0,
        "unknown_vnic"
    );
    assert_eq!(
        refused(a.request("DETACH", json!({"vnic": "vnic1"}))).0,
        "not_attached"
    );
    let after = fx.status();
    for (b, a) in before["vnics"]
        .as_array()
        .unwrap()
        .iter()
        .zip(after["vnics"].as_array().unwrap())
    {
        assert_eq!(
            (a["state"].clone(), a["pool_in_use"].clone()),
            (b["state"].clone(), b["pool_in_use"].clone())
        );
    }
    drop((c, other, a));
    fx.finish();
}

#[test]
fn a_client_that_goes_silent_is_detached_within_the_heartbeat_deadline() {
    let fx = start(200);
    let mut c = fx.client();
    raw::hello(&mut c, "vnic0", None).unwrap();
    let a = raw::attach(&mut c, 1, 256, 1500, false).unwrap();
    let pool = Mempool::lookup(a["mempool"].as_str().unwrap()).unwrap();
    let base = fx.vnic("vnic0")["pool_in_use"].as_u64().unwrap();
    // Leave frames in both rings, then say nothing more.
    let tx = Ring::lookup(a["rings"][0]["tx"].as_str().unwrap()).unwrap();
    for s in 0..50 {
        tx.enqueue_one(
            pool.alloc_with(&frame(s, [0x02, 0, 0, 0, 0, 0x01]))
                .unwrap(),
        )
        .unwrap();
    }
    let t = Instant::now();
    let took = fx.wait_state("vnic0", "detached", Duration::from_secs(3));
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "detached before the deadline: {took:?}"
    );
    assert!(
        took < Duration::from_millis(200 + 500),
        "detached {took:?} after a 200 ms deadline"
    );
    let v = fx.vnic("vnic0");
    assert_eq!(
        v["pool_in_use"].as_u64().unwrap(),
        base,
        "rings drained, mbufs back"
    );
    // The client is told.
    let pushes = c.pushes_json();
    assert!(
        pushes
            .iter()
            .any(|p| p["op"] == "ERROR"
                && p["message"].as_str().unwrap().contains("heartbeat missed")),
        "{pushes:?}"
    );
    fx.finish();
}

#[test]
fn a_client_whose_socket_closes_is_detached_and_can_re_attach_with_its_token() {
    let fx = start(5000);
    let mut c = fx.client();
    raw::hello(&mut c, "vnic0", None).unwrap();
    let a = raw::attach(&mut c, 1, 256, 1500, false).unwrap();
    let token = a["token"].as_str().unwrap().to_string();
    let pool = Mempool::lookup(a["mempool"].as_str().unwrap()).unwrap();
    let (rx, tx) = (
        Ring::lookup(a["rings"][0]["rx"].as_str().unwrap()).unwrap(),
        Ring::lookup(a["rings"][0]["tx"].as_str().unwrap()).unwrap(),
    );
    round_trip(&pool, &rx, &tx, 1000, [0x02, 0, 0, 0, 0, 0x01]);
    drop(c); // the process "dies": its socket closes
    fx.wait_state("vnic0", "detached", Duration::from_secs(2));
    let mut c = fx.client();
    let w = raw::hello(&mut c, "vnic0", Some(&token)).unwrap();
    assert_eq!(w["resumed"], true);
    let b = raw::attach(&mut c, 1, 256, 1500, false).unwrap();
    assert_eq!(b["mac"], a["mac"], "same identity");
    assert_eq!(
        b["epoch"].as_u64().unwrap(),
        a["epoch"].as_u64().unwrap() + 2,
        "detach and re-attach each bump the epoch"
    );
    assert_ne!(b["token"], a["token"], "a fresh token per attachment");
    let v = fx.vnic("vnic0");
    assert_eq!(
        (v["tx_packets"].as_u64(), v["rx_packets"].as_u64()),
        (Some(1000), Some(1000)),
        "counters kept"
    );
    raw::detach(&mut c).unwrap();
    fx.finish();
}

#[test]
fn two_vnics_attach_and_detach_while_a_third_carries_traffic_without_loss() {
    let fx = start(5000);
    let mut c1 = fx.client();
    raw::hello(&mut c1, "vnic1", None).unwrap();
    let a = raw::attach(&mut c1, 2, 1024, 1500, false).unwrap();
    let pool = Mempool::lookup(a["mempool"].as_str().unwrap()).unwrap();
    let (rx, tx) = (
        Ring::lookup(a["rings"][1]["rx"].as_str().unwrap()).unwrap(),
        Ring::lookup(a["rings"][1]["tx"].as_str().unwrap()).unwrap(),
    );
    const N: u32 = 200_000;
    let traffic =
        std::thread::spawn(move || round_trip(&pool, &rx, &tx, N, [0x02, 0, 0, 0, 0, 0x02]));
    // Meanwhile vnic0 attaches and detaches over and over (vnic2 is refused each time).
    let mut cycles = 0;
    while !traffic.is_finished() || cycles < 20 {
        let mut c0 = fx.client();
        raw::hello(&mut c0, "vnic0", None).unwrap();
        raw::attach(&mut c0, 1 + cycles % 2, 256, 1500, false).unwrap();
        let mut c2 = fx.client();
        assert!(raw::hello(&mut c2, "vnic2", None).is_err());
        raw::detach(&mut c0).unwrap();
        cycles += 1;
    }
    assert_eq!(traffic.join().unwrap(), N);
    let v = fx.vnic("vnic1");
    assert_eq!(
        (
            v["tx_packets"].as_u64(),
            v["rx_packets"].as_u64(),
            v["rx_drops"].as_u64(),
            v["tx_drops"].as_u64()
        ),
        (Some(N as u64), Some(N as u64), Some(0), Some(0))
    );
    eprintln!("{cycles} attach/detach cycles of vnic0 during {N} frames on vnic1");
    raw::detach(&mut c1).unwrap();
    fx.finish();
}

#[test]
fn random_and_mutated_messages_never_bring_the_server_down() {
    let fx = start(5000);
    let seeds = [
        r#"{"v":1,"id":1,"op":"HELLO","versions":[1],"vnic":"vnic0"}"#,
        r#"{"v":1,"id":2,"op":"ATTACH","queues":1,"depth":256,"mtu":1500}"#,
        r#"{"v":1,"id":3,"op":"CAPS"}"#,
        r#"{"v":1,"id":4,"op":"DETACH","epoch":1}"#,
        r#"{"v":1,"id":5,"op":"HEARTBEAT"}"#,
    ];
    // xorshift: deterministic, no extra crate.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut replies = 0;
    for round in 0..40 {
        let mut c = fx.client();
        c.timeout = Duration::from_millis(150);
        for _ in 0..50 {
            let mut m = seeds[(rnd() % seeds.len() as u64) as usize]
                .as_bytes()
                .to_vec();
            match rnd() % 4 {
                0 => {
                    let i = (rnd() as usize) % m.len();
                    m[i] = rnd() as u8;
                }
                1 => {
                    let i = (rnd() as usize) % m.len();
                    m.truncate(i);
                }
                2 => m = (0..(rnd() % 200)).map(|_| rnd() as u8).collect(),
                _ => {}
            }
            m.retain(|&b| b != b'\n');
            m.push(b'\n');
            if c.send_raw(&m).is_err() {
                break;
            }
            while let Ok(v) = c.recv_json() {
                replies += 1;
                if v["id"].is_number() {
                    break;
                }
            }
        }
        if round % 2 == 0 {
            drop(c); // vanish mid-session
        } else {
            let _ = raw::detach(&mut c);
        }
    }
    assert!(replies > 500, "the server answered ({replies})");
    // Still up and consistent: everything detached again, a clean login works.
    for n in ["vnic0", "vnic1", "vnic2"] {
        fx.wait_state(n, "detached", Duration::from_secs(6));
    }
    let mut c = fx.client();
    raw::hello(&mut c, "vnic0", None).unwrap();
    raw::attach(&mut c, 1, 256, 1500, false).unwrap();
    raw::detach(&mut c).unwrap();
    fx.finish();
}
