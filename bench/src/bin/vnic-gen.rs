//! `vnic-gen`: a paced traffic generator and receiver for the benchmark harness (testpmd has no
//! software pacing, so an RFC 2544 search needs one of its own).
//!
//! It is a DPDK primary with one port per `--port` devargs (memif servers in the harness), pinned
//! to one CPU. Each frame carries a trial id and the TSC at the moment its burst was sent; frames
//! coming back are counted only when they belong to the running trial, so stragglers of an earlier
//! trial never count as received. Commands arrive as JSON lines on stdin, results leave as JSON
//! lines on stdout:
//!
//! - `{"op":"trial","id":N,"rate":FPS,"seconds":S,"warmup":W,"sizes":[64],"latency":true}`:
//!   send at `rate` frames/s in total (0 = as fast as possible, for MRR) for `warmup` seconds
//!   (not counted), then for `seconds` (counted), then wait for frames in flight. Reply:
//!   offered (send attempts), refused (by the device: the DUT's back-pressure), sent (what the
//!   device took), received, lost, loss ratio, achieved rates, the host's mode (a calibration
//!   run just before the trial and the CPU time the hypervisor stole during it) and, with
//!   `latency`, the round-trip percentiles and a CDF.
//! - `{"op":"quit"}` (or end of input, or SIGINT): stop the ports and exit.
//!
//! It prints `{"listening":true}` once its ports are started (peers may dial) and
//! `{"ready":true,…}` once every link is up.
//!
//! Frame lengths follow testpmd's `txpkts` convention (the bytes in the mbuf, no FCS).
use clap::Parser;
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vnic_bench::gen::HostProbe;
use vnic_dataplane::eal::{self, Eal, EalOptions, Memory};
use vnic_dataplane::{Burst, Mempool, Port, PortConfig, RxQueue, TxQueue, BURST};

#[derive(Debug, Parser)]
#[command(about = "Paced traffic generator/receiver with per-frame timestamps (vnic-bench's peer)")]
struct Args {
    /// CPU to run on (the process is one pinned polling thread).
    #[arg(long, default_value_t = 0)]
    cpu: u32,
    /// A port's devargs (repeat for more ports), e.g. `net_memif0,role=server,socket=/tmp/a.sock`.
    #[arg(long = "port", required = true)]
    ports: Vec<String>,
    /// Queues per port (all polled for rx; tx on queue 0). OVS needs 2 on a memif server.
    #[arg(long, default_value_t = 1)]
    queues: u16,
    /// Run without hugepages (`--no-huge`).
    #[arg(long)]
    no_huge: bool,
    /// Seconds to wait for every link to come up.
    #[arg(long, default_value_t = 30.0)]
    link_timeout: f64,
    /// Destination MAC of port N's frames, in port order (default 02:00:00:00:00:0N+1).
    #[arg(long = "dst", value_parser = parse_mac)]
    dst: Vec<[u8; 6]>,
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let v: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{s:?} is not a MAC address"))?;
    v.try_into()
        .map_err(|_| format!("{s:?} is not a MAC address"))
}

const MAGIC: [u8; 4] = *b"VGEN";
/// Header bytes the generator writes: Ethernet (14), magic (4), trial id (4), TSC (8).
const HDR: usize = 30;
/// The most frames a port may fall behind its schedule before the backlog is dropped (a real
/// tester does not burst to catch up after a stall; it reports that it could not keep the rate).
const MAX_BACKLOG: u64 = 8 * BURST as u64;

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Cmd {
    Trial {
        id: u32,
        rate: u64,
        seconds: f64,
        #[serde(default)]
        warmup: f64,
        sizes: Vec<u16>,
        #[serde(default)]
        latency: bool,
    },
    Quit,
}

#[derive(Debug, Serialize, Default)]
struct Latency {
    samples: u64,
    min_us: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p99_9_us: f64,
    max_us: f64,
    /// (quantile, µs) pairs for a CDF plot.
    cdf: Vec<(f64, f64)>,
}

/// One port's share of a trial (streams to different destinations are told apart).
#[derive(Debug, Serialize, Default, Clone)]
struct PortResult {
    offered: u64,
    received: u64,
    lost: u64,
    /// Longest time between two frames of the trial coming back on this port (the outage a
    /// move or a failover caused), µs.
    max_gap_us: f64,
}

#[derive(Debug, Serialize, Default)]
struct TrialResult {
    id: u32,
    rate: u64,
    seconds: f64,
    /// Send attempts (frames built and handed to the port).
    offered: u64,
    /// Frames of the schedule skipped when the generator fell too far behind (its CPU stalled).
    skipped: u64,
    /// Attempts the port refused (its ring full: the DUT's back-pressure).
    refused: u64,
    /// Frames the port took: `offered - refused`, what really went to the DUT.
    sent: u64,
    received: u64,
    /// `offered - received`: refused plus lost in the DUT.
    lost: u64,
    /// `sent - received`: frames the DUT took and never returned.
    dut_lost: u64,
    loss_ratio: f64,
    tx_fps: f64,
    sent_fps: f64,
    rx_fps: f64,
    /// The generator could not keep the offered rate (its own CPU was short).
    gen_limited: bool,
    latency: Option<Latency>,
    /// Per port, in `--port` order.
    ports: Vec<PortResult>,
    host: HostProbe,
    error: Option<String>,
}

fn main() -> ExitCode {
    let a = Args::parse();
    match run(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vnic-gen: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Gen {
    ports: Vec<Port>,
    rxq: Vec<RxQueue>,
    txq: Vec<TxQueue>,
    pool: Mempool,
    hz: f64,
    stop: Arc<AtomicBool>,
    /// The port each rx queue belongs to.
    rx_port: Vec<usize>,
    dst: Vec<[u8; 6]>,
    /// Buffers of the host probe's copy (allocated once).
    copy: (Vec<u8>, Vec<u8>),
}

/// Bytes of the host probe's copy buffers: beyond L2, within a typical L3.
const COPY_BYTES: usize = 4 << 20;

/// Time the host-probe calibration: a dependent chain (core speed) and a buffer copy (memory).
fn probe(copy: &mut (Vec<u8>, Vec<u8>)) -> (f64, f64) {
    const STEPS: u64 = 1 << 20;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let t = Instant::now();
    for i in 0..STEPS {
        x = std::hint::black_box(x.wrapping_mul(0x5851_f42d_4c95_7f2d).wrapping_add(i) ^ (x >> 29));
    }
    let chain_ns = t.elapsed().as_nanos() as f64 / STEPS as f64;
    std::hint::black_box(x);
    let (src, dst) = copy;
    // Once untimed so both buffers are faulted in and warm.
    dst.copy_from_slice(src);
    let t = Instant::now();
    for i in 0..4u8 {
        src[0] = i;
        dst.copy_from_slice(std::hint::black_box(&src[..]));
    }
    let copy_gbps = 4.0 * COPY_BYTES as f64 / t.elapsed().as_nanos().max(1) as f64;
    std::hint::black_box(&dst[0]);
    (chain_ns, copy_gbps)
}

/// (steal, total) ticks summed over all CPUs, from `/proc/stat`'s `cpu` line.
fn cpu_ticks() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    Some((*v.get(7)?, v.iter().take(8).sum()))
}

fn run(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    if a.queues == 0 || a.queues > 8 {
        return Err(format!("--queues {}: must be 1..=8", a.queues).into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    // A vhost-user backend maps at most 8 memory regions: one file for all of our memory, not
    // one per hugepage.
    let virtio = a.ports.iter().any(|p| p.starts_with("net_virtio_user"));
    let opts = EalOptions {
        program: "vnic-gen".into(),
        extra: if virtio && !a.no_huge {
            vec!["--single-file-segments".into()]
        } else {
            vec![]
        },
        cores: vec![a.cpu],
        main_core: a.cpu,
        memory_mb: 256,
        memory: if a.no_huge {
            Memory::NoHuge
        } else {
            Memory::HugeInMemory
        },
        log_level: 4,
        ..Default::default()
    };
    let _eal = Eal::init(&eal::eal_args(&opts))?;
    let pool = Mempool::new(
        "vnic_gen_pool",
        16383,
        256,
        2048 + 128,
        vnic_dataplane::socket_id(),
    )?;
    let mut g = Gen {
        ports: Vec::new(),
        rxq: Vec::new(),
        txq: Vec::new(),
        pool,
        hz: eal::tsc_hz().max(1) as f64,
        stop,
        rx_port: Vec::new(),
        dst: (0..a.ports.len())
            .map(|p| {
                a.dst
                    .get(p)
                    .copied()
                    .unwrap_or([0x02, 0, 0, 0, 0, p as u8 + 1])
            })
            .collect(),
        copy: (vec![1u8; COPY_BYTES], vec![0u8; COPY_BYTES]),
    };
    if !a.dst.is_empty() && a.dst.len() != a.ports.len() {
        return Err(format!(
            "--dst given {} times for {} ports: give one per port or none",
            a.dst.len(),
            a.ports.len()
        )
        .into());
    }
    for d in &a.ports {
        let mut p = Port::open(d)?;
        // --queues is for memif ports (OVS wants two); a virtio-user port has the queue pairs its
        // devargs say (one: more would need a control queue).
        let queues = if d.starts_with("net_virtio_user") {
            1
        } else {
            a.queues
        };
        p.configure(
            &PortConfig {
                queues,
                rx_desc: 1024,
                tx_desc: 1024,
                mtu: None,
                promiscuous: true,
            },
            &g.pool,
        )?;
        p.start()?;
        for q in 0..queues {
            if let Some(r) = p.rx_queue(q) {
                g.rxq.push(r);
                g.rx_port.push(g.ports.len());
            }
        }
        g.txq.extend(p.tx_queue(0));
        g.ports.push(p);
    }
    let result = serve(&mut g, a);
    // Frames still in the rx queues go back to the pool before the leak check.
    for p in &mut g.ports {
        let _ = p.stop();
    }
    g.ports.clear();
    if !g.pool.is_full() {
        eprintln!(
            "vnic-gen: {} mbufs not back in the pool at exit",
            g.pool.in_use()
        );
    }
    result
}

fn serve(g: &mut Gen, a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    // memif sockets are abstract by default (no file to watch): say when the servers listen.
    println!(r#"{{"listening":true}}"#);
    let end = Instant::now() + Duration::from_secs_f64(a.link_timeout);
    loop {
        let down: Vec<&str> = g
            .ports
            .iter()
            .filter(|p| !p.link().map(|l| l.up).unwrap_or(false))
            .map(|p| p.devargs())
            .collect();
        if down.is_empty() {
            break;
        }
        if Instant::now() > end || g.stop.load(Ordering::Relaxed) {
            return Err(
                format!("link down after {} s: {}", a.link_timeout, down.join(", ")).into(),
            );
        }
        discard(g);
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(r#"{{"ready":true,"ports":{}}}"#, g.ports.len());
    // Commands are read on their own thread so the polling thread never blocks on stdin.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    loop {
        if g.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let line = match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(l) => l,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // Between trials, keep the rx queues empty so the next trial starts clean.
                discard(g);
                continue;
            }
            Err(_) => return Ok(()),
        };
        if line.trim().is_empty() {
            continue;
        }
        let r = match serde_json::from_str::<Cmd>(&line) {
            Ok(Cmd::Quit) => return Ok(()),
            Ok(Cmd::Trial {
                id,
                rate,
                seconds,
                warmup,
                sizes,
                latency,
            }) => {
                if id == 0 || sizes.is_empty() || seconds.is_nan() || seconds <= 0.0 || warmup < 0.0
                {
                    TrialResult {
                        error: Some(
                            "trial: id must be > 0, sizes non-empty, seconds > 0, warmup >= 0"
                                .into(),
                        ),
                        ..Default::default()
                    }
                } else if let Some(s) = sizes.iter().find(|&&s| !(60..=2048).contains(&s)) {
                    TrialResult {
                        error: Some(format!("trial: size {s} outside 60..=2048")),
                        ..Default::default()
                    }
                } else {
                    trial(g, id, rate, seconds, warmup, &sizes, latency)?
                }
            }
            Err(e) => TrialResult {
                error: Some(format!("bad command {line:?}: {e}")),
                ..Default::default()
            },
        };
        println!("{}", serde_json::to_string(&r)?);
    }
}

/// Receive and free whatever is waiting.
fn discard(g: &Gen) {
    let mut b = Burst::default();
    for q in &g.rxq {
        while q.rx_burst(&mut b) > 0 {
            b.free_all();
        }
    }
}

struct Counts {
    offered: u64,
    refused: u64,
    received: u64,
    behind: u64,
    /// Per port: offered, received, TSC of the last frame back, longest gap (TSC ticks).
    port: Vec<(u64, u64, u64, u64)>,
}

/// Send at `rate` for `dur` with trial id `id` (0 = warm-up, never counted), receiving all the
/// while; frames of `count_id` are counted (and timed into `lat`).
#[allow(clippy::too_many_arguments)]
fn phase(
    g: &Gen,
    id: u32,
    count_id: u32,
    rate: u64,
    dur: f64,
    sizes: &[u16],
    lat: &mut Option<hdrhistogram::Histogram<u64>>,
    c: &mut Counts,
) {
    let np = g.txq.len() as u64;
    let per_port = rate as f64 / np as f64;
    let t0 = eal::rdtsc();
    let end = t0 + (dur * g.hz) as u64;
    let mut sent = vec![0u64; g.txq.len()];
    let mut size_i = vec![0usize; g.txq.len()];
    let mut b = Burst::default();
    let ns_per_tick = 1e9 / g.hz;
    let mut iter = 0u32;
    loop {
        let now = eal::rdtsc();
        if now >= end {
            break;
        }
        iter = iter.wrapping_add(1);
        if iter.is_multiple_of(4096) && g.stop.load(Ordering::Relaxed) {
            break;
        }
        let due = if rate == 0 {
            u64::MAX
        } else {
            ((now - t0) as f64 / g.hz * per_port) as u64
        };
        for (p, q) in g.txq.iter().enumerate() {
            let mut want = due.saturating_sub(sent[p]);
            if rate != 0 && want > MAX_BACKLOG {
                c.behind += want - BURST as u64;
                sent[p] += want - BURST as u64;
                want = BURST as u64;
            }
            let n = want.min(BURST as u64) as usize;
            if n == 0 {
                continue;
            }
            let mac_last = p as u8 + 1;
            let dst = g.dst[p];
            let tsc = eal::rdtsc().to_le_bytes();
            let got = g.pool.alloc_burst(&mut b, n, |_, m| {
                let len = sizes[size_i[p] % sizes.len()];
                size_i[p] += 1;
                if let Some(d) = m.extend(len) {
                    d[0..6].copy_from_slice(&dst);
                    d[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0x10, mac_last]);
                    d[12..14].copy_from_slice(&[0x88, 0xb5]);
                    d[14..18].copy_from_slice(&MAGIC);
                    d[18..22].copy_from_slice(&id.to_le_bytes());
                    d[22..HDR].copy_from_slice(&tsc);
                }
            });
            if got == 0 {
                // Pool empty: frames are stuck somewhere; try again next turn.
                continue;
            }
            let (_, dropped) = q.tx_burst(&mut b);
            sent[p] += got as u64;
            if id == count_id {
                c.offered += got as u64;
                c.refused += dropped as u64;
                c.port[p].0 += got as u64;
            }
        }
        receive(g, count_id, lat, c, ns_per_tick, &mut b);
    }
}

/// One pass over every rx queue.
#[inline(always)]
fn receive(
    g: &Gen,
    count_id: u32,
    lat: &mut Option<hdrhistogram::Histogram<u64>>,
    c: &mut Counts,
    ns_per_tick: f64,
    b: &mut Burst,
) -> usize {
    let mut total = 0;
    for (qi, q) in g.rxq.iter().enumerate() {
        if q.rx_burst(b) == 0 {
            continue;
        }
        let now = eal::rdtsc();
        let p = g.rx_port[qi];
        b.for_each_data(|d| {
            if d.len() >= HDR
                && d[14..18] == MAGIC
                && u32::from_le_bytes([d[18], d[19], d[20], d[21]]) == count_id
            {
                c.received += 1;
                let pc = &mut c.port[p];
                pc.1 += 1;
                if pc.2 != 0 {
                    pc.3 = pc.3.max(now.saturating_sub(pc.2));
                }
                pc.2 = now;
                if let Some(h) = lat.as_mut() {
                    let t = u64::from_le_bytes(d[22..HDR].try_into().unwrap_or([0; 8]));
                    let _ = h.record((now.saturating_sub(t) as f64 * ns_per_tick) as u64);
                }
            }
        });
        total += b.free_all();
    }
    total
}

fn trial(
    g: &mut Gen,
    id: u32,
    rate: u64,
    seconds: f64,
    warmup: f64,
    sizes: &[u16],
    latency: bool,
) -> Result<TrialResult, Box<dyn std::error::Error>> {
    let mut lat = if latency {
        Some(hdrhistogram::Histogram::<u64>::new_with_bounds(
            1,
            10_000_000_000,
            3,
        )?)
    } else {
        None
    };
    let mut c = Counts {
        offered: 0,
        refused: 0,
        received: 0,
        behind: 0,
        port: vec![(0, 0, 0, 0); g.txq.len()],
    };
    discard(g);
    // Before the warm-up: the DUT is idle then, so the probe measures the host, not the load.
    let (chain_ns, copy_gbps) = probe(&mut g.copy);
    let g: &Gen = g;
    if warmup > 0.0 {
        phase(g, 0, id, rate, warmup, sizes, &mut None, &mut c);
        c.behind = 0;
        c.port.iter_mut().for_each(|p| *p = (0, 0, 0, 0));
    }
    let ticks0 = cpu_ticks();
    let t = Instant::now();
    phase(g, id, id, rate, seconds, sizes, &mut lat, &mut c);
    let elapsed = t.elapsed().as_secs_f64();
    let steal_share = match (ticks0, cpu_ticks()) {
        (Some((s0, t0)), Some((s1, t1))) if t1 > t0 => (s1 - s0) as f64 / (t1 - t0) as f64,
        _ => 0.0,
    };
    // Frames in flight: wait until none of this trial has come back for 50 ms (at most 1 s).
    let mut b = Burst::default();
    let ns_per_tick = 1e9 / g.hz;
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline && quiet_since.elapsed() < Duration::from_millis(50) {
        let before = c.received;
        receive(g, id, &mut lat, &mut c, ns_per_tick, &mut b);
        if c.received != before {
            quiet_since = Instant::now();
        }
    }
    if c.received > c.offered {
        return Ok(TrialResult {
            id,
            error: Some(format!(
                "received {} frames of trial {id} but sent {}: the peer duplicates frames (a memif server with more queues than its client does)",
                c.received, c.offered
            )),
            ..Default::default()
        });
    }
    let lost = c.offered - c.received;
    let sent = c.offered - c.refused;
    let latency = lat.filter(|h| !h.is_empty()).map(|h| {
        let us = |v: u64| v as f64 / 1e3;
        let mut cdf: Vec<(f64, f64)> = (0..100)
            .map(|i| i as f64 / 100.0)
            .chain([0.995, 0.999, 0.9995, 0.9999, 1.0])
            .map(|q| (q, us(h.value_at_quantile(q))))
            .collect();
        cdf.dedup_by(|a, b| a == b);
        Latency {
            samples: h.len(),
            min_us: us(h.min()),
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            p99_9_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            cdf,
        }
    });
    Ok(TrialResult {
        id,
        rate,
        seconds: elapsed,
        offered: c.offered,
        skipped: c.behind,
        refused: c.refused,
        sent,
        received: c.received,
        lost,
        dut_lost: sent.saturating_sub(c.received),
        loss_ratio: if c.offered > 0 {
            lost as f64 / c.offered as f64
        } else {
            0.0
        },
        tx_fps: c.offered as f64 / elapsed,
        sent_fps: sent as f64 / elapsed,
        rx_fps: c.received as f64 / elapsed,
        gen_limited: rate > 0
            && (c.behind > 0 || (c.offered as f64) < 0.99 * rate as f64 * elapsed),
        latency,
        ports: c
            .port
            .iter()
            .map(|&(offered, received, _, gap)| PortResult {
                offered,
                received,
                lost: offered.saturating_sub(received),
                max_gap_us: gap as f64 / g.hz * 1e6,
            })
            .collect(),
        host: HostProbe {
            chain_ns,
            copy_gbps,
            steal_share,
        },
        error: None,
    })
}
