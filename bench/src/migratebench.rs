//! `migrate` scenario: a shm vNIC moved back and forth between two vnicd appliances on one
//! machine while a peer on the bridge streams to it (and to a bystander vNIC on each appliance):
//! per move the frames lost and the longest gap at the peer, and the time of each phase from
//! the source's record. The rig is `vnic_bench::mobility` (a Linux bridge, `net_af_packet` VFs,
//! the peer `vnic-gen` in a network namespace).
use serde::Serialize;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use vnic_bench::mobility::{attached, pair, vnicctl, Net, ShmScene};
use vnic_bench::vnicd::{self, Output, Res};

/// One move.
#[derive(Debug, Clone, Serialize)]
pub struct Move {
    /// "a->b" or "b->a".
    pub direction: String,
    /// Frames of the moving vNIC's stream that did not come back.
    pub lost: u64,
    /// Longest time between two frames of its stream coming back (the outage), ms.
    pub gap_ms: f64,
    /// The same for the bystanders (host noise), ms; and their lost frames (must be 0).
    pub bystander_gap_ms: f64,
    pub bystander_lost: u64,
    /// Source's phases: prepare → client-moving (B built it), → cutover (the client arrived),
    /// the cutover itself (A stopped → B forwards), all in ms.
    pub prepare_ms: f64,
    pub client_ms: f64,
    pub cutover_ms: f64,
    pub total_ms: f64,
}

/// The scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct MigrateResult {
    /// Live migrations of a QEMU guest (vhost-user), pinged every 10 ms.
    pub vm: Vec<VmMove>,
    /// Frames/s per stream asked for, and used: the highest rate up to it that every stream
    /// carried without loss with nothing moving.
    pub rate_asked: u64,
    pub rate_per_stream: u64,
    pub moves: Vec<Move>,
    /// The generator could not keep the rate in some trial.
    pub gen_limited: bool,
}

fn phase_us(m: &Value, phase: &str) -> f64 {
    m["phases"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["phase"] == phase))
        .and_then(|p| p["after_us"].as_f64())
        .unwrap_or(f64::NAN)
}

/// `moves` moves of one shm vNIC, streams of `rate` frames/s each.
pub fn run(vnicd_bin: &Path, dir: &Path, moves: usize, rate: u64) -> Res<MigrateResult> {
    let rate_asked = rate;
    let id = 5000 + std::process::id() % 5000;
    let ShmScene {
        net: _net,
        mut a,
        mut b,
        mut gen,
        mut clients,
    } = ShmScene::start(vnicd_bin, dir, id, 30_000, &[], Output::Drop)?;
    // The highest rate up to `rate` this host carries without loss on every stream with nothing
    // moving (the moves' losses must be theirs, not the host's).
    let mut rate = rate;
    loop {
        let t = gen.trial(rate * 3, 1.0, 0.2, &[64], false)?;
        if (t.lost == 0 && !t.gen_limited) || rate <= 1000 {
            break;
        }
        rate /= 2;
    }
    let (adm_a, adm_b) = (a.adm(), b.adm());
    let mut out = Vec::new();
    let mut gen_limited = false;
    for k in 0..moves {
        crate::check_stop()?;
        let (from, to, dir_name) = if k % 2 == 0 {
            (&adm_a, &adm_b, "a->b")
        } else {
            (&adm_b, &adm_a, "b->a")
        };
        let (res, moved) = std::thread::scope(|s| {
            let h = s.spawn(|| {
                gen.trial(rate * 3, 2.0, 0.0, &[64], false)
                    .map_err(|e| e.to_string())
            });
            std::thread::sleep(Duration::from_millis(500));
            let moved = to
                .to_str()
                .ok_or_else(|| "socket path".into())
                .and_then(|t| vnicctl(vnicd_bin, from, &["migrate", "mv0", "--to", t]));
            (h.join(), moved)
        });
        let res = res.map_err(|_| "generator thread panicked")??;
        let (code, text) = moved?;
        if code != 0 {
            return Err(format!("move {k} ({dir_name}): {text}").into());
        }
        let m = vnicd::admin(from, "MIGRATION", json!({"vnic": "mv0"}))?;
        let p = |i: usize| res.ports.get(i).cloned().unwrap_or_default();
        let (mv, ba, bb) = (p(0), p(1), p(2));
        gen_limited |= res.gen_limited;
        out.push(Move {
            direction: dir_name.into(),
            lost: mv.lost,
            gap_ms: mv.max_gap_us / 1e3,
            bystander_gap_ms: ba.max_gap_us.max(bb.max_gap_us) / 1e3,
            bystander_lost: ba.lost + bb.lost,
            prepare_ms: phase_us(&m, "client-moving") / 1e3,
            client_ms: (phase_us(&m, "cutover") - phase_us(&m, "client-moving")) / 1e3,
            cutover_ms: m["cutover_us"].as_f64().unwrap_or(f64::NAN) / 1e3,
            total_ms: phase_us(&m, "done") / 1e3,
        });
        // The successor must be attached where it went before the next move.
        let (there, name) = if k % 2 == 0 {
            (&mut b, "B")
        } else {
            (&mut a, "A")
        };
        there.wait(&format!("mv0 attached on {name}"), |st| attached(st, "mv0"))?;
    }
    gen.quit();
    for c in &mut clients {
        c.stop(Duration::from_secs(2));
    }
    let (la, lb) = (a.finish()?, b.finish()?);
    if la + lb > 0 {
        return Err(format!("mbufs leaked: A {la}, B {lb}").into());
    }
    Ok(MigrateResult {
        vm: Vec::new(),
        rate_asked,
        rate_per_stream: rate,
        moves: out,
        gen_limited,
    })
}

/// One live migration of a QEMU guest on a vhost-user vNIC.
#[derive(Debug, Clone, Serialize)]
pub struct VmMove {
    pub direction: String,
    /// QEMU's own figure.
    pub qemu_downtime_ms: u64,
    /// Pings (every 10 ms from the peer) unanswered, and the longest run of them as time.
    pub lost_pings: u64,
    pub outage_ms: f64,
    pub cutover_ms: f64,
    pub total_ms: f64,
}

const VM_MAC: &str = "02:00:00:00:c0:01";

/// `moves` live migrations of a QEMU guest back and forth, pinged every 10 ms throughout.
pub fn vm(vnicd_bin: &Path, dir: &Path, moves: usize) -> Res<Vec<VmMove>> {
    use vnic_bench::qemu;
    let root = vnicd_bin
        .ancestors()
        .nth(3)
        .ok_or("the repository root (vnicd is in target/release)")?;
    let guest = qemu::guest(root)?;
    let id = std::process::id() % 5000;
    let mut net = Net::new(id)?;
    net.peer_port_ip("p", "10.77.0.1/24")?;
    let sock_a = dir.join("a-vm.vhost").display().to_string();
    let (mut a, mut b) = pair(
        vnicd_bin,
        dir,
        id,
        &mut net,
        json!({"name": "vm", "mac": VM_MAC, "ipv4": ["10.77.0.2"],
               "client": {"transport": "vhost-user", "socket": sock_a}}),
    )?;
    let mons = [dir.join("q0.mon"), dir.join("q1.mon")];
    let mut cur = qemu::start(&guest, &sock_a, &mons[0], VM_MAC, "10.77.0.2/24", None)?;
    cur.wait_ready(Duration::from_secs(180))?;
    a.wait("the guest attached on A", |st| attached(st, "vm"))?;
    let mut out = Vec::new();
    for k in 0..moves {
        crate::check_stop()?;
        let (from, to, dir_name) = if k % 2 == 0 {
            (&mut a, &mut b, "a->b")
        } else {
            (&mut b, &mut a, "b->a")
        };
        let (from_adm, to_adm) = (from.adm(), to.adm());
        let ping = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &net.ns,
                "/bin/busybox",
                "ping",
                "-i",
                "0.01",
                "-w",
                "6",
                "10.77.0.2",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(800));
        let port = 45000 + (id % 500) as u16 * 2 + (k % 2) as u16;
        let (src_mon, dst_mon) = (mons[k % 2].clone(), mons[(k + 1) % 2].clone());
        let (moved, next, downtime) = std::thread::scope(|s| -> Res<_> {
            let mv = s.spawn(|| {
                to_adm
                    .to_str()
                    .ok_or_else(|| "socket path".to_string())
                    .and_then(|t| {
                        vnicctl(vnicd_bin, &from_adm, &["migrate", "vm", "--to", t])
                            .map_err(|e| e.to_string())
                    })
            });
            to.wait("vm incoming", |st| {
                st["vnics"].as_array().is_some_and(|v| {
                    v.iter()
                        .any(|x| x["name"] == "vm" && x["state"] == "incoming")
                })
            })?;
            let sock = to
                .vnic("vm")?
                .and_then(|v| v["client_socket"].as_str().map(str::to_string))
                .ok_or("vm's socket on the destination")?;
            let next = qemu::start(&guest, &sock, &dst_mon, VM_MAC, "10.77.0.2/24", Some(port))?;
            let downtime = qemu::migrate(&src_mon, &dst_mon, port)?;
            let moved = mv.join().map_err(|_| "vnicctl thread panicked")??;
            Ok((moved, next, downtime))
        })?;
        cur.guard.stop(Duration::from_secs(5));
        cur = next;
        let (code, text) = moved;
        if code != 0 {
            return Err(format!("VM move {k} ({dir_name}): {text}").into());
        }
        let o = ping.wait_with_output()?;
        let (sent, got, gap) = qemu::ping_stats(&String::from_utf8_lossy(&o.stdout));
        let m = vnicd::admin(&from_adm, "MIGRATION", json!({"vnic": "vm"}))?;
        out.push(VmMove {
            direction: dir_name.into(),
            qemu_downtime_ms: downtime,
            lost_pings: sent.saturating_sub(got),
            outage_ms: gap as f64 * 10.0,
            cutover_ms: m["cutover_us"].as_f64().unwrap_or(f64::NAN) / 1e3,
            total_ms: phase_us(&m, "done") / 1e3,
        });
    }
    cur.guard.stop(Duration::from_secs(5));
    let (la, lb) = (a.finish()?, b.finish()?);
    if la + lb > 0 {
        return Err(format!("mbufs leaked: A {la}, B {lb}").into());
    }
    Ok(out)
}
