//! The vnicd command line: config checking exits 0 or 2 with errors naming the JSON path.
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
