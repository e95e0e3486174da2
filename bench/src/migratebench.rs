//! `migrate` scenario: a shm vNIC moved back and forth between two vnicd appliances on one
//! machine while a peer on the bridge streams to it (and to a bystander vNIC on each appliance):
//! per move the frames lost and the longest gap at the peer, and the time of each phase from
//! the source's record. The rig is `vnic_bench::mobility` (a Linux bridge, `net_af_packet` VFs,
//! the peer `vnic-gen` in a network namespace).
use serde::Serialize;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use vnic_bench::gen::{Gen, GenPlace};
use vnic_bench::mobility::{attached, vnic_cfg, vnicctl, Appliance, Net};
use vnic_bench::vnicd::{self, Output, Res};

const MV: &str = "02:00:00:00:a0:01";
const BYA: &str = "02:00:00:00:a0:02";
const BYB: &str = "02:00:00:00:b0:02";

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
    let mut net = Net::new(id)?;
    let (ta_mv, ta_by) = (net.vf("am")?.0, net.vf("ab")?.0);
    let (tb_by, tb_sp) = (net.vf("bb")?.0, net.vf("bs")?.0);
    let ports = [
        net.peer_port("m")?,
        net.peer_port("a")?,
        net.peer_port("b")?,
    ];
    let mut a = Appliance::start(
        vnicd_bin,
        dir,
        "a",
        id,
        json!([
            vnic_cfg("mv0", MV, &ta_mv, 0),
            vnic_cfg("bya", BYA, &ta_by, 1)
        ]),
        json!({}),
    )?;
    let mut b = Appliance::start(
        vnicd_bin,
        dir,
        "b",
        id,
        json!([vnic_cfg("byb", BYB, &tb_by, 0)]),
        json!({"spares": [{"name": "spare0", "devargs": format!("net_af_packet1,iface={tb_sp}"),
                           "port_label": "lan", "program_mac": false}]}),
    )?;
    let mut clients = vec![
        a.client("mv0", &[], Output::Drop)?,
        a.client("bya", &[], Output::Drop)?,
        b.client("byb", &[], Output::Drop)?,
    ];
    a.wait("A's clients", |st| {
        attached(st, "mv0") && attached(st, "bya")
    })?;
    b.wait("B's client", |st| attached(st, "byb"))?;
    let mut gen = Gen::spawn_at(
        vnicd_bin,
        0,
        &ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("net_af_packet{i},iface={p}"))
            .collect::<Vec<_>>(),
        1,
        false,
        &GenPlace {
            netns: Some(net.ns.clone()),
            dst: vec![MV.into(), BYA.into(), BYB.into()],
        },
    )?;
    gen.wait_listening(Duration::from_secs(20))?;
    gen.wait_ready(Duration::from_secs(20))?;
    // Let the switch learn every vNIC before the first move; then the highest rate up to
    // `rate` this host carries without loss on every stream with nothing moving (the moves'
    // losses must be theirs, not the host's).
    gen.trial(3000, 0.5, 0.3, &[64], false)?;
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
        rate_asked,
        rate_per_stream: rate,
        moves: out,
        gen_limited,
    })
}
