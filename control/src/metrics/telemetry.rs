//! vnicd's commands in DPDK telemetry, beside DPDK's own (`/ethdev/stats,PORT` …), for
//! `dpdk-telemetry.py -f PREFIX`: `/vnicd/vnics` (every vNIC: state and counters),
//! `/vnicd/vnic,NAME` (one vNIC with its backing devices and last switch), `/vnicd/cores`.
//! Answered on DPDK's telemetry thread from the status snapshot.
use super::Snapshot;
use vnic_dataplane::telemetry::{register as reg, TelAnswer, TelValue};
use vnic_proto::status::{Status, VnicStatus};

fn u(x: u64) -> TelValue {
    TelValue::U64(x)
}

fn s(x: impl Into<String>) -> TelValue {
    TelValue::Str(x.into())
}

fn vnic_fields(v: &VnicStatus) -> Vec<(String, TelValue)> {
    let c = &v.stats;
    vec![
        ("name".into(), s(&v.name)),
        ("state".into(), s(&v.state)),
        ("transport".into(), s(&v.transport)),
        ("mac".into(), s(&v.mac)),
        (
            "active_backing".into(),
            s(v.active_backing.as_deref().unwrap_or("-")),
        ),
        ("link_up".into(), u(v.link_up as u64)),
        ("data_core".into(), u(v.data_core as u64)),
        ("rx_packets".into(), u(c.rx_packets)),
        ("rx_bytes".into(), u(c.rx_bytes)),
        ("tx_packets".into(), u(c.tx_packets)),
        ("tx_bytes".into(), u(c.tx_bytes)),
        ("rx_drops".into(), u(c.rx_drops)),
        ("tx_drops".into(), u(c.tx_drops)),
        ("spoof_drops".into(), u(c.spoof_drops)),
        ("client_drops".into(), u(c.client_drops)),
        ("failovers".into(), u(v.failover_count)),
        ("pool_in_use".into(), u(v.pool_in_use as u64)),
    ]
}

fn vnics(st: &Status) -> TelAnswer {
    Ok(st
        .vnics
        .iter()
        .map(|v| (v.name.clone(), TelValue::Dict(vnic_fields(v))))
        .collect())
}

fn vnic(st: &Status, name: Option<&str>) -> TelAnswer {
    let name = name.ok_or("usage: /vnicd/vnic,NAME")?;
    let v = st
        .vnics
        .iter()
        .find(|v| v.name == name)
        .ok_or_else(|| format!("unknown vNIC {name:?}"))?;
    let mut out = vnic_fields(v);
    out.push((
        "backing".into(),
        TelValue::Dict(
            v.backing
                .iter()
                .map(|b| {
                    (
                        b.name.clone(),
                        s(format!(
                            "{}: priority {}, link {}, {}",
                            b.name,
                            b.priority,
                            if b.link_up { "up" } else { "down" },
                            b.state
                        )),
                    )
                })
                .collect(),
        ),
    ));
    if let Some(r) = &v.last_switch {
        let mut sw = vec![
            ("from".to_string(), s(r.from.as_deref().unwrap_or("-"))),
            ("to".into(), s(&r.to)),
            ("reason".into(), s(&r.reason)),
            ("at_unix_ms".into(), u(r.at_unix_ms)),
            ("detection_us".into(), u(r.detection_us)),
            ("switch_us".into(), u(r.switch_us)),
        ];
        if let Some(d) = &r.detected_by {
            sw.push(("detected_by".into(), s(d)));
        }
        if let Some(x) = r.first_frame_us {
            sw.push(("first_frame_us".into(), u(x)));
        }
        out.push(("last_switch".into(), TelValue::Dict(sw)));
    }
    Ok(out)
}

fn cores(st: &Status) -> TelAnswer {
    Ok(st
        .cores
        .iter()
        .map(|c| {
            let k = &c.stats;
            (
                c.core.to_string(),
                TelValue::Dict(vec![
                    ("launch".into(), s(&c.launch)),
                    ("table_generation".into(), u(c.table_generation)),
                    ("polls".into(), u(k.loops)),
                    ("busy_polls".into(), u(k.busy_loops)),
                    ("packets".into(), u(k.packets)),
                    ("busy_cycles".into(), u(k.busy_cycles)),
                    ("idle_cycles".into(), u(k.idle_cycles)),
                    ("yields".into(), u(k.yields)),
                    ("sleeps".into(), u(k.sleeps)),
                ]),
            )
        })
        .collect())
}

/// Register the three commands, answering from `snap`. A failure is logged: telemetry is an
/// extra view, vnicd runs without it.
pub fn register(snap: &Snapshot) {
    type F = fn(&Status, Option<&str>) -> TelAnswer;
    let cmds: [(&str, &str, F); 3] = [
        (
            "/vnicd/vnics",
            "Every vNIC of vnicd: state, active backing device, counters",
            |st, _| vnics(st),
        ),
        (
            "/vnicd/vnic",
            "One vNIC of vnicd with its backing devices and last switch. Parameter: the vNIC name",
            vnic,
        ),
        (
            "/vnicd/cores",
            "vnicd's data cores: polls, packets, busy and idle cycles",
            |st, _| cores(st),
        ),
    ];
    for (cmd, help, f) in cmds {
        let snap = snap.clone();
        let h = Box::new(move |p: Option<&str>| -> TelAnswer {
            let st = snap.fresh().ok_or("vnicd has no status yet")?;
            f(&st, p)
        });
        if let Err(e) = reg(cmd, help, h) {
            tracing::warn!("telemetry command {cmd} not registered: {e}");
        }
    }
}
