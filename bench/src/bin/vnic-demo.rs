//! `make demo`: vnicd on its embedded config with a real wire. A `dpdk-testpmd` peer plays the
//! network behind the six VFs (memif servers, macswap forwarding, loop topology) on CPU 0; vnicd runs
//! its data core on CPU 1. The shm vNICs' clients are `vnic-client reflect`, separate processes
//! that log in over the control socket and work on vnicd's mbufs in shared hugepage memory (CPU
//! 1, sharing it with the data core by yielding when idle); without hugepages, or with
//! `--inline`, they run on the data core instead. The vhost-user and memif vNICs are served to
//! one unmodified `dpdk-testpmd` (macswap) with a `net_virtio_user` and a `net_memif` client port
//! (CPU 0); it needs hugepages (vhost-user maps the client's memory from files). Traffic is seeded with `start tx_first`, circulates
//! for the run, then everything is stopped in the safe order and summarised.
use clap::Parser;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use vnic_bench::procs::Guard;
use vnic_bench::testpmd::{Testpmd, TestpmdOpts};
use vnic_bench::vnicd;
use vnic_control::config;

#[derive(Debug, Parser)]
#[command(about = "End-to-end vnicd demo with a dpdk-testpmd peer")]
struct Args {
    /// Seconds of traffic.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Serve the vNICs with in-core clients on the data core instead of vnic-client processes.
    #[arg(long)]
    inline: bool,
    /// vnicd binary (default: next to this one).
    #[arg(long)]
    vnicd: Option<PathBuf>,
    /// Packets seeded per port by `start tx_first`.
    #[arg(long, default_value_t = 64)]
    burst: u32,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("vnic-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err("--seconds must be positive".into());
    }
    let cfg = config::parse(config::DEMO_CONFIG)?;
    let vnicd = match args.vnicd {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("vnicd"),
    };
    if !vnicd.exists() {
        return Err(format!("{} not found: build with `make build`", vnicd.display()).into());
    }
    // The wire: one memif server per backing device, at the socket its devargs name.
    let mut vdevs = Vec::new();
    for (i, b) in cfg
        .vnics()
        .iter()
        .flat_map(|v| v.backing.iter())
        .enumerate()
    {
        let sock = b
            .devargs
            .split(',')
            .find_map(|kv| kv.strip_prefix("socket="))
            .ok_or("demo config: backing device without socket=")?;
        if let Some(dir) = std::path::Path::new(sock).parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(sock);
        vdevs.push(format!("net_memif{i},role=server,socket={sock},id=0"));
    }
    let huge = vnic_dataplane::eal::host_hugepages_usable();
    println!(
        "vnic-demo: {} vNICs, {} backing devices; memory: {}",
        cfg.vnics().len(),
        vdevs.len(),
        if huge {
            "hugepages"
        } else {
            "no hugepages (--no-huge fallback)"
        }
    );
    println!(
        "vnic-demo: starting the wire: dpdk-testpmd with {} memif server ports on CPU 0",
        vdevs.len()
    );
    // The wire answers like a peer (macswap): every frame goes back to the vNIC's MAC. Frames
    // seeded towards a vNIC carry its MAC as destination too, so a client that swaps MACs (the
    // unmodified testpmd) sends them back with the vNIC's own MAC as source: the spoof check
    // passes.
    let mut wire_opts = TestpmdOpts::io(0, 1, vdevs.clone(), huge, "loop");
    wire_opts.forward_mode = "macswap".into();
    let mut port = 0;
    for v in cfg.vnics() {
        for _ in &v.backing {
            wire_opts.extra.push(format!("--eth-peer={port},{}", v.mac));
            port += 1;
        }
    }
    let mut wire = Testpmd::spawn(&wire_opts)?;

    let separate = !args.inline && huge;
    if !args.inline && !huge {
        println!("vnic-demo: no hugepages, so clients cannot share vnicd's memory: using in-core clients");
    }
    let mut cmd = Command::new(&vnicd);
    cmd.arg("--json-summary");
    if separate {
        println!("vnic-demo: starting vnicd (embedded config) on CPU 1");
    } else {
        println!(
            "vnic-demo: starting vnicd (embedded config, in-core reflecting clients) on CPU 1"
        );
        cmd.args(["--inline-client", "reflect"]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut vd = Guard::new("vnicd", cmd.spawn()?);
    let (reader, _) = vd.collect_output();

    let all: Vec<usize> = (0..vdevs.len()).collect();
    wire.wait_links(&all, Duration::from_secs(20))?;
    if !vd.running() {
        return Err("vnicd exited during start-up".into());
    }
    // The unmodified DPDK application on the vhost-user and memif vNICs.
    let mut app_vdevs = Vec::new();
    for v in cfg.vnics() {
        match &v.client {
            config::ClientConfig::Shm => {}
            config::ClientConfig::VhostUser { socket, .. } => app_vdevs.push(format!(
                "net_virtio_user{},path={socket},queues=1",
                app_vdevs.len()
            )),
            config::ClientConfig::Memif { socket, id, .. } => app_vdevs.push(format!(
                "net_memif{},role=client,socket={socket},socket-abstract=no,id={id}",
                app_vdevs.len() + 10
            )),
        }
    }
    let mut app = None;
    if huge && !app_vdevs.is_empty() {
        // On CPU 0 with the wire: a third busy poller on the data core's CPU would starve it.
        let mut o = TestpmdOpts::io(0, 1, app_vdevs.clone(), huge, "loop");
        o.forward_mode = "macswap".into();
        o.eal_extra.push("--single-file-segments".into());
        let mut t = Testpmd::spawn(&o)?;
        t.cmd("start")?;
        let ports: Vec<usize> = (0..app_vdevs.len()).collect();
        t.wait_links(&ports, Duration::from_secs(20))?;
        println!(
            "vnic-demo: dpdk-testpmd (macswap) is the client of the vhost-user and memif vNICs: {}",
            app_vdevs.join(" ")
        );
        app = Some(t);
    }
    let mut clients = Vec::new();
    if separate {
        let ctl = cfg.raw().control_socket.display();
        for v in cfg
            .vnics()
            .iter()
            .filter(|v| v.client == config::ClientConfig::Shm)
        {
            let out = vnicd::Output::ShowErrors;
            clients.push(vnicd::client(
                &vnicd,
                "reflect",
                &v.name,
                &cfg.raw().control_socket,
                1,
                &[],
                out,
            )?);
        }
        vnicd::wait_all_attached(&cfg.raw().admin_socket, &mut vd)?;
        println!(
            "vnic-demo: {} vnic-client reflect processes attached over {} (pids {:?})",
            clients.len(),
            ctl,
            clients.iter().filter_map(|c| c.pid()).collect::<Vec<_>>()
        );
    }
    let before = wire.port_stats()?;
    // Seed after both sides are up: a command-line --tx-first would fire into a down link.
    wire.cmd(&format!(
        "start tx_first {}",
        args.burst.div_ceil(32).max(1)
    ))?;
    let t0 = Instant::now();
    println!(
        "vnic-demo: traffic seeded; running for {:.0} s",
        args.seconds
    );
    while t0.elapsed().as_secs_f64() < args.seconds {
        std::thread::sleep(Duration::from_millis(100));
        if !vd.running() {
            return Err("vnicd died under traffic".into());
        }
        if !wire.running() {
            return Err("the testpmd wire died under traffic".into());
        }
    }
    // Safe order: stop the wire's traffic first (a memif server can crash if its client leaves
    // under load), then vnicd, then the wire.
    wire.cmd("stop")?;
    let secs = t0.elapsed().as_secs_f64();
    let after = wire.port_stats()?;
    std::thread::sleep(Duration::from_millis(200));
    for c in &mut clients {
        // Ctrl-C: the client detaches cleanly and exits 0.
        c.signal(libc::SIGINT);
        let st = c
            .wait_timeout(Duration::from_secs(5))
            .ok_or("a vnic-client did not exit on SIGINT")?;
        c.child.take();
        if !st.success() {
            return Err(format!("{} exited with {st}", c.name).into());
        }
    }
    // The vhost/memif client leaves first (its devices detach), then vnicd stops.
    if let Some(a) = app.take() {
        a.quit();
    }
    vd.signal(libc::SIGINT);
    let status = vd
        .wait_timeout(Duration::from_secs(15))
        .ok_or("vnicd did not exit after SIGINT")?;
    vd.child.take();
    let out = reader.join().unwrap_or_default();
    wire.quit();

    let wire_rx: u64 = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.rx_packets - b.rx_packets)
        .sum();
    let summary = vnicd::summary(&out)?;
    let vnics = summary["status"]["vnics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let fwd: u64 = vnics
        .iter()
        .map(|v| v["rx_packets"].as_u64().unwrap_or(0) + v["tx_packets"].as_u64().unwrap_or(0))
        .sum();
    let drops: u64 = vnics
        .iter()
        .map(|v| v["rx_drops"].as_u64().unwrap_or(0) + v["tx_drops"].as_u64().unwrap_or(0))
        .sum();
    let leaked: u64 = summary["shutdown"]["pools"]
        .as_array()
        .map(|p| p.iter().map(|x| x[2].as_u64().unwrap_or(0)).sum())
        .unwrap_or(u64::MAX);
    println!();
    println!("=== vnic-demo summary ({secs:.1} s) ===");
    for v in &vnics {
        println!(
            "  {:<6} {:<10} active {:<8} rx {:>12} tx {:>12} drops {}/{}",
            v["name"].as_str().unwrap_or("?"),
            v["transport"].as_str().unwrap_or("?"),
            v["active_backing"].as_str().unwrap_or("-"),
            v["rx_packets"],
            v["tx_packets"],
            v["rx_drops"],
            v["tx_drops"]
        );
    }
    println!(
        "  vnicd moved       {fwd} packets, VF->client + client->VF ({:.2} Mpps)",
        fwd as f64 / secs / 1e6
    );
    println!(
        "  wire received     {wire_rx} packets ({:.2} Mpps)",
        wire_rx as f64 / secs / 1e6
    );
    println!("  drops             {drops}");
    println!(
        "  shm clients       {}",
        if separate {
            "vnic-client reflect processes (zero copy, DPDK secondaries)"
        } else {
            "in-core reflect on the data core"
        }
    );
    println!(
        "  vhost/memif       {}",
        if app_vdevs.is_empty() {
            "none configured"
        } else if huge {
            "dpdk-testpmd macswap on net_virtio_user and net_memif (one copy each way)"
        } else {
            "not run: no hugepages for a vhost-user client"
        }
    );
    println!(
        "  mempool leak check {}",
        if leaked == 0 {
            "OK: every pool back to full".to_string()
        } else {
            format!("FAILED: {leaked} mbufs out")
        }
    );
    let ok = status.success() && leaked == 0 && fwd > 0;
    println!("  result            {}", if ok { "PASS" } else { "FAIL" });
    Ok(ok)
}
