//! The Debian package, built by `deploy/deb/build.sh` (what `make deb` runs) from this build's
//! binaries, installed with `dpkg -i` on this machine: every binary runs, the packaged config
//! passes `vnicd --check-config`, man pages and completion are where man and bash look; `dpkg -r`
//! removes them (the config stays, as Debian keeps conffiles) and `dpkg --purge` the rest.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
use std::path::{Path, PathBuf};
use std::process::Command;

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_vnic-gen"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn sh(cmd: &mut Command) -> (bool, String) {
    let o = cmd.output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr),
    )
}

/// Purges the package whatever happens to the test.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "vnicd"]).output();
    }
}

const FILES: [&str; 12] = [
    "/usr/bin/vnicd",
    "/usr/bin/vnicctl",
    "/usr/bin/vnic-client",
    "/usr/bin/vnic-bench",
    "/usr/share/man/man8/vnicd.8.gz",
    "/usr/share/man/man1/vnicctl.1.gz",
    "/usr/share/man/man1/vnic-client.1.gz",
    "/usr/share/man/man1/vnic-bench.1.gz",
    "/usr/share/bash-completion/completions/vnicctl",
    "/lib/systemd/system/vnicd.service",
    "/usr/lib/tmpfiles.d/vnicd.conf",
    "/usr/lib/vnicd/vnicd-vfs",
];

#[test]
fn the_package_installs_runs_and_removes_cleanly() {
    let (_, status) = sh(Command::new("dpkg-query").args(["-W", "-f=${Status}", "vnicd"]));
    assert!(
        !status.contains("install ok installed"),
        "a vnicd package is installed on this host: this test would replace it"
    );
    let out = std::env::temp_dir().join(format!("vnic-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (ok, log) = sh(Command::new(repo().join("deploy/deb/build.sh"))
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--out")
        .arg(&out));
    assert!(ok, "build.sh: {log}");
    let deb = PathBuf::from(log.trim().lines().last().unwrap());
    assert!(deb.ends_with("vnicd_0.1.0_amd64.deb"), "{log}");
    let (_, depends) = sh(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Depends"));
    for p in [
        "librte-eal23 (>= 22.11)",
        "librte-ethdev23",
        "librte-vhost23",
        "libc6",
    ] {
        assert!(depends.contains(p), "Depends: {depends}");
    }

    let _guard = Installed;
    let (ok, log) = sh(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(ok, "dpkg -i: {log}");
    for b in ["vnicd", "vnicctl", "vnic-client", "vnic-bench"] {
        let (ok, v) = sh(Command::new(format!("/usr/bin/{b}")).arg("--version"));
        assert!(ok && v.trim() == format!("{b} 0.1.0"), "{b} --version: {v}");
        let (ok, h) = sh(Command::new(format!("/usr/bin/{b}")).arg("--help"));
        assert!(ok && h.contains("Usage:"), "{b} --help: {h}");
    }
    let (ok, log) =
        sh(Command::new("/usr/bin/vnicd").args(["--check-config", "/etc/vnicd/vnicd.json"]));
    assert!(ok, "the packaged config: {log}");
    assert!(
        log.contains("valid (1 vNICs, 2 backing devices, 1 data cores)"),
        "{log}"
    );
    for f in FILES {
        assert!(Path::new(f).exists(), "{f} not installed");
    }
    let (ok, w) =
        sh(Command::new("man").args(["-w", "vnicd", "vnicctl", "vnic-client", "vnic-bench"]));
    assert!(
        ok && w.contains("/usr/share/man/man8/vnicd.8.gz"),
        "man -w: {w}"
    );
    // The man page is the binary's own --help (clap_mangen).
    let (ok, page) = sh(Command::new("man")
        .args(["-P", "cat", "8", "vnicd"])
        .env("MANWIDTH", "200"));
    assert!(
        ok && page.contains("--check-config") && page.contains("--preflight"),
        "{page}"
    );
    let (ok, c) = sh(Command::new("bash").args([
        "-c",
        "source /usr/share/bash-completion/completions/vnicctl && complete -p vnicctl",
    ]));
    assert!(ok && c.contains("vnicctl"), "completion: {c}");
    assert!(Path::new("/run/vnicd").is_dir(), "postinst made /run/vnicd");
    // The installed units pass systemd-analyze verify with their man pages checked too.
    for u in ["vnicd.service", "vnicd-vfs@.service", "vnicd-vfs.target"] {
        let o = Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("/lib/systemd/system/{u}"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success() && err.trim().is_empty(), "{u}: {err}");
    }

    let (ok, log) = sh(Command::new("dpkg").args(["-r", "vnicd"]));
    assert!(ok, "dpkg -r: {log}");
    for f in FILES {
        assert!(!Path::new(f).exists(), "{f} left after dpkg -r");
    }
    assert!(
        Path::new("/etc/vnicd/vnicd.json").exists(),
        "conffiles stay until purge"
    );
    let (ok, log) = sh(Command::new("dpkg").args(["--purge", "vnicd"]));
    assert!(ok, "dpkg --purge: {log}");
    assert!(
        !Path::new("/etc/vnicd").exists(),
        "/etc/vnicd left after purge"
    );
    let _ = std::fs::remove_dir_all(&out);
}
