//! Failover policy between a vNIC's backing devices: the arbiter's decision (pure, so it is
//! tested without devices) and the peer-announcement frames sent after a switch.
use serde::Serialize;
use std::time::{Duration, Instant};

/// Per-vNIC failover settings (from the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub auto_priority_failover: bool,
    pub hold_down: Duration,
    pub flap_limit: u32,
    pub flap_window: Duration,
    pub tx_stall: Duration,
    /// The data core's own refuse window (fast reroute), µs; 0: off.
    pub tx_refuse_us: u32,
    pub announce_rounds: u32,
    pub announce_interval: Duration,
}

/// What the arbiter sees of one backing device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub priority: u32,
    /// Started, not disabled, not failed, link up.
    pub usable: bool,
    /// Since when it has been usable without interruption.
    pub healthy_since: Option<Instant>,
}

/// Why a switch happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The active device failed (link down, tx stalled, removed).
    Failure(String),
    /// A better-priority device has been healthy for the hold-down time.
    FailBack,
    /// `vnicctl failover` or the client's REQUEST_FAILOVER.
    Planned(String),
    /// The vNIC had no usable device and one came back.
    Recovery,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Failure(w) => write!(f, "failure: {w}"),
            Reason::FailBack => write!(f, "fail-back to a better priority"),
            Reason::Planned(w) => write!(f, "planned: {w}"),
            Reason::Recovery => write!(f, "recovery"),
        }
    }
}

/// The arbiter's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Stay,
    /// Fail-back wanted but the flap limit is reached: stay, and say so.
    StaySuppressed,
    Switch {
        to: usize,
        reason: Reason,
    },
    /// Nothing usable: the vNIC's link is down.
    LinkDown,
}

/// Best usable device: lowest priority number, config order breaks ties.
pub fn best(c: &[Candidate], except: Option<usize>) -> Option<usize> {
    c.iter()
        .enumerate()
        .filter(|(i, d)| d.usable && Some(*i) != except)
        .min_by_key(|(i, d)| (d.priority, *i))
        .map(|(i, _)| i)
}

/// Decide for one vNIC. `active_failure` is why the active device is unusable (if it is);
/// `recent_failbacks` counts automatic fail-backs inside the flap window.
pub fn decide(
    c: &[Candidate],
    active: Option<usize>,
    active_failure: Option<&str>,
    p: &Policy,
    now: Instant,
    recent_failbacks: usize,
) -> Decision {
    match active {
        Some(a) if c[a].usable => {
            if !p.auto_priority_failover {
                return Decision::Stay;
            }
            let better = c
                .iter()
                .enumerate()
                .filter(|(i, d)| {
                    *i != a
                        && d.usable
                        && d.priority < c[a].priority
                        && d.healthy_since
                            .is_some_and(|t| now.duration_since(t) >= p.hold_down)
                })
                .min_by_key(|(i, d)| (d.priority, *i))
                .map(|(i, _)| i);
            match better {
                Some(_) if recent_failbacks >= p.flap_limit as usize => Decision::StaySuppressed,
                Some(b) => Decision::Switch {
                    to: b,
                    reason: Reason::FailBack,
                },
                None => Decision::Stay,
            }
        }
        _ => match best(c, None) {
            Some(b) => Decision::Switch {
                to: b,
                reason: match (active, active_failure) {
                    (Some(_), Some(w)) => Reason::Failure(w.to_string()),
                    (Some(_), None) => Reason::Failure("unusable".into()),
                    (None, _) => Reason::Recovery,
                },
            },
            None => Decision::LinkDown,
        },
    }
}

/// A RARP request announcing `mac` (what QEMU sends after migration for MAC-only guests).
pub fn rarp(mac: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&[0x80, 0x35]);
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 3]); // Ethernet/IPv4, op 3 = reverse request
    f[22..28].copy_from_slice(&mac);
    f[32..38].copy_from_slice(&mac);
    f
}

/// A gratuitous ARP request for `ip` at `mac`.
pub fn garp(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // op 1 = request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip);
    f[38..42].copy_from_slice(&ip); // target = sender: gratuitous
    f
}

pub use vnic_proto::status::SwitchRecord;

#[cfg(test)]
mod tests {
    use super::*;

    fn p(auto: bool) -> Policy {
        Policy {
            auto_priority_failover: auto,
            hold_down: Duration::from_secs(2),
            flap_limit: 3,
            flap_window: Duration::from_secs(60),
            tx_stall: Duration::from_millis(100),
            tx_refuse_us: 200,
            announce_rounds: 3,
            announce_interval: Duration::from_millis(50),
        }
    }
    fn c(priority: u32, usable: bool, since: Option<Instant>) -> Candidate {
        Candidate {
            priority,
            usable,
            healthy_since: since,
        }
    }

    #[test]
    fn failure_goes_to_the_best_usable_device() {
        let now = Instant::now();
        let d = [
            c(10, false, None),
            c(30, true, Some(now)),
            c(20, true, Some(now)),
            c(20, true, Some(now)),
        ];
        assert_eq!(
            decide(&d, Some(0), Some("link down"), &p(true), now, 0),
            Decision::Switch {
                to: 2,
                reason: Reason::Failure("link down".into())
            }
        );
    }

    #[test]
    fn nothing_usable_means_link_down_and_recovery_later() {
        let now = Instant::now();
        let d = [c(10, false, None), c(20, false, None)];
        assert_eq!(
            decide(&d, Some(0), Some("link down"), &p(true), now, 0),
            Decision::LinkDown
        );
        assert_eq!(decide(&d, None, None, &p(true), now, 0), Decision::LinkDown);
        let d = [c(10, false, None), c(20, true, Some(now))];
        assert_eq!(
            decide(&d, None, None, &p(true), now, 0),
            Decision::Switch {
                to: 1,
                reason: Reason::Recovery
            }
        );
    }

    #[test]
    fn fail_back_waits_for_the_hold_down_and_respects_the_flap_limit() {
        let t0 = Instant::now();
        let d = [c(10, true, Some(t0)), c(20, true, Some(t0))];
        assert_eq!(
            decide(
                &d,
                Some(1),
                None,
                &p(true),
                t0 + Duration::from_millis(1999),
                0
            ),
            Decision::Stay
        );
        let later = t0 + Duration::from_secs(2);
        assert_eq!(
            decide(&d, Some(1), None, &p(true), later, 0),
            Decision::Switch {
                to: 0,
                reason: Reason::FailBack
            }
        );
        assert_eq!(
            decide(&d, Some(1), None, &p(true), later, 3),
            Decision::StaySuppressed
        );
        assert_eq!(
            decide(&d, Some(1), None, &p(false), later, 0),
            Decision::Stay,
            "auto fail-back off"
        );
        assert_eq!(
            decide(&d, Some(0), None, &p(true), later, 0),
            Decision::Stay,
            "already on the best"
        );
    }

    #[test]
    fn announcement_frames() {
        let mac = [2, 0, 0, 0, 0, 1];
        let r = rarp(mac);
        assert_eq!(
            (r.len(), &r[0..6], &r[6..12], &r[12..14], r[21]),
            (60, &[0xff; 6][..], &mac[..], &[0x80, 0x35][..], 3)
        );
        let g = garp(mac, [10, 0, 0, 5]);
        assert_eq!(
            (&g[12..14], g[21], &g[28..32], &g[38..42]),
            (&[8, 6][..], 1, &[10, 0, 0, 5][..], &[10, 0, 0, 5][..])
        );
    }
}
