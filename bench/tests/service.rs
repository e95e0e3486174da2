//! vnicd as a systemd service, with systemd's own protocol and tools: the notify protocol over a
//! datagram socket the test owns (`NOTIFY_SOCKET`), the unit files through `systemd-analyze
//! verify`, the tmpfiles entry through `systemd-tmpfiles`, and the VF helper's refusals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
use serde_json::json;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vnic_bench::procs::Guard;

fn bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_vnic-gen")).with_file_name(name)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The next notification, with whether both sockets accepted a connection when it arrived.
fn next(sock: &UnixDatagram, dir: &Path, deadline: Duration) -> (String, bool) {
    sock.set_read_timeout(Some(deadline)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification within {deadline:?}: {e}"));
    let listening = UnixStream::connect(dir.join("c.sock")).is_ok()
        && UnixStream::connect(dir.join("a.sock")).is_ok();
    (
        String::from_utf8_lossy(&buf[..n]).trim_end().to_string(),
        listening,
    )
}

/// Notifications until one has `key`, skipping watchdog pings and status refreshes.
fn until(sock: &UnixDatagram, dir: &Path, key: &str) -> (String, bool) {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {key} within 60 s");
        let (m, l) = next(sock, dir, left);
        if m.lines().any(|x| x == key) {
            return (m, l);
        }
        assert!(
            m.lines()
                .all(|x| x == "WATCHDOG=1" || x.starts_with("STATUS=")),
            "unexpected notification before {key}: {m:?}"
        );
    }
}

#[test]
fn the_service_manager_hears_ready_reloading_stopping_and_watchdog_pings() {
    let dir = std::env::temp_dir().join(format!("vnic-svc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ns = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&ns).unwrap();
    let cfg = json!({
        "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 256,
                "file_prefix": format!("vnics{}", std::process::id())},
        "data_cores": [{"core": 1, "idle_sleep_us": 100}],
        "control_socket": dir.join("c.sock"), "admin_socket": dir.join("a.sock"),
        "stats_interval_ms": 60000,
        "vnics": [{"name": "vnic0", "mac": "02:00:00:00:00:01",
                   "backing": [{"name": "a", "devargs": "net_null0", "port_label": "p0"}]}]
    });
    let cfg_path = dir.join("vnicd.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let child = Command::new(bin("vnicd"))
        .arg("--config")
        .arg(&cfg_path)
        .arg("--quiet")
        .env("NOTIFY_SOCKET", &ns)
        .env("WATCHDOG_USEC", "200000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut vd = Guard::new("vnicd", child);

    // READY=1 first, with a status line, and only once both sockets listen.
    let (m, listening) = next(&sock, &dir, Duration::from_secs(60));
    assert!(m.starts_with("READY=1\n"), "first notification: {m:?}");
    assert!(
        listening,
        "READY=1 before the control and admin sockets listen"
    );
    assert!(
        m.contains("STATUS=1 vNICs (0 attached, 1 links up), 1 data cores, config generation 0"),
        "{m:?}"
    );

    // The watchdog is pinged at half its interval (0.1 s) by the control thread.
    let t = Instant::now();
    let mut pings = 0;
    while t.elapsed() < Duration::from_millis(600) {
        if next(&sock, &dir, Duration::from_secs(5)).0 == "WATCHDOG=1" {
            pings += 1;
        }
    }
    assert!((3..=8).contains(&pings), "{pings} watchdog pings in 0.6 s");

    // SIGHUP: RELOADING=1, then READY=1 with the new generation (a reload that changes a
    // setting).
    let mut cfg2 = cfg.clone();
    cfg2["heartbeat_timeout_ms"] = json!(2000);
    std::fs::write(&cfg_path, cfg2.to_string()).unwrap();
    vd.signal(libc::SIGHUP);
    let (m, _) = until(&sock, &dir, "RELOADING=1");
    assert!(m.contains("STATUS=reloading (SIGHUP)"), "{m:?}");
    let (m, _) = until(&sock, &dir, "READY=1");
    assert!(m.contains("config generation 1"), "{m:?}");

    // A refused reload (a bad file) still ends with READY=1: vnicd runs the old config.
    std::fs::write(&cfg_path, "{\"vnics\": 7}").unwrap();
    vd.signal(libc::SIGHUP);
    until(&sock, &dir, "RELOADING=1");
    let (m, _) = until(&sock, &dir, "READY=1");
    assert!(m.contains("config generation 1"), "{m:?}");

    // SIGTERM: STOPPING=1, then a clean exit.
    vd.signal(libc::SIGTERM);
    until(&sock, &dir, "STOPPING=1");
    let st = vd
        .wait_timeout(Duration::from_secs(20))
        .expect("vnicd exits");
    assert!(st.success(), "{st}");
}

/// A copy of the unit files whose programs point at this build (verify checks they exist).
fn units(dir: &Path) -> Vec<PathBuf> {
    let src = repo().join("deploy/systemd");
    let mut out = Vec::new();
    for f in ["vnicd.service", "vnicd-vfs@.service", "vnicd-vfs.target"] {
        let text = std::fs::read_to_string(src.join(f))
            .unwrap()
            .replace("/usr/bin/vnicd", &bin("vnicd").display().to_string())
            .replace(
                "/usr/lib/vnicd/vnicd-vfs",
                &src.join("vnicd-vfs").display().to_string(),
            );
        let p = dir.join(f);
        std::fs::write(&p, text).unwrap();
        out.push(p);
    }
    out
}

#[test]
fn unit_files_pass_systemd_analyze_verify() {
    let dir = std::env::temp_dir().join(format!("vnic-units-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for u in units(&dir) {
        // Man pages come with the package (`make deb` builds them; its test verifies with them).
        let o = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&u)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && err.trim().is_empty(),
            "{}: {err}",
            u.display()
        );
    }
    // A broken line is caught (the check can fail).
    let bad = dir.join("vnicd.service");
    let mut t = std::fs::read_to_string(&bad).unwrap();
    t.push_str("Restart\n");
    std::fs::write(&bad, t).unwrap();
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Missing '='"),
        "{o:?}"
    );

    // tmpfiles.d makes /run/vnicd (under a root of our own).
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let o = Command::new("systemd-tmpfiles")
        .arg("--create")
        .arg(format!("--root={}", root.display()))
        .arg(repo().join("deploy/systemd/vnicd.tmpfiles"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let md = std::fs::metadata(root.join("run/vnicd")).unwrap();
    assert!(md.is_dir());
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o7777,
        0o755
    );
}

#[test]
fn the_vf_helper_names_what_is_wrong() {
    let helper = repo().join("deploy/systemd/vnicd-vfs");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let o = Command::new(&helper)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    assert_eq!(
        run(&["0000:99:00.0"], &[]),
        (
            Some(1),
            "vnicd-vfs: 0000:99:00.0: no such PCI device (lspci -D lists them)\n".into()
        )
    );
    // A PCI device that is not a PF (this host has no SR-IOV device at all).
    let dev = std::fs::read_dir("/sys/bus/pci/devices")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .find(|d| !Path::new(&format!("/sys/bus/pci/devices/{d}/sriov_totalvfs")).exists());
    if let Some(d) = dev {
        assert_eq!(
            run(&[&d], &[]),
            (
                Some(1),
                format!("vnicd-vfs: {d}: not an SR-IOV physical function (no sriov_totalvfs)\n")
            )
        );
    }
    let (code, err) = run(&[], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("usage: vnicd-vfs PF_PCI_ADDRESS [NUMVFS]"),
        "{err}"
    );
}

#[test]
fn the_kubernetes_example_config_is_valid() {
    // The ConfigMap's `vnicd.json: |` block, dedented.
    let text = std::fs::read_to_string(repo().join("deploy/k8s/configmap.yaml")).unwrap();
    let json: String = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("vnicd.json: |"))
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    assert!(json.contains("\"vnics\""), "{json}");
    let dir = std::env::temp_dir().join(format!("vnic-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("vnicd.json");
    std::fs::write(&p, json).unwrap();
    let o = Command::new(bin("vnicd"))
        .arg("--check-config")
        .arg(&p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
