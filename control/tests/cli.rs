//! The vnicd command line: config checking exits 0 or 2 with errors naming the JSON path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
use std::process::Command;

fn vnicd(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_vnicd"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn tmp(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("vnicd-cli-{}-{name}", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_config_accepts_the_shipped_configs() {
    for f in ["demo.json", "sriov-host.json"] {
        let p = format!("{}/../configs/{f}", env!("CARGO_MANIFEST_DIR"));
        let (code, out, err) = vnicd(&["--check-config", &p]);
        assert_eq!(code, 0, "{f}: {out}{err}");
        assert!(out.contains("valid"), "{out}");
    }
}

#[test]
fn check_config_rejects_with_exit_2_and_the_path() {
    let p = tmp(
        "bad.json",
        r#"{"vnics":[{"name":"v","mac":"02:00:00:00:00:01","backing":[{"name":"b","devargs":"net_null0","port_label":"p","priority":0}]}]}"#,
    );
    let (code, _, err) = vnicd(&["--check-config", p.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("vnics[0].backing[0].priority: 0 out of range 1..=100"),
        "{err}"
    );
    let p = tmp("syntax.json", "{\n \"vnics\": [\n");
    let (code, _, err) = vnicd(&["--check-config", p.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("syntax error at line 3 column"), "{err}");
}

#[test]
fn missing_file_and_bad_arguments_fail_clearly() {
    let (code, _, err) = vnicd(&["--check-config", "/nonexistent/vnicd.json"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read /nonexistent/vnicd.json"), "{err}");
    let (code, _, err) = vnicd(&["--config", "/nonexistent/vnicd.json"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read"), "{err}");
    let (code, _, err) = vnicd(&["--inline-client", "sideways"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid value 'sideways'"), "{err}");
    let (code, _, err) = vnicd(&["--duration", "-1"]);
    assert_ne!(code, 0);
    assert!(!err.is_empty());
}

/// vnicd as a process: SIGHUP re-reads the file; with `watch_config` a change to the file is
/// enough; a half-written file is refused and changes nothing.
#[test]
fn sighup_and_file_watch_reload_the_running_daemon() {
    let dir = std::env::temp_dir().join(format!("vnicd-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_path = dir.join("vnicd.json");
    let cfg = |extra_vnic: bool, watch: bool| {
        let mut v = vec![
            serde_json::json!({"name": "v0", "mac": "02:00:00:00:00:01", "backing": [{"name": "b0", "devargs": "net_null0", "port_label": "p0"}]}),
        ];
        if extra_vnic {
            v.push(serde_json::json!({"name": "v1", "mac": "02:00:00:00:00:02", "backing": [{"name": "b1", "devargs": "net_null1", "port_label": "p0"}]}));
        }
        serde_json::json!({
            "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 256},
            "data_cores": [{"core": 1, "idle_sleep_us": 50}],
            "control_socket": dir.join("c.sock"), "admin_socket": dir.join("a.sock"),
            "watch_config": watch, "vnics": v
        })
        .to_string()
    };
    std::fs::write(&cfg_path, cfg(false, false)).unwrap();
    // Killed if the test fails half way: no vnicd may outlive its test.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut d = Kill(
        Command::new(env!("CARGO_BIN_EXE_vnicd"))
            .args(["--quiet", "--config", cfg_path.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let generation = || -> Option<u64> {
        let mut a = vnic_control::client::Client::connect(&dir.join("a.sock")).ok()?;
        a.request("STATUS", serde_json::json!({})).ok()?["config_generation"].as_u64()
    };
    let wait_gen = |g: u64| {
        let t = std::time::Instant::now();
        while generation() != Some(g) {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(10),
                "generation {g} not reached ({:?})",
                generation()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    wait_gen(0);
    std::fs::write(&cfg_path, cfg(true, true)).unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &d.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    wait_gen(1); // v1 added, and the file is watched from the next loop turn on
    std::thread::sleep(std::time::Duration::from_millis(100));
    let full = cfg(false, true);
    std::fs::write(&cfg_path, &full[..full.len() / 2]).unwrap(); // half-written
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(
        generation(),
        Some(1),
        "a truncated file must not be applied"
    );
    std::fs::write(&cfg_path, &full).unwrap();
    wait_gen(2); // v1 removed by the watch alone
    let mut a = vnic_control::client::Client::connect(&dir.join("a.sock")).unwrap();
    let show = a.request("CONFIG_SHOW", serde_json::json!({})).unwrap();
    let hist = show["history"].as_array().unwrap();
    assert!(
        hist.iter()
            .any(|h| h["ok"] == false && h["source"].as_str().unwrap().starts_with("file watch")),
        "{hist:?}"
    );
    assert!(
        hist.iter()
            .any(|h| h["ok"] == true && h["source"].as_str().unwrap().starts_with("SIGHUP")),
        "{hist:?}"
    );
    assert_eq!(show["config"]["vnics"].as_array().unwrap().len(), 1);
    assert!(Command::new("kill")
        .args(["-TERM", &d.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert!(d.0.wait().unwrap().success(), "clean exit, no leak");
    let _ = std::fs::remove_dir_all(&dir);
}
