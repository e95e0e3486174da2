//! vnic-client: a vNIC client in its own process. It logs in over the control socket, attaches,
//! joins vnicd's hugepage memory as a DPDK secondary process and works on the very mbufs the VF
//! filled (zero copy): `reflect` sends every frame back to its sender, `sink` counts and frees,
//! `source` generates frames at a rate, `dump` prints the first frames with their mbuf address.
#![forbid(unsafe_code)]
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vnic_control::client::{Client, Push};
use vnic_dataplane::{eal, Burst, Eal, Mempool, Ring};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Send every frame addressed to us back: destination <- source, source <- our MAC
    /// (others, such as broadcasts, are not answered).
    Reflect,
    /// Count and free.
    Sink,
    /// Generate frames at --rate packets per second.
    Source,
    /// Print the first --count frames (mbuf address, length, sequence number) and exit.
    Dump,
}

/// A vNIC client process (DPDK secondary of vnicd).
#[derive(Debug, Parser)]
#[command(name = "vnic-client", version)]
struct Args {
    mode: Mode,
    /// vNIC to attach.
    #[arg(long)]
    vnic: String,
    /// vnicd control socket.
    #[arg(long, default_value = "/run/vnicd/control.sock")]
    socket: PathBuf,
    /// Queues (default 1).
    #[arg(long, default_value_t = 1)]
    queues: u32,
    /// Ring depth (default: the vNIC's maximum).
    #[arg(long)]
    depth: Option<u32>,
    /// MTU (default: the vNIC's maximum).
    #[arg(long)]
    mtu: Option<u32>,
    /// Re-attach token from an earlier session.
    #[arg(long)]
    token: Option<String>,
    /// CPU to run on.
    #[arg(long, default_value_t = 0)]
    cpu: u32,
    /// source: packets per second.
    #[arg(long, default_value_t = 1_000_000)]
    rate: u64,
    /// source: frame length.
    #[arg(long, default_value_t = 64)]
    len: usize,
    /// dump: frames to print.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// No per-second lines.
    #[arg(long)]
    quiet: bool,
    /// source: carry a TSC timestamp in every frame and report the round-trip latency of those
    /// that come back (p50/p90/p99/p99.9/max, µs).
    #[arg(long)]
    latency: bool,
    /// When vnicd moves the vNIC to another appliance: run this shell command to start the
    /// successor there (`$VNIC`, `$VNIC_SOCKET`, `$VNIC_TOKEN` are set; e.g. `ssh hostB
    /// vnic-client reflect --vnic $VNIC --socket $VNIC_SOCKET --token $VNIC_TOKEN`). Default:
    /// start this program again here with the new socket and the token (appliances on one host).
    #[arg(long)]
    on_migrate: Option<String>,
    /// Started by a predecessor for a moving vNIC (closes what it inherited).
    #[arg(long, hide = true)]
    successor: bool,
}

/// A successor starts clean: it closes every descriptor it inherited. DPDK's in its predecessor
/// are not close-on-exec (a net_tap port's queue descriptors, which a secondary process holds
/// copies of, among them); kept, they would hold the source's tap queues attached after the
/// source released them, and the kernel would steer frames into a queue nobody reads when that
/// port is opened again.
fn close_inherited() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        let _ = nix::unistd::close(fd);
    }
}

/// Start the successor that attaches on the destination, resumed with the token. This process
/// keeps serving here until vnicd says the vNIC has moved (make-before-break).
fn start_successor(a: &Args, socket: &str, token: &str) -> std::io::Result<std::process::Child> {
    if let Some(cmd) = &a.on_migrate {
        return std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(cmd)
            .env("VNIC", &a.vnic)
            .env("VNIC_SOCKET", socket)
            .env("VNIC_TOKEN", token)
            .spawn();
    }
    // The same command line, on the new socket, with the token.
    let mut args: Vec<String> = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--socket" | "--token" => {
                it.next();
            }
            "--successor" => {}
            s if s.starts_with("--socket=") || s.starts_with("--token=") => {}
            _ => args.push(x),
        }
    }
    args.extend([
        "--socket".into(),
        socket.into(),
        "--token".into(),
        token.into(),
        "--successor".into(),
    ]);
    std::process::Command::new(std::env::current_exe()?)
        .args(args)
        .spawn()
}

fn main() -> ExitCode {
    if let Some(code) = vnic_cliassets::generate::<Args>("vnic-client") {
        return code;
    }
    let args = Args::parse();
    if args.successor {
        close_inherited();
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vnic-client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn mac_bytes(s: &str) -> Result<[u8; 6], String> {
    let v: Vec<u8> = s
        .split(':')
        .filter_map(|p| u8::from_str_radix(p, 16).ok())
        .collect();
    v.try_into()
        .map_err(|_| format!("bad MAC {s:?} from vnicd"))
}

fn run(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let mut c = Client::connect(&a.socket)?;
    let w = c.hello(&a.vnic, a.token.as_deref())?;
    let hb = Duration::from_millis(w.heartbeat_ms / 3).max(Duration::from_millis(5));
    // Join vnicd's shared memory before attaching: once attached, this process serves at once
    // (the successor of a moving vNIC is ready when the move cuts over).
    let (Some(prefix), Some(lcore)) = (w.file_prefix.clone(), w.client_lcore) else {
        return Err("vnicd shares no memory (eal.file_prefix is unset in its config): a separate-process client cannot attach; set eal.file_prefix and use hugepages".into());
    };
    let eal_args: Vec<String> = [
        "vnic-client".to_string(),
        "--proc-type=secondary".into(),
        "--file-prefix".into(),
        prefix.clone(),
        "--lcores".into(),
        format!("{lcore}@{}", a.cpu),
        "--no-pci".into(),
        "--no-telemetry".into(),
        "--log-level=4".into(),
    ]
    .into();
    let _eal = Eal::init(&eal_args)?;
    // Its idle sleeps are frames' latency: without this Linux stretches each by up to 50 µs.
    if let Err(e) = nix::sys::prctl::set_timerslack(1) {
        eprintln!("vnic-client: PR_SET_TIMERSLACK: {e} (idle sleeps keep the default slack)");
    }
    let caps = c.caps()?;
    let depth = a.depth.unwrap_or(caps.max_depth);
    let mtu = a.mtu.unwrap_or(caps.max_mtu);
    let g = c.attach(a.queues, depth, mtu, false)?;
    if g.file_prefix.as_deref() != Some(prefix.as_str()) || g.client_lcore != lcore {
        let _ = c.detach();
        return Err("vnicd's ATTACHED names other shared memory or lcore than its WELCOME".into());
    }
    let pool = Mempool::lookup(&g.mempool)
        .map_err(|e| format!("{e} (vnicd's shared memory {prefix:?})"))?;
    let mut queues = Vec::new();
    for q in &g.rings {
        let look = |n: &str| {
            Ring::lookup(n).map_err(|e| format!("{e} (vnicd's shared memory {prefix:?})"))
        };
        queues.push((look(&q.rx)?, look(&q.tx)?));
    }
    let mac = mac_bytes(&g.mac)?;
    eprintln!(
        "vnic-client: {} attached (epoch {}, {} queues, depth {}, mac {}, token {}), mode {:?}, lcore {lcore} on cpu {}",
        a.vnic,
        c.epoch,
        queues.len(),
        depth,
        g.mac,
        g.token,
        a.mode,
        a.cpu
    );
    println!("token {}", g.token);

    let (mut rx_n, mut tx_n, mut drops) = (0u64, 0u64, 0u64);
    let (mut last_rx, mut last_tx) = (0u64, 0u64);
    let t0 = Instant::now();
    let mut next_hb = Instant::now() + hb;
    let mut next_push = Instant::now();
    let mut next_line = Instant::now() + Duration::from_secs(1);
    let mut b = Burst::default();
    let hz = eal::tsc_hz().max(1) as f64;
    let tsc0 = eal::rdtsc();
    let mut seq = 0u64;
    let mut template = vec![0u8; a.len.max(60)];
    template[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xee]);
    template[6..12].copy_from_slice(&mac);
    template[12..14].copy_from_slice(&[0x88, 0xb5]);
    let mut idle = 0u32;
    let mut lat = hdrhistogram::Histogram::<u64>::new(3)?;
    if a.latency && template.len() < 26 {
        return Err("--latency needs frames of at least 26 bytes".into());
    }
    'run: while !stop.load(Ordering::Relaxed) {
        let mut work = 0;
        for (rx, tx) in &queues {
            match a.mode {
                Mode::Reflect => {
                    let n = rx.forward_to(tx, |d| {
                        if d.len() < 12 {
                        } else if d[0..6] == mac {
                            d.copy_within(6..12, 0);
                            d[6..12].copy_from_slice(&mac);
                        } else {
                            // Not addressed to us (a broadcast, another vNIC's announcement):
                            // not answered, or two reflectors would bounce it between them for
                            // ever. The in-place move cannot drop a frame and stay crash-safe, so
                            // it goes to our own address, which a switch drops at the port it
                            // came in on.
                            d[0..6].copy_from_slice(&mac);
                            d[6..12].copy_from_slice(&mac);
                        }
                    });
                    rx_n += n as u64;
                    tx_n += n as u64;
                    work += n;
                }
                Mode::Sink => {
                    let n = rx.dequeue(&mut b);
                    rx_n += n as u64;
                    work += n;
                    drop(b.drain());
                }
                Mode::Dump => {
                    if rx.dequeue(&mut b) > 0 {
                        for m in b.drain() {
                            let d = m.data();
                            let s = if d.len() >= 18 {
                                u32::from_be_bytes([d[14], d[15], d[16], d[17]])
                            } else {
                                0
                            };
                            println!("frame mbuf=0x{:x} len={} seq={s}", m.addr(), m.len());
                            rx_n += 1;
                            if rx_n >= a.count {
                                break 'run;
                            }
                        }
                        work += 1;
                    }
                }
                Mode::Source => {
                    // Credit-based pacing from the TSC: no sleeping in the send path.
                    let due = ((eal::rdtsc() - tsc0) as f64 / hz * a.rate as f64) as u64;
                    let n = due.saturating_sub(seq).min(vnic_dataplane::BURST as u64);
                    for _ in 0..n {
                        template[14..18].copy_from_slice(&(seq as u32).to_be_bytes());
                        if a.latency {
                            template[18..26].copy_from_slice(&eal::rdtsc().to_le_bytes());
                        }
                        seq += 1;
                        match pool.alloc_with(&template) {
                            Some(m) => match tx.enqueue_one(m) {
                                Ok(()) => tx_n += 1,
                                Err(_) => drops += 1,
                            },
                            None => drops += 1,
                        }
                    }
                    // Anything coming back is counted (and timed) and freed.
                    let k = rx.dequeue(&mut b);
                    rx_n += k as u64;
                    if a.latency && k > 0 {
                        let now = eal::rdtsc();
                        for m in b.drain() {
                            let d = m.data();
                            if d.len() >= 26 && d[12..14] == [0x88, 0xb5] {
                                let sent =
                                    u64::from_le_bytes(d[18..26].try_into().unwrap_or([0; 8]));
                                let ns = now.saturating_sub(sent) as f64 / hz * 1e9;
                                let _ = lat.record(ns as u64);
                            }
                        }
                    }
                    drop(b.drain());
                    work += n as usize + k;
                }
            }
        }
        if work == 0 {
            // Share the CPU when there is nothing to do: yield at the second empty loop (a data
            // core on the same CPU forwards what this client just sent at once; after 64 empty
            // loops, as before, a frame waited ~5 µs more per hop), sleep only after a long
            // quiet spell. Alone on its CPU a yield returns at once.
            idle += 1;
            if idle > 100_000 {
                std::thread::sleep(Duration::from_micros(50));
            } else if idle > 1 {
                std::thread::yield_now();
            }
        } else {
            idle = 0;
        }
        let now = Instant::now();
        if now >= next_push {
            // Pushes are read often: after a move's cutover these rings are gone.
            next_push = now + Duration::from_millis(1);
            if now >= next_hb {
                next_hb = now + hb;
                c.heartbeat()?;
            }
            for p in c.pushes() {
                let why = match &p {
                    Push::Migrate(m) => {
                        match start_successor(a, &m.control_socket, &m.token) {
                            Ok(child) => eprintln!(
                                "vnic-client: {} moves to {}: successor pid {} started, serving here until the cutover",
                                a.vnic,
                                m.control_socket,
                                child.id()
                            ),
                            Err(e) => eprintln!(
                                "vnic-client: {} moves to {}, but the successor did not start: {e}",
                                a.vnic, m.control_socket
                            ),
                        }
                        continue;
                    }
                    Push::Detached(d)
                        if d.reason
                            .as_deref()
                            .is_some_and(|r| r.starts_with("migrated")) =>
                    {
                        eprintln!(
                            "vnic-client: {} {}; rx {rx_n} tx {tx_n} drops {drops} here",
                            a.vnic,
                            d.reason.as_deref().unwrap_or_default()
                        );
                        return Ok(());
                    }
                    Push::Detached(d) => d.reason.clone().unwrap_or_else(|| "?".into()),
                    Push::Error(e) => e.message.clone(),
                    Push::Link(l) => {
                        eprintln!("vnic-client: link {l:?}");
                        continue;
                    }
                    _ => continue,
                };
                eprintln!("vnic-client: vnicd ended the session: {p:?}");
                return Err(format!("session ended by vnicd: {why}").into());
            }
        }
        if now >= next_line {
            next_line += Duration::from_secs(1);
            if !a.quiet {
                eprintln!(
                    "[{:>5.1}s] rx {:.3} Mpps tx {:.3} Mpps (total rx {rx_n} tx {tx_n} drops {drops})",
                    t0.elapsed().as_secs_f64(),
                    (rx_n - last_rx) as f64 / 1e6,
                    (tx_n - last_tx) as f64 / 1e6
                );
            }
            last_rx = rx_n;
            last_tx = tx_n;
        }
        if a.duration.is_some_and(|d| t0.elapsed().as_secs_f64() >= d) {
            break;
        }
    }
    if a.mode == Mode::Source {
        // Stop sending, then give frames still in flight time to come back, so that what is
        // counted as lost was really lost.
        let end = Instant::now() + Duration::from_millis(300);
        while Instant::now() < end {
            for (rx, _) in &queues {
                rx_n += rx.dequeue(&mut b) as u64;
                drop(b.drain());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let d = c.detach()?;
    if a.latency && !lat.is_empty() {
        // One machine-readable line for harnesses, on stdout.
        println!(
            "latency_us samples={} p50={:.1} p90={:.1} p99={:.1} p99.9={:.1} max={:.1}",
            lat.len(),
            lat.value_at_quantile(0.5) as f64 / 1e3,
            lat.value_at_quantile(0.9) as f64 / 1e3,
            lat.value_at_quantile(0.99) as f64 / 1e3,
            lat.value_at_quantile(0.999) as f64 / 1e3,
            lat.max() as f64 / 1e3
        );
    }
    eprintln!(
        "vnic-client: detached ({} mbufs drained by vnicd); rx {rx_n} tx {tx_n} drops {drops} in {:.1} s",
        d.drained.unwrap_or(0),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
