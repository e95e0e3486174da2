//! `make demo`'s scenario, shortened: vnicd with the embedded config, a testpmd wire and the
//! in-core reflecting client must forward traffic, drop nothing and return every mbuf.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
use std::process::Command;

#[test]
fn the_demo_scenario_passes() {
    let demo = env!("CARGO_BIN_EXE_vnic-demo");
    let vnicd = std::path::Path::new(demo).with_file_name("vnicd");
    assert!(
        vnicd.exists(),
        "{} missing: run the workspace tests (make test)",
        vnicd.display()
    );
    let o = Command::new(demo)
        .args(["--seconds", "3", "--vnicd", vnicd.to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "demo failed:\n{out}\n{err}");
    assert!(out.contains("mempool leak check OK"), "{out}");
    assert!(out.contains("drops             0"), "{out}");
    assert!(out.contains("result            PASS"), "{out}");
    // vnicd printed live status lines with both vNICs on their best-priority device.
    assert!(err.contains("vnic0@vnic0-a: rx"), "{err}");
    assert!(err.contains("vnic1@vnic1-a: rx"), "{err}");
    // The vhost-user and memif vNICs carried the unmodified testpmd's traffic too.
    for v in [
        "vnic2  vhost-user active vnic2-a",
        "vnic3  memif      active vnic3-a",
    ] {
        let line = out
            .lines()
            .find(|l| l.contains(v))
            .unwrap_or_else(|| panic!("{v}: {out}"));
        assert!(!line.contains("rx            0 "), "{line}");
    }
}
