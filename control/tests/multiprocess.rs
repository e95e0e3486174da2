//! Clients in their own processes (`vnic-client`, DPDK secondaries sharing vnicd's hugepage
//! memory): zero copy, kill -9 mid-traffic, a stalled client. The test process is vnicd.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
mod common;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vnic_dataplane::{eal, Mempool, Ring};

fn shared_memory(j: &mut serde_json::Value) {
    assert!(
        eal::host_hugepages_usable(),
        "separate-process clients need hugepages (run `make hugepages` as root)"
    );
    j["eal"]["hugepages"] = "on".into();
    j["eal"]["file_prefix"] = format!("vnict{}", std::process::id()).into();
}

fn client(fx: &common::Fx, mode: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vnic-client"))
        .args([
            mode,
            "--vnic",
            "vnic0",
            "--socket",
            fx.ctl.to_str().unwrap(),
            "--cpu",
            "0",
            "--quiet",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_attached(fx: &common::Fx) {
    fx.wait_state("vnic0", "attached", Duration::from_secs(20));
}

fn frame(seq: u32) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xee]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    f
}

/// The VF's receive side: net_ring0 loops its tx ring into its rx ring, named by the PMD.
fn wire() -> Ring {
    Ring::lookup("ETH_RXTX0_net_ring0").expect("net_ring0's ring")
}

#[test]
fn the_client_process_sees_the_very_mbuf_the_vf_received() {
    let fx = common::start_with(2000, shared_memory);
    let mut c = client(&fx, "dump", &["--count", "3"]);
    wait_attached(&fx);
    let pool = Mempool::lookup("mp_vnic0").unwrap();
    let w = wire();
    let mut sent = Vec::new();
    for s in 0..3 {
        let m = pool.alloc_with(&frame(s)).unwrap();
        sent.push((m.addr(), s));
        w.enqueue_one(m).unwrap();
    }
    let out = c.stdout.take().unwrap();
    let lines: Vec<String> = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.starts_with("frame"))
        .collect();
    assert!(c.wait().unwrap().success());
    let got: Vec<(usize, u32)> = lines
        .iter()
        .map(|l| {
            let addr = l
                .split("mbuf=0x")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            let seq = l.split("seq=").nth(1).unwrap().trim();
            (
                usize::from_str_radix(addr, 16).unwrap(),
                seq.parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got, sent,
        "same mbuf addresses, in order: no copy between processes"
    );
    fx.wait_state("vnic0", "detached", Duration::from_secs(5));
    fx.finish();
}

#[test]
fn a_client_killed_with_sigkill_mid_traffic_is_detached_and_every_mbuf_comes_back() {
    let fx = common::start_with(500, shared_memory);
    let mut c = client(&fx, "reflect", &[]);
    wait_attached(&fx);
    let pool = Mempool::lookup("mp_vnic0").unwrap();
    let base = pool.in_use();
    // 512 frames circulate: wire → vnicd → client (reflect) → vnicd → wire (net_ring loop).
    let w = wire();
    for s in 0..512 {
        w.enqueue_one(pool.alloc_with(&frame(s)).unwrap()).unwrap();
    }
    let t = Instant::now();
    while fx.vnic("vnic0")["tx_packets"].as_u64().unwrap() < 2_000_000 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "traffic too slow: {}",
            fx.vnic("vnic0")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.kill().unwrap(); // SIGKILL, mid-traffic
    let killed = Instant::now();
    c.wait().unwrap();
    let took = fx.wait_state("vnic0", "detached", Duration::from_secs(5));
    assert!(
        killed.elapsed() < Duration::from_millis(500 + 200),
        "detached {took:?} after the kill"
    );
    // Frames still on the wire are the wire's; drain them, then every mbuf must be home.
    std::thread::sleep(Duration::from_millis(50));
    let on_wire = w.drain();
    let v = fx.vnic("vnic0");
    assert_eq!(
        pool.in_use(),
        base,
        "leak after kill -9: {v} ({on_wire} were on the wire)"
    );
    assert_eq!(v["rx_drops"], 0);
    fx.finish();
}

#[test]
fn a_stalled_client_is_detached_at_the_heartbeat_deadline() {
    let fx = common::start_with(300, shared_memory);
    let mut c = client(&fx, "reflect", &[]);
    wait_attached(&fx);
    let pid = c.id().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let t = Instant::now();
    fx.wait_state("vnic0", "detached", Duration::from_secs(3));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(300 + 400),
        "{took:?}"
    );
    c.kill().unwrap();
    c.wait().unwrap();
    assert_eq!(Mempool::lookup("mp_vnic0").unwrap().in_use(), 0);
    fx.finish();
}

#[test]
fn a_client_that_detaches_on_ctrl_c_exits_cleanly() {
    let fx = common::start_with(2000, shared_memory);
    let c = client(&fx, "sink", &[]);
    wait_attached(&fx);
    let pid = c.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let o = c.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("detached"), "{err}");
    assert_eq!(fx.vnic("vnic0")["state"], "detached");
    fx.finish();
}
