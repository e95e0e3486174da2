//! A real VM on a vhost-user vNIC: a QEMU guest (TCG: no nested KVM here) with `virtio-net-pci` on
//! vnicd's vhost-user socket answers ping from the Linux stack on the wire side, a `net_tap`
//! backing device. The guest is built from Debian packages by `deploy/guest/build.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vnic_bench::procs::Guard;
use vnic_control::config;
use vnic_control::runner::Running;

const MAC: &str = "02:00:00:00:00:99";

fn guest() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = root.join("target/vm-guest");
    let st = Command::new(root.join("deploy/guest/build.sh"))
        .arg(&out)
        .status()
        .expect("deploy/guest/build.sh runs");
    assert!(st.success(), "the guest could not be built: {st}");
    out
}

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
    let g = guest();
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

    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-machine", "q35,accel=tcg", "-smp", "1", "-m", "256"])
        .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on"])
        .args(["-numa", "node,memdev=mem"])
        .args(["-chardev", &format!("socket,id=c0,path={}", sock.display())])
        .args(["-netdev", "vhost-user,id=n0,chardev=c0"])
        // vectors=0: Debian's QEMU 7.2 crashes under TCG with MSI-X on a vhost-user NIC.
        .args([
            "-device",
            &format!("virtio-net-pci,netdev=n0,mac={MAC},vectors=0"),
        ])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .args(["-kernel", &g.join("vmlinuz").display().to_string()])
        .args(["-initrd", &g.join("initrd.gz").display().to_string()])
        .args([
            "-append",
            "console=ttyS0 quiet panic=-1 vnic.ip=10.231.0.2/24",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut q = Guard::new(
        "qemu",
        qemu.spawn().expect("qemu-system-x86_64 (make deps)"),
    );
    let out = q.child.as_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let t0 = Instant::now();
    let mut console = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) => {
                let ready = l.contains("VNIC-GUEST-READY");
                console.push(l);
                if ready {
                    break;
                }
            }
            Err(_) => assert!(q.running(), "qemu exited: {console:#?}"),
        }
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "guest not up: {console:#?}"
        );
    }
    let ready = console.last().unwrap().clone();
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
        "ping through vnicd to the guest:\n{text}\nconsole: {console:#?}"
    );
    let after = run.vnic("vm0");
    let d = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    assert!(d("rx_packets") >= 5 && d("tx_packets") >= 5, "{after:#}");
    assert_eq!(d("spoof_drops"), 0);

    // The VM goes away: the vNIC is detached.
    q.stop(Duration::from_secs(5));
    run.wait_for("vm0", "detach", Duration::from_secs(20), |v| {
        v["state"] == "detached"
    });
    let r = run.finish();
    assert_eq!(r.leaked(), 0, "{r:?}");
}
