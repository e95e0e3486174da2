//! vnicd with a real `dpdk-testpmd` peer on the wire side of a memif backing device: the test is
//! the client, sends N frames through its tx ring, testpmd reflects them (io, loop topology), and
//! exactly N come back through the client rx ring with their payload intact.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
use std::time::{Duration, Instant};
use vnic_bench::testpmd::{Testpmd, TestpmdOpts};
use vnic_control::appliance::{
    Appliance, AttachRequest, BackingState, Command, Outcome, Owner, StartOptions,
};
use vnic_control::config;
use vnic_dataplane::{eal, Burst};

fn frame(seq: u32) -> Vec<u8> {
    let mut f = vec![0u8; 64 + (seq as usize % 7) * 100];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xee]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // the vNIC's MAC: spoof check passes
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f[18..].iter_mut().enumerate() {
        *b = (seq as usize * 13 + i) as u8;
    }
    f
}

#[test]
fn frames_round_trip_through_a_real_testpmd_peer_over_memif() {
    const N: u32 = 5000;
    let dir = std::env::temp_dir().join(format!("vnic-peer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("w0.sock");
    let huge = eal::host_hugepages_usable();
    let mut peer = Testpmd::spawn(&TestpmdOpts::io(
        0,
        1,
        vec![format!(
            "net_memif0,role=server,socket={},id=0",
            sock.display()
        )],
        huge,
        "loop",
    ))
    .expect("testpmd starts");
    peer.cmd("start").unwrap();

    let cfg = config::parse(
        &serde_json::json!({
            "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 256},
            "data_cores": [{"core": 1, "idle_sleep_us": 50}],
            "vnics": [{
                "name": "vnic0", "mac": "02:00:00:00:00:01",
                "backing": [{"name": "vf0", "devargs": format!("net_memif0,role=client,socket={},id=0", sock.display()), "port_label": "p0"}]
            }]
        })
        .to_string(),
    )
    .unwrap();
    let mut app = Appliance::start(cfg, &StartOptions::default()).expect("vnicd starts");
    let Ok(Outcome::Attached(grant)) = app.apply(Command::Attach {
        vnic: "vnic0".into(),
        req: AttachRequest {
            queues: 1,
            depth: 1024,
            mtu: 1500,
            promisc: false,
        },
        owner: Owner::Inline,
    }) else {
        panic!("attach failed")
    };
    assert_eq!(grant.epoch, 1);
    let st = app.status();
    assert_eq!(st.vnics[0].active_backing.as_deref(), Some("vf0"));
    assert_eq!(st.vnics[0].backing[0].state, BackingState::Active);
    let deadline = Instant::now() + Duration::from_secs(10);
    // Link state is refreshed by the control thread's health checks; this test is that thread.
    loop {
        app.health_tick();
        if app.status().vnics[0].backing[0].link_up {
            break;
        }
        assert!(Instant::now() < deadline, "memif link never came up");
        std::thread::sleep(Duration::from_millis(10));
    }
    peer.wait_links(&[0], Duration::from_secs(10)).unwrap();

    let pool = app.pool("vnic0").unwrap();
    let full = pool.available();
    let (rx, tx) = app.client_rings("vnic0", 0).unwrap();
    let mut got = 0u32;
    let mut sent = 0u32;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut b = Burst::default();
    while got < N {
        assert!(
            Instant::now() < deadline,
            "stuck at {got}/{N}: {:?}",
            app.status().vnics[0]
        );
        // Keep at most 256 in flight: below every ring on the path, so none may be lost.
        while sent < N && sent - got < 256 {
            let mut m = pool.alloc_with(&frame(sent)).unwrap();
            while let Err(back) = tx.enqueue_one(m) {
                m = back;
                std::thread::yield_now();
            }
            sent += 1;
        }
        if rx.dequeue(&mut b) == 0 {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        for m in b.drain() {
            assert_eq!(m.data(), &frame(got)[..], "frame {got} intact and in order");
            got += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(rx.count(), 0, "no extra frames");
    let v = &app.status().vnics[0];
    assert_eq!(
        (
            v.stats.tx_packets,
            v.stats.rx_packets,
            v.stats.tx_drops,
            v.stats.rx_drops
        ),
        (N as u64, N as u64, 0, 0)
    );
    let ps = peer.port_stats().unwrap();
    assert_eq!(
        (ps[0].rx_packets, ps[0].tx_packets),
        (N as u64, N as u64),
        "testpmd saw exactly N each way"
    );
    peer.quit();
    drop(rx);
    drop(tx);
    assert_eq!(pool.available(), full);
    let report = app.shutdown();
    assert_eq!(report.leaked(), 0, "{report:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
