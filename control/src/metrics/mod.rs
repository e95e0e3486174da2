//! Prometheus / OpenMetrics exposition of the status snapshot.
//!
//! The control thread publishes a [`Status`] into a [`Snapshot`] slot (a pointer swap) when a
//! reader wants one fresher than [`PUBLISH_EVERY`]; readers (the HTTP listener in [`http`], the
//! DPDK telemetry commands in [`telemetry`]) wait a bounded time for it, render from it on their
//! own threads, and never touch the model or a data core. Nobody reading: nothing published.
//!
//! Names follow Prometheus conventions: `vnicd_` prefix, units in the name, counters end in
//! `_total`, labels by name (`vnic`, `backing`, `core`, `transport`), never by index.
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use vnic_proto::status::{BackingState, Status};

pub mod http;
pub mod telemetry;

/// A snapshot at most this old is fresh enough for a reader.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// How long a reader waits for the control thread to publish (it runs every ~1 ms; a long
/// reload can hold it): then it takes the latest it has.
pub const READ_WAIT: Duration = Duration::from_millis(250);

/// The latest status, shared by the control thread (writer) and the readers.
#[derive(Debug, Clone, Default)]
pub struct Snapshot(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    slot: Mutex<Option<(Arc<Status>, Instant)>>,
    published: Condvar,
    wanted: AtomicBool,
}

impl Snapshot {
    /// Control thread: replace the snapshot (the lock is held for a pointer swap only).
    pub fn publish(&self, s: Status) {
        let s = Arc::new(s);
        if let Ok(mut g) = self.0.slot.lock() {
            *g = Some((s, Instant::now()));
        }
        self.0.wanted.store(false, Ordering::Relaxed);
        self.0.published.notify_all();
    }

    /// Control thread: whether a reader waits for a fresh snapshot.
    pub fn wanted(&self) -> bool {
        self.0.wanted.load(Ordering::Relaxed)
    }

    /// A snapshot at most [`PUBLISH_EVERY`] old: asks the control thread for one and waits up to
    /// [`READ_WAIT`]; after that, the latest there is (None if none was ever published).
    pub fn fresh(&self) -> Option<Arc<Status>> {
        let deadline = Instant::now() + READ_WAIT;
        let mut g = self.0.slot.lock().ok()?;
        loop {
            if let Some((s, at)) = g.as_ref() {
                if at.elapsed() <= PUBLISH_EVERY {
                    return Some(s.clone());
                }
            }
            self.0.wanted.store(true, Ordering::Relaxed);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return g.as_ref().map(|(s, _)| s.clone());
            }
            g = self.0.published.wait_timeout(g, left).ok()?.0;
        }
    }
}

/// Which text format a scraper asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0` (Prometheus asks for it first).
    OpenMetrics,
    /// The classic text format 0.0.4 (curl, `promtool check metrics`).
    Text,
}

impl Format {
    /// From an HTTP `Accept` header.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// The exposition of one snapshot.
pub fn render(status: Arc<Status>, format: Format) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::with_prefix("vnicd");
    reg.register_collector(Box::new(StatusCollector(status)));
    let mut out = String::new();
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &reg)?,
        Format::Text => prometheus_client::encoding::prometheus_text::encode(&mut out, &reg)?,
    }
    Ok(out)
}

#[derive(Debug)]
struct StatusCollector(Arc<Status>);

type Labels = Vec<(&'static str, String)>;

/// One metric family: name, help, unit, and its samples.
struct Family<'a, M> {
    name: &'a str,
    help: &'a str,
    unit: Option<Unit>,
    samples: Vec<(Labels, M)>,
}

fn family<'a, M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    f: Family<'a, M>,
) -> Result<(), std::fmt::Error> {
    let Some(first) = f.samples.first() else {
        return Ok(());
    };
    let ty = first.1.metric_type();
    let mut m = enc.encode_descriptor(f.name, f.help, f.unit.as_ref(), ty)?;
    for (labels, v) in &f.samples {
        v.encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// A family whose sample values become metrics through `metric`.
fn of<'a, T, M>(
    name: &'a str,
    help: &'a str,
    unit: Option<Unit>,
    samples: Vec<(Labels, T)>,
    metric: fn(T) -> M,
) -> Family<'a, M> {
    Family {
        name,
        help,
        unit,
        samples: samples.into_iter().map(|(l, v)| (l, metric(v))).collect(),
    }
}

fn counter<'a>(
    name: &'a str,
    help: &'a str,
    unit: Option<Unit>,
    samples: Vec<(Labels, u64)>,
) -> Family<'a, ConstCounter<u64>> {
    of(name, help, unit, samples, ConstCounter::new)
}

fn gauge<'a>(
    name: &'a str,
    help: &'a str,
    unit: Option<Unit>,
    samples: Vec<(Labels, f64)>,
) -> Family<'a, ConstGauge<f64>> {
    of(name, help, unit, samples, ConstGauge::new)
}

fn state_word(s: &BackingState) -> &'static str {
    match s {
        BackingState::Active => "active",
        BackingState::Standby => "standby",
        BackingState::Failed(_) => "failed",
        BackingState::Disabled => "disabled",
    }
}

impl Collector for StatusCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let e = &mut enc;
        let none = || -> Labels { vec![] };
        family(
            e,
            gauge(
                "build_info",
                "vnicd and DPDK versions (always 1)",
                None,
                vec![(
                    vec![
                        ("version", env!("CARGO_PKG_VERSION").to_string()),
                        ("dpdk", s.dpdk_version.clone()),
                    ],
                    1.0,
                )],
            ),
        )?;
        family(
            e,
            gauge(
                "config_generation",
                "Generation of the running config (bumped by each applied reload)",
                None,
                vec![(none(), s.config_generation as f64)],
            ),
        )?;
        let t = &s.tally;
        family(
            e,
            counter(
                "reloads",
                "Config reloads by result",
                None,
                vec![
                    (vec![("result", "applied".into())], t.reloads_applied),
                    (vec![("result", "refused".into())], t.reloads_refused),
                ],
            ),
        )?;
        family(
            e,
            counter(
                "client_events",
                "Clients attached and detached (any transport)",
                None,
                vec![
                    (vec![("event", "attach".into())], t.attaches),
                    (vec![("event", "detach".into())], t.detaches),
                ],
            ),
        )?;
        self.vnics(e)?;
        self.backing(e)?;
        self.cores(e)
    }
}

impl StatusCollector {
    fn vnics(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let vs = &self.0.vnics;
        let l = |v: &vnic_proto::status::VnicStatus| -> Labels {
            vec![("vnic", v.name.clone()), ("transport", v.transport.clone())]
        };
        type Traffic = fn(&vnic_proto::status::VnicStatus) -> u64;
        let traffic: [(&str, &str, Option<Unit>, Traffic); 4] = [
            (
                "vnic_rx_packets",
                "Frames from the backing device to the client",
                None,
                |v| v.stats.rx_packets,
            ),
            (
                "vnic_rx",
                "Bytes from the backing device to the client",
                Some(Unit::Bytes),
                |v| v.stats.rx_bytes,
            ),
            (
                "vnic_tx_packets",
                "Frames from the client to the backing device",
                None,
                |v| v.stats.tx_packets,
            ),
            (
                "vnic_tx",
                "Bytes from the client to the backing device",
                Some(Unit::Bytes),
                |v| v.stats.tx_bytes,
            ),
        ];
        for (name, help, unit, f) in traffic {
            let samples = vs.iter().map(|v| (l(v), f(v))).collect();
            family(e, counter(name, help, unit, samples))?;
        }
        let mut drops = Vec::new();
        for v in vs {
            for (cause, n) in [
                ("client_full", v.stats.rx_drops),
                ("vf_refused", v.stats.tx_drops),
                ("spoof", v.stats.spoof_drops),
                ("inline_client_full", v.stats.client_drops),
            ] {
                let mut lb = l(v);
                lb.push(("cause", cause.into()));
                drops.push((lb, n));
            }
        }
        family(
            e,
            counter(
                "vnic_drops",
                "Frames dropped, by cause: the client's rx ring was full, the VF refused them, \
                 a spoofed source MAC, an in-core client's ring was full",
                None,
                drops,
            ),
        )?;
        let mut fo = Vec::new();
        for v in vs {
            let t = &v.failovers_by_reason;
            for (reason, n) in [
                ("failure", t.failure),
                ("fail_back", t.fail_back),
                ("planned", t.planned),
                ("recovery", t.recovery),
            ] {
                let mut lb = l(v);
                lb.push(("reason", reason.into()));
                fo.push((lb, n));
            }
        }
        family(
            e,
            counter(
                "vnic_failovers",
                "Switches of the active backing device, by reason",
                None,
                fo,
            ),
        )?;
        let g = |f: &dyn Fn(&vnic_proto::status::VnicStatus) -> f64| -> Vec<(Labels, f64)> {
            vs.iter().map(|v| (l(v), f(v))).collect()
        };
        family(
            e,
            gauge(
                "vnic_link_up",
                "1 when a backing device carries the vNIC",
                None,
                g(&|v| v.link_up as u8 as f64),
            ),
        )?;
        family(
            e,
            gauge(
                "vnic_attached",
                "1 when a client is attached",
                None,
                g(&|v| (v.state == "attached") as u8 as f64),
            ),
        )?;
        family(
            e,
            gauge(
                "vnic_pool_mbufs_in_use",
                "Mbufs of the vNIC's pool out of the pool",
                None,
                g(&|v| v.pool_in_use as f64),
            ),
        )?;
        let sw: Vec<_> = vs
            .iter()
            .filter_map(|v| v.last_switch.as_ref().map(|r| (v, r)))
            .collect();
        let each = |f: &dyn Fn(&vnic_proto::status::SwitchRecord) -> Option<f64>| {
            sw.iter()
                .filter_map(|(v, r)| f(r).map(|x| (l(v), x)))
                .collect::<Vec<_>>()
        };
        type Of = fn(&vnic_proto::status::SwitchRecord) -> Option<f64>;
        let last: [(&str, &str, Of); 4] = [
            (
                "vnic_last_failover_timestamp",
                "Wall-clock time of the last switch of the active device",
                |r| Some(r.at_unix_ms as f64 / 1e3),
            ),
            (
                "vnic_last_failover_detection",
                "Last switch: from the last good health check to the failure seen",
                |r| Some(r.detection_us as f64 / 1e6),
            ),
            (
                "vnic_last_failover_switch",
                "Last switch: from the decision to the data core running the new table",
                |r| Some(r.switch_us as f64 / 1e6),
            ),
            (
                "vnic_last_failover_first_frame",
                "Last failure: from the device marked down to the first frame on the new one",
                |r| r.first_frame_us.map(|x| x as f64 / 1e6),
            ),
        ];
        for (name, help, f) in last {
            family(e, gauge(name, help, Some(Unit::Seconds), each(&f)))?;
        }
        Ok(())
    }

    fn backing(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut state = Vec::new();
        let mut link = Vec::new();
        let mut prio = Vec::new();
        let mut stalls = Vec::new();
        for v in &self.0.vnics {
            for b in &v.backing {
                let l: Labels = vec![("vnic", v.name.clone()), ("backing", b.name.clone())];
                let now = state_word(&b.state);
                for st in ["active", "standby", "failed", "disabled"] {
                    let mut lb = l.clone();
                    lb.push(("state", st.into()));
                    state.push((lb, (st == now) as u8 as f64));
                }
                link.push((l.clone(), b.link_up as u8 as f64));
                stalls.push((l.clone(), b.tx_stalls));
                prio.push((l, b.priority as f64));
            }
        }
        family(
            e,
            gauge(
                "backing_state",
                "1 for the backing device's current state, 0 for the others",
                None,
                state,
            ),
        )?;
        family(
            e,
            gauge(
                "backing_link_up",
                "1 when the backing device's link is up",
                None,
                link,
            ),
        )?;
        family(
            e,
            counter(
                "backing_tx_stalls",
                "Times the data core saw the device's peer stop taking frames and sent on the backup meanwhile",
                None,
                stalls,
            ),
        )?;
        family(
            e,
            gauge(
                "backing_priority",
                "Failover priority (lower wins)",
                None,
                prio,
            ),
        )
    }

    fn cores(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let cs = &self.0.cores;
        let per = |f: &dyn Fn(&vnic_proto::status::CoreCounts) -> u64| -> Vec<(Labels, u64)> {
            cs.iter()
                .map(|c| (vec![("core", c.core.to_string())], f(&c.stats)))
                .collect()
        };
        type Of = fn(&vnic_proto::status::CoreCounts) -> u64;
        let counts: [(&str, &str, Of); 4] = [
            (
                "core_busy_cycles",
                "TSC cycles of polls that moved frames",
                |c| c.busy_cycles,
            ),
            ("core_idle_cycles", "TSC cycles of empty polls", |c| {
                c.idle_cycles
            }),
            ("core_packets", "Frame hops moved by the data core", |c| {
                c.packets
            }),
            ("core_polls", "Passes of the data core's poll loop", |c| {
                c.loops
            }),
        ];
        for (name, help, f) in counts {
            family(e, counter(name, help, None, per(&f)))?;
        }
        family(
            e,
            gauge(
                "core_tsc",
                "TSC frequency (to turn cycles into seconds)",
                Some(Unit::Other("hertz".into())),
                vec![(vec![], self.0.tsc_hz as f64)],
            ),
        )
    }
}
