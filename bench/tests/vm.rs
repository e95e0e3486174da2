//! A real VM on a vhost-user vNIC: a QEMU guest (TCG: no nested KVM here) with `virtio-net-pci` on
//! vnicd's vhost-user socket answers ping from the Linux stack on the wire side, a `net_tap`
//! backing device. The guest is built from Debian packages by `deploy/guest/build.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use vnic_bench::qemu;
use vnic_control::config;
use vnic_control::runner::Running;

const MAC: &str = "02:00:00:00:00:99";

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_qemu_guest_on_a_vhost_user_vnic_answers_ping_from_the_wire() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let g = qemu::guest(root).unwrap();
    let dir = std::env::temp_dir().join(format!("vnic-vm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("vm0.vhost");
    let tap = format!("vnvm{}", std::process::id() % 10000);
    let cfg = json!({
        "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 256},
        // QEMU's TCG needs the CPUs: the data core backs off when idle.
        "data_cores": [{"core": 1, "idle_sleep_us": 200}],
        "control_socket": dir.join("c.sock"), "admin_socket": dir.join("a.sock"),
        "vnics": [{"name": "vm0", "mac": MAC, "queues": 1,
                   "client": {"transport": "vhost-user", "socket": sock},
                   "backing": [{"name": "tap0", "devargs": format!("net_tap0,iface={tap}"), "port_label": "p0"}]}]
    });
    let run = Running::start(config::parse(&cfg.to_string()).unwrap(), Default::default())
        .expect("vnicd");
    // The wire's far end: the host's stack on the tap, on a subnet of its own.
    ip(&["addr", "add", "10.231.0.1/24", "dev", &tap]);
    ip(&["link", "set", &tap, "up"]);

    let mut q = qemu::start(
        &g,
        &sock.display().to_string(),
        &dir.join("q.mon"),
        MAC,
        "10.231.0.2/24",
        None,
    )
    .expect("qemu-system-x86_64 (make deps)");
    let t0 = Instant::now();
    let ready = q.wait_ready(Duration::from_secs(180)).unwrap();
    assert!(
        ready.contains(MAC),
        "the guest's NIC has the vNIC's MAC: {ready}"
    );
    eprintln!("guest up in {:.1} s: {ready}", t0.elapsed().as_secs_f64());
    let v = run.vnic("vm0");
    assert_eq!(v["state"], "attached", "{v:#}");
    assert_eq!(v["owner"]["kind"], "vhost", "{v:#}");

    let before = run.vnic("vm0");
    // busybox's ping (busybox-static is a dependency; iputils may not be installed).
    let o = Command::new("/bin/busybox")
        .args(["ping", "-c", "5", "-W", "5", "-I", &tap, "10.231.0.2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("5 packets transmitted, 5 packets received"),
        "ping through vnicd to the guest:\n{text}"
    );
    let after = run.vnic("vm0");
    let d = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    assert!(d("rx_packets") >= 5 && d("tx_packets") >= 5, "{after:#}");
    assert_eq!(d("spoof_drops"), 0);

    // The VM goes away: the vNIC is detached.
    q.guard.stop(Duration::from_secs(5));
    run.wait_for("vm0", "detach", Duration::from_secs(20), |v| {
        v["state"] == "detached"
    });
    let r = run.finish();
    assert_eq!(r.leaked(), 0, "{r:?}");
}
