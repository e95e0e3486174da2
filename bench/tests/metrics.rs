//! `/metrics` with real tools: vnicd carries traffic (a `vnic-client source` through a
//! reflecting `dpdk-testpmd` peer) while Debian's Prometheus scrapes it; `promtool query instant`
//! agrees with `vnicctl status --json` once traffic stops, and `promtool check metrics` finds
//! nothing wrong. The listener's bad input: a port in use, a malformed `listen`, wrong paths and
//! methods, a client that never finishes its request, 1 000 concurrent scrapes — each refused or
//! answered, with the vNIC carrying traffic losing nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vnic_bench::procs::Guard;
use vnic_bench::testpmd::Testpmd;
use vnic_bench::vnicd;

fn bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_vnic-gen")).with_file_name(name)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 request over any stream: (status code, headers, body).
fn http<S: Read + Write>(
    mut s: S,
    method: &str,
    path: &str,
    accept: Option<&str>,
) -> (u16, String, String) {
    let acc = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: vnicd\r\n{acc}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_string(), body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    http(s, "GET", path, None)
}

/// The sample `name{labels…}` in a text exposition.
fn sample(body: &str, name_and_labels: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `vnicd ARG PATH` with `cfg` written to `path` first: (exit code, stderr).
fn vnicd_on(arg: &str, path: &Path, cfg: &Value) -> (Option<i32>, String) {
    std::fs::write(path, cfg.to_string()).unwrap();
    let o = Command::new(bin("vnicd"))
        .arg(arg)
        .arg(path)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

/// Pin this thread to CPU 0 (the control thread's), off the data core's CPU 1.
fn pin_cpu0() {
    core_affinity::set_for_current(core_affinity::CoreId { id: 0 });
}

struct Rig {
    dir: PathBuf,
    vd: Guard,
    _peer: Testpmd,
    addr: SocketAddr,
}

impl Rig {
    fn admin(&self) -> PathBuf {
        self.dir.join("a.sock")
    }
    fn vnic0(&self) -> Value {
        vnicd::status(&self.admin()).unwrap()["vnics"][0].clone()
    }
}

fn cfg(dir: &Path, listen: &str) -> Value {
    json!({
        "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 256,
                "file_prefix": format!("vnicm{}", std::process::id())},
        "data_cores": [{"core": 1, "idle_sleep_us": 20}],
        "control_socket": dir.join("c.sock"), "admin_socket": dir.join("a.sock"),
        "stats_interval_ms": 60000,
        "metrics": {"listen": listen},
        "vnics": [{"name": "vnic0", "mac": "02:00:00:00:00:01",
                   "backing": [{"name": "a", "devargs": format!("net_memif0,role=client,socket={},id=0", dir.join("w0.sock").display()), "port_label": "p0"}]}]
    })
}

/// vnicd with one vNIC on a memif behind a reflecting testpmd, metrics on a loopback port.
fn rig(tag: &str) -> Rig {
    let dir = std::env::temp_dir().join(format!("vnic-met-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let peer = vnic_bench::testpmd::memif_reflector(&dir.join("w0.sock"), 0, true).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let c = cfg(&dir, &addr.to_string());
    let mut vd = vnicd::spawn(&bin("vnicd"), &dir.join("vnicd.json"), &c, &[], false).unwrap();
    vnicd::wait_for(
        &dir.join("a.sock"),
        &mut vd,
        "link up",
        Duration::from_secs(30),
        |s| s["vnics"][0]["link_up"] == true,
    )
    .unwrap();
    Rig {
        dir,
        vd,
        _peer: peer,
        addr,
    }
}

/// `vnic-client source` at `rate` frames/s on the data core's CPU; returns it and its stderr.
fn source(r: &mut Rig, rate: u64) -> (Guard, std::thread::JoinHandle<String>) {
    let mut c = vnicd::client(
        &bin("vnicd"),
        "source",
        "vnic0",
        &r.dir.join("c.sock"),
        1,
        &["--rate", &rate.to_string()],
        vnicd::Output::Capture,
    )
    .unwrap();
    let (_, err) = c.collect_output();
    vnicd::wait_for(
        &r.admin(),
        &mut r.vd,
        "attached",
        Duration::from_secs(20),
        |s| {
            s["vnics"][0]["state"] == "attached"
                && s["vnics"][0]["rx_packets"].as_u64() > Some(1000)
        },
    )
    .unwrap();
    (c, err)
}

/// Stop the source and return (sent, received) from its last line.
fn stop_source(mut c: Guard, err: std::thread::JoinHandle<String>) -> (u64, u64) {
    vnicd::stop_client(&mut c, err, Duration::from_secs(10)).unwrap()
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut c = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (make deps installs Debian's prometheus)");
    let mut i = c.stdin.take().unwrap();
    i.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(i);
    let o = c.wait_with_output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr),
    )
}

/// `promtool query instant` → the value of the one sample (None when there is none yet).
fn query(prom: &str, expr: &str) -> Option<u64> {
    let (ok, out) = promtool(&["query", "instant", prom, expr], None);
    if !ok {
        return None;
    }
    // "vnicd_vnic_rx_packets_total{…} => 123 @[1700000000.123]"
    out.split("=>")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn prometheus_scrapes_vnicd_under_traffic_and_agrees_with_vnicctl() {
    let mut r = rig("prom");
    let (c, err) = source(&mut r, 20_000);

    // The exposition passes promtool's lint while traffic flows. The snapshot is at most 0.1 s
    // old: within a second it shows traffic.
    let rx0 = "vnicd_vnic_rx_packets_total{vnic=\"vnic0\",transport=\"shm\"}";
    let (mut code, mut head, mut body) = (0, String::new(), String::new());
    wait_until("traffic in the metrics", Duration::from_secs(1), || {
        (code, head, body) = get(r.addr, "/metrics");
        sample(&body, rx0).is_some_and(|v| v > 0.0)
    });
    assert_eq!(code, 200, "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let (ok, out) = promtool(&["check", "metrics"], Some(&body));
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics: {out}\n{body}"
    );
    assert_eq!(
        sample(
            &body,
            "vnicd_backing_state{vnic=\"vnic0\",backing=\"a\",state=\"active\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&body, "vnicd_client_events_total{event=\"attach\"}"),
        Some(1.0)
    );
    // Prometheus asks for OpenMetrics and gets it.
    let s = TcpStream::connect(r.addr).unwrap();
    let (code, head, om) = http(
        s,
        "GET",
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
    );
    assert_eq!(code, 200);
    assert!(
        head.contains("application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");

    // A real Prometheus scrapes every second.
    let pport = free_port();
    let pdir = r.dir.join("prom");
    std::fs::create_dir_all(&pdir).unwrap();
    std::fs::write(
        pdir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: vnicd\n    static_configs:\n      - targets: ['{}']\n",
            r.addr
        ),
    )
    .unwrap();
    let prom = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            pdir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            pdir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (make deps installs it)");
    let _prom = Guard::new("prometheus", prom);
    let url = format!("http://127.0.0.1:{pport}");
    let rx = "vnicd_vnic_rx_packets_total{vnic=\"vnic0\"}";
    wait_until(
        "Prometheus to scrape vnicd",
        Duration::from_secs(60),
        || query(&url, rx).is_some_and(|v| v > 0),
    );
    assert_eq!(query(&url, "up{job=\"vnicd\"}"), Some(1));

    // Traffic stops: within one scrape interval Prometheus has vnicctl's exact count.
    let (sent, received) = stop_source(c, err);
    assert_eq!(sent, received, "the reflecting path lost frames");
    let st = Command::new(bin("vnicctl"))
        .args(["--socket"])
        .arg(r.admin())
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(st.status.success());
    let st: Value = serde_json::from_slice(&st.stdout).unwrap();
    let want = st["vnics"][0]["rx_packets"].as_u64().unwrap();
    assert!(want >= received, "{want} < {received}");
    let t0 = Instant::now();
    wait_until(
        "Prometheus to scrape the final count",
        Duration::from_secs(10),
        || query(&url, rx) == Some(want),
    );
    // One scrape interval (1 s), the snapshot's refresh (0.1 s) and promtool's own start.
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(
        query(&url, "vnicd_vnic_tx_packets_total{vnic=\"vnic0\"}"),
        st["vnics"][0]["tx_packets"].as_u64()
    );

    // Debian's dpdk-telemetry.py sees vnicd's commands beside DPDK's own, with the same counts.
    let prefix = format!("vnicm{}", std::process::id());
    let tel = |cmds: &str| -> Vec<Value> {
        let mut c = Command::new("dpdk-telemetry.py")
            .args(["-f", &prefix])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dpdk-telemetry.py (Debian's dpdk package)");
        c.stdin.take().unwrap().write_all(cmds.as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let t = tel("/vnicd/vnics\n/vnicd/vnic,vnic0\n/vnicd/vnic,nope\n/vnicd/cores\n/ethdev/list\n");
    assert_eq!(t.len(), 5, "{t:?}");
    let v = &t[0]["/vnicd/vnics"]["vnic0"];
    assert_eq!(v["name"], "vnic0", "{t:?}");
    assert_eq!(v["state"], "detached");
    assert_eq!(v["active_backing"], "a");
    assert_eq!(v["rx_packets"], st["vnics"][0]["rx_packets"]);
    assert_eq!(v["tx_packets"], st["vnics"][0]["tx_packets"]);
    assert_eq!(v["rx_drops"], 0);
    let one = &t[1]["/vnicd/vnic"];
    assert_eq!(one["rx_packets"], st["vnics"][0]["rx_packets"]);
    assert!(
        one["backing"]["a"]
            .as_str()
            .unwrap()
            .starts_with("a: priority 50, link up, active"),
        "{one}"
    );
    assert_eq!(t[2]["/vnicd/vnic"], "unknown vNIC \"nope\"");
    assert!(
        t[3]["/vnicd/cores"]["1"]["packets"].as_u64().unwrap() > 0,
        "{:?}",
        t[3]
    );
    assert!(
        t[4]["/ethdev/list"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{:?}",
        t[4]
    );
    r.vd.signal(libc::SIGTERM);
    assert!(
        r.vd.wait_timeout(Duration::from_secs(20))
            .unwrap()
            .success(),
        "vnicd exit (non-zero on a leak)"
    );
}

#[test]
fn the_listener_refuses_bad_input_and_a_scrape_storm_costs_the_data_path_nothing() {
    pin_cpu0();
    let mut r = rig("bad");

    // Wrong path and method: refused, named.
    let (code, _, body) = get(r.addr, "/");
    assert_eq!(
        (code, body.as_str()),
        (404, "not found: vnicd serves /metrics\n")
    );
    let s = TcpStream::connect(r.addr).unwrap();
    let (code, _, body) = http(s, "POST", "/metrics", None);
    assert_eq!(
        (code, body.as_str()),
        (405, "method not allowed: GET /metrics\n")
    );

    // A second vnicd on the same port: a clear error, exit 1, the first untouched.
    let dir2 = r.dir.join("second");
    std::fs::create_dir_all(&dir2).unwrap();
    let mut c2 = cfg(&dir2, &r.addr.to_string());
    c2["eal"]["file_prefix"] = json!(format!("vnicm2{}", std::process::id()));
    c2["vnics"][0]["backing"][0]["devargs"] = json!("net_null0");
    let (code, e) = vnicd_on("--config", &dir2.join("v.json"), &c2);
    assert_eq!(code, Some(1), "{e}");
    assert!(
        e.contains(&format!(
            "vnicd: cannot serve metrics: metrics.listen {}: Address already in use",
            r.addr
        )),
        "{e}"
    );

    // A malformed listen: the config check names the field.
    for (listen, msg) in [
        (
            "localhost:9469",
            "metrics.listen: \"localhost:9469\" is neither IP:PORT",
        ),
        (
            "127.0.0.1",
            "metrics.listen: \"127.0.0.1\" is neither IP:PORT",
        ),
        (
            "unix:relative.sock",
            "metrics.listen: unix socket \"relative.sock\" must be an absolute path",
        ),
    ] {
        let mut c = cfg(&dir2, listen);
        c["vnics"][0]["backing"][0]["devargs"] = json!("net_null0");
        let (code, e) = vnicd_on("--check-config", &dir2.join("bad.json"), &c);
        assert_eq!(code, Some(2), "{listen}: {e}");
        assert!(e.contains(msg), "{listen}: {e}");
    }

    let (c, err) = source(&mut r, 20_000);
    let before = r.vnic0();

    // A client that sends half a request and never finishes: others are served meanwhile.
    let mut slow = TcpStream::connect(r.addr).unwrap();
    slow.write_all(b"GET /metr").unwrap();
    let t = Instant::now();
    assert_eq!(get(r.addr, "/metrics").0, 200);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "a scrape waited {:?} behind a slow client",
        t.elapsed()
    );

    // 1 000 concurrent scrapes from CPU 0: each answered 200 or refused 503 (busy), none hangs.
    let addr = r.addr;
    let storm: Vec<_> = (0..1000)
        .map(|_| {
            std::thread::spawn(move || {
                pin_cpu0();
                get(addr, "/metrics").0
            })
        })
        .collect();
    let codes: Vec<u16> = storm.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = codes.iter().filter(|&&c| c == 200).count();
    let busy = codes.iter().filter(|&&c| c == 503).count();
    assert_eq!(
        ok + busy,
        1000,
        "other answers: {:?}",
        codes
            .iter()
            .filter(|&&c| c != 200 && c != 503)
            .collect::<Vec<_>>()
    );
    assert!(ok > 0, "every scrape refused");
    eprintln!("scrape storm: {ok} answered, {busy} refused as busy");
    drop(slow);

    // The vNIC carried traffic through it all without a drop.
    let after = r.vnic0();
    let (sent, received) = stop_source(c, err);
    assert_eq!(sent, received, "frames lost during the scrape storm");
    for k in ["rx_drops", "tx_drops", "client_drops", "spoof_drops"] {
        assert_eq!(before[k], after[k], "{k} during the storm");
    }
    assert_eq!(after["failover_count"], 0);
    r.vd.signal(libc::SIGTERM);
    assert!(r
        .vd
        .wait_timeout(Duration::from_secs(20))
        .unwrap()
        .success());
}

#[test]
fn metrics_on_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("vnic-met-unix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("metrics.sock");
    let mut c = cfg(&dir, &format!("unix:{}", sock.display()));
    c["vnics"][0]["backing"][0]["devargs"] = json!("net_null0");
    let mut vd = vnicd::spawn(&bin("vnicd"), &dir.join("vnicd.json"), &c, &[], false).unwrap();
    vnicd::wait_for(
        &dir.join("a.sock"),
        &mut vd,
        "up",
        Duration::from_secs(30),
        |_| true,
    )
    .unwrap();
    let mut body = String::new();
    wait_until("the metrics socket", Duration::from_secs(10), || {
        let Ok(s) = std::os::unix::net::UnixStream::connect(&sock) else {
            return false;
        };
        let (code, _, b) = http(s, "GET", "/metrics", None);
        body = b;
        code == 200
    });
    assert!(
        body.contains("vnicd_backing_link_up{vnic=\"vnic0\",backing=\"a\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("vnicd_backing_tx_stalls_total{vnic=\"vnic0\",backing=\"a\"} "),
        "{body}"
    );
    vd.signal(libc::SIGTERM);
    assert!(vd.wait_timeout(Duration::from_secs(20)).unwrap().success());
}

/// A TCP connection whose receive buffer is as small as Linux allows (set before connecting, so
/// the window it offers stays small): a response soon fills it when nobody reads.
fn tiny_window(addr: SocketAddr) -> TcpStream {
    use nix::sys::socket::{
        connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    setsockopt(&fd, sockopt::RcvBuf, &1024).unwrap();
    let SocketAddr::V4(a) = addr else {
        panic!("v4 only")
    };
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(a)).unwrap();
    TcpStream::from(fd)
}

#[test]
fn clients_that_never_read_their_response_do_not_delay_other_scrapes() {
    pin_cpu0();
    let dir = std::env::temp_dir().join(format!("vnic-met-slow-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // 30 vNICs: responses of ~43 KB.
    let mut c = cfg(&dir, &addr.to_string());
    c["vnics"] = json!((0..30)
        .map(|i| json!({"name": format!("v{i}"), "mac": format!("02:00:00:00:02:{i:02x}"),
                        "backing": [{"name": format!("b{i}"), "devargs": format!("net_null{i}"), "port_label": "p0"}]}))
        .collect::<Vec<_>>());
    let mut vd = vnicd::spawn(&bin("vnicd"), &dir.join("vnicd.json"), &c, &[], false).unwrap();
    vnicd::wait_for(
        &dir.join("a.sock"),
        &mut vd,
        "up",
        Duration::from_secs(30),
        |_| true,
    )
    .unwrap();
    let (code, _, body) = get(addr, "/metrics");
    assert_eq!(code, 200);
    assert!(body.len() > 32 * 1024, "{} bytes", body.len());
    // Two clients (one per responder) send a request and never read their response.
    let stuck: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = tiny_window(addr);
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    // Were their responses to hold the two responders, the next scrape would wait for ever.
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let (code, _, b) = get(addr, "/metrics");
    assert_eq!(code, 200);
    assert!(
        b.len().abs_diff(body.len()) < 1024,
        "{} vs {}",
        b.len(),
        body.len()
    );
    eprintln!(
        "a scrape behind two non-reading clients: answered after {:?}",
        t.elapsed()
    );
    drop(stuck);
    vd.signal(libc::SIGTERM);
    assert!(vd.wait_timeout(Duration::from_secs(20)).unwrap().success());
}
