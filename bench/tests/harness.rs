//! The benchmark harness itself: the paced generator counts exactly through a real
//! `dpdk-testpmd` peer, refuses bad commands, catches a peer that duplicates frames; and
//! `vnic-bench` stopped by Ctrl-C or by a crashed peer stops everything it started, removes its
//! folder and writes what it measured, marked incomplete.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vnic_bench::gen::Gen;
use vnic_bench::testpmd::{Testpmd, TestpmdOpts};
use vnic_dataplane::eal;

fn gen_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_vnic-gen"))
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (pid, comm) of every process whose parent is `parent`.
fn children(parent: u32) -> Vec<(u32, String)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let st = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let ppid = st
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|p| p.trim().parse::<u32>().ok());
        if ppid == Some(parent) {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            v.push((pid, comm.trim().to_string()));
        }
    }
    v
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| !s.contains("State:\tZ"))
        .unwrap_or(false)
}

fn memif(dir: &Path, role: &str) -> Vec<String> {
    (0..2)
        .map(|i| {
            format!(
                "net_memif{i},role={role},socket={},id=0",
                dir.join(format!("g{i}.sock")).display()
            )
        })
        .collect()
}

/// `vnic-gen` with `queues` queues per memif server port (CPU 0) and a forwarding testpmd io on
/// the client side (CPU 1), links up.
fn gen_and_testpmd(dir: &Path, queues: u16) -> (Gen, Testpmd) {
    let huge = eal::host_hugepages_usable();
    let mut gen =
        Gen::spawn(gen_bin(), 0, &memif(dir, "server"), queues, huge).expect("vnic-gen starts");
    gen.wait_listening(Duration::from_secs(20)).unwrap();
    let mut peer = Testpmd::spawn(&TestpmdOpts::io(1, 0, memif(dir, "client"), huge, "paired"))
        .expect("testpmd starts");
    peer.cmd("start").unwrap();
    gen.wait_ready(Duration::from_secs(30)).unwrap();
    (gen, peer)
}

#[test]
fn the_generator_counts_every_frame_through_testpmd_and_refuses_bad_commands() {
    let dir = std::env::temp_dir().join(format!("vnic-gen-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut gen, peer) = gen_and_testpmd(&dir, 1);

    // 20 000 frames/s for 0.5 s: a rate any peer keeps up with, so every frame must come back.
    let r = gen.trial(20_000, 0.5, 0.1, &[64], true).unwrap();
    // Paced to the rate: what it sent plus what a stall of its CPU made it skip (a 36 ms stall
    // with 21 % steal once skipped 1 748) is the schedule; most of it was sent.
    assert!(
        (9_900..=10_000).contains(&(r.offered + r.skipped)) && r.offered >= 5_000,
        "paced to the rate: {r:?}"
    );
    assert_eq!((r.received, r.lost, r.refused), (r.offered, 0, 0), "{r:?}");
    let lat = r.latency.expect("latency measured");
    assert_eq!(lat.samples, r.received);
    assert!(lat.p50_us > 0.0 && lat.p50_us <= lat.p99_us && lat.p99_us <= lat.max_us);
    assert!(lat.cdf.len() > 50);

    // IMIX frames come back too; frames of an earlier trial are never counted in a later one.
    let r = gen
        .trial(20_000, 0.3, 0.0, &vnic_bench::gen::IMIX, false)
        .unwrap();
    assert_eq!((r.received, r.lost), (r.offered, 0), "{r:?}");
    assert!(r.latency.is_none());

    // Bad commands: a clear error naming the problem, and the generator keeps serving.
    let e = gen.trial(1000, 0.1, 0.0, &[40], false).unwrap_err();
    assert!(e.to_string().contains("size 40 outside 60..=2048"), "{e}");
    let e = gen.trial(1000, 0.0, 0.0, &[64], false).unwrap_err();
    assert!(e.to_string().contains("seconds > 0"), "{e}");
    let r = gen.trial(20_000, 0.2, 0.0, &[64], false).unwrap();
    assert_eq!(r.received, r.offered);

    peer.quit();
    gen.quit();

    // A memif server with more queues than its client hands every frame to two queues: the
    // generator must say so rather than report a doubled rate.
    let (mut gen, peer) = gen_and_testpmd(&dir, 2);
    let e = gen.trial(20_000, 0.2, 0.0, &[64], false).unwrap_err();
    assert!(e.to_string().contains("duplicates"), "{e}");
    peer.quit();
    gen.quit();
    let _ = std::fs::remove_dir_all(&dir);
}

fn bench_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vnic-bench"))
}

/// Start `vnic-bench --quick --scenario baseline-testpmd`, wait until its generator and peer
/// run, do `interrupt` to it, and check the aftermath.
fn interrupted_run(name: &str, interrupt: impl FnOnce(u32, &[(u32, String)])) -> serde_json::Value {
    let dir = std::env::temp_dir().join(format!("vnic-bench-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("r.json");
    let vnicd = Path::new(env!("CARGO_BIN_EXE_vnic-bench")).with_file_name("vnicd");
    assert!(vnicd.exists(), "vnicd is built beside vnic-bench");
    // --force: DPDK processes this test did not start may run on the host; they skew figures,
    // which this test does not read, and must not fail it.
    let child = Command::new(bench_bin())
        .args([
            "--quick",
            "--force",
            "--scenario",
            "baseline-testpmd",
            "--json",
        ])
        .arg(&json)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut kids = Vec::new();
    wait_until("the generator and testpmd", Duration::from_secs(30), || {
        kids = children(pid);
        ["vnic-gen", "dpdk-testpmd"]
            .iter()
            .all(|n| kids.iter().any(|(_, c)| c == n))
    });
    interrupt(pid, &kids);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "exit status says it stopped early: {err}"
    );
    assert!(err.contains("marked incomplete"), "{err}");
    for (k, comm) in &kids {
        assert!(
            !alive(*k),
            "{comm} (pid {k}) still running after vnic-bench exited"
        );
    }
    assert!(
        !std::env::temp_dir()
            .join(format!("vnic-bench-{pid}"))
            .exists(),
        "its sockets and folder are removed"
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("results written")).unwrap();
    assert_eq!(j["incomplete"], true);
    assert!(std::fs::read_to_string(json.with_extension("md"))
        .unwrap()
        .contains("INCOMPLETE"));
    let _ = std::fs::remove_dir_all(&dir);
    j
}

#[test]
fn ctrl_c_stops_every_process_and_writes_what_was_measured_marked_incomplete() {
    if !eal::host_hugepages_usable() {
        let out = Command::new(bench_bin())
            .args(["--quick", "--scenario", "baseline-testpmd"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stderr).contains("need hugepages"));
        return;
    }
    let j = interrupted_run("int", |pid, _| {
        Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap();
    });
    let e = j["error"].as_str().unwrap_or_default().to_string();
    assert!(e.ends_with("interrupted"), "{e}");
}

#[test]
fn a_peer_that_crashes_mid_run_is_reported_and_the_rest_cleaned_up() {
    if !eal::host_hugepages_usable() {
        return;
    }
    let j = interrupted_run("crash", |_, kids| {
        let (tp, _) = kids.iter().find(|(_, c)| c == "dpdk-testpmd").unwrap();
        // Mid-run: once testpmd has polled for half a second of CPU, trials are under way.
        wait_until("testpmd forwarding", Duration::from_secs(30), || {
            cpu_ticks(*tp) >= 50
        });
        Command::new("kill")
            .args(["-KILL", &tp.to_string()])
            .status()
            .unwrap();
    });
    let e = j["error"].as_str().unwrap_or_default().to_string();
    eprintln!("vnic-bench said: {e}");
    assert!(e.contains("testpmd-io"), "the error names the DUT: {e}");
}

#[test]
fn bad_command_lines_are_refused_with_the_reason() {
    for (args, want) in [
        (
            vec!["--gen-cpu", "1", "--dut-cpu", "1"],
            "need two different CPUs",
        ),
        (vec!["--rounds", "0"], "must be positive"),
        (vec!["--scenario", "nonsense"], "invalid value 'nonsense'"),
    ] {
        let out = Command::new(bench_bin()).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn a_missing_peer_program_is_named_before_anything_starts() {
    let json = std::env::temp_dir().join(format!("vnic-bench-missing-{}.json", std::process::id()));
    // Another DPDK program runs on the host (here a stand-in named vnicd): a missing program is
    // still what the user hears about, not the busy host.
    let fake = std::env::temp_dir().join(format!("vnic-bench-missing-{}", std::process::id()));
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::copy("/bin/sleep", fake.join("vnicd")).unwrap();
    let mut other = Command::new(fake.join("vnicd")).arg("60").spawn().unwrap();
    wait_until("the other DPDK program", Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{}/comm", other.id()))
            .is_ok_and(|c| c.trim() == "vnicd")
    });
    // No dpdk-testpmd.
    let out = Command::new(bench_bin())
        .args(["--scenario", "baseline-testpmd", "--json"])
        .arg(&json)
        .env("TESTPMD", "/nonexistent/dpdk-testpmd")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("dpdk-testpmd not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No Open vSwitch (nothing on PATH): asked for alone, the OVS baseline is an error that says
    // what is missing and how to install it.
    let out = Command::new(bench_bin())
        .args(["--scenario", "baseline-ovs", "--json"])
        .arg(&json)
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Open vSwitch with DPDK is not installed") && err.contains("make bench-deps"),
        "{err}"
    );
    assert!(!json.exists(), "nothing ran, nothing written");
    let _ = other.kill();
    let _ = other.wait();
    let _ = std::fs::remove_dir_all(&fake);
}

#[test]
fn compare_reads_plain_and_compressed_results() {
    let dir = std::env::temp_dir().join(format!("vnic-bench-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |mpps: f64| {
        serde_json::json!({"summary": [{"scenario": "memif", "dut": "vnicd-lcore", "median_mpps": mpps}]})
            .to_string()
    };
    let a = dir.join("a.json");
    std::fs::write(&a, run(10.0)).unwrap();
    let b = dir.join("b.json.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&b).unwrap(),
        flate2::Compression::default(),
    );
    std::io::Write::write_all(&mut gz, run(12.5).as_bytes()).unwrap();
    gz.finish().unwrap();
    let out = Command::new(bench_bin())
        .arg("compare")
        .args([&a, &b])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("| memif vnicd-lcore median_mpps | 10.000 | 12.500 | +25.0 % |"),
        "{text}"
    );
    // Not JSON, not gzip: named.
    std::fs::write(&a, b"\x1f\x8bnope").unwrap();
    let out = Command::new(bench_bin())
        .arg("compare")
        .args([&a, &b])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("a.json: not gzip"));
    let _ = std::fs::remove_dir_all(&dir);
}
