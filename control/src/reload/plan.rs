//! Config reload: parse → validate → diff → plan → prepare → commit, with a generation id.
//! `plan` is pure (tested without devices). Preparing builds every new resource (pools, hot-
//! plugged devices) and fails as a whole — nothing running changes until every new piece exists;
//! committing only moves things and releases what went away.
use crate::config::{BackingConfig, Config, ConfigError, ConfigErrors, VnicConfig};
use serde::Serialize;

/// One step of a reload plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    AddVnic {
        vnic: String,
    },
    RemoveVnic {
        vnic: String,
    },
    /// Identity, queue layout or client transport changed (MAC, MTU, queues, ring depth,
    /// client): the client is told
    /// (`CONFIG_CHANGED`) and re-attaches to the new vNIC.
    RecreateVnic {
        vnic: String,
        why: String,
    },
    MoveVnic {
        vnic: String,
        from_core: u32,
        to_core: u32,
    },
    /// Failover policy, credentials, spoofing, addresses, priorities: applied in place.
    UpdateVnic {
        vnic: String,
        what: Vec<String>,
    },
    AddBacking {
        vnic: String,
        backing: String,
    },
    RemoveBacking {
        vnic: String,
        backing: String,
    },
    Global {
        what: String,
    },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::AddVnic { vnic } => write!(f, "add vNIC {vnic}"),
            Step::RemoveVnic { vnic } => write!(f, "remove vNIC {vnic}"),
            Step::RecreateVnic { vnic, why } => write!(f, "recreate vNIC {vnic} ({why})"),
            Step::MoveVnic {
                vnic,
                from_core,
                to_core,
            } => write!(f, "move vNIC {vnic} from core {from_core} to {to_core}"),
            Step::UpdateVnic { vnic, what } => write!(f, "update vNIC {vnic}: {}", what.join(", ")),
            Step::AddBacking { vnic, backing } => {
                write!(f, "add backing device {backing} to {vnic}")
            }
            Step::RemoveBacking { vnic, backing } => {
                write!(f, "remove backing device {backing} from {vnic}")
            }
            Step::Global { what } => write!(f, "set {what}"),
        }
    }
}

fn immutable(errs: &mut Vec<ConfigError>, path: &str, changed: bool) {
    if changed {
        errs.push(ConfigError {
            path: path.into(),
            msg: "cannot change while vnicd runs (restart vnicd to change it)".into(),
        });
    }
}

/// What changes from `old` to `new`. Settings that cannot change live are errors naming the field.
pub fn plan(old: &Config, new: &Config) -> Result<Vec<Step>, ConfigErrors> {
    let (o, n) = (&old.raw(), &new.raw());
    let mut errs = Vec::new();
    let (oe, ne) = (&o.eal, &n.eal);
    immutable(&mut errs, "eal.cores", oe.cores != ne.cores);
    immutable(&mut errs, "eal.main_core", oe.main_core != ne.main_core);
    immutable(&mut errs, "eal.memory_mb", oe.memory_mb != ne.memory_mb);
    immutable(&mut errs, "eal.hugepages", oe.hugepages != ne.hugepages);
    immutable(
        &mut errs,
        "eal.file_prefix",
        oe.file_prefix != ne.file_prefix,
    );
    immutable(&mut errs, "eal.log_level", oe.log_level != ne.log_level);
    immutable(&mut errs, "eal.extra_args", oe.extra_args != ne.extra_args);
    immutable(&mut errs, "data_cores", o.data_cores != n.data_cores);
    immutable(
        &mut errs,
        "control_socket",
        o.control_socket != n.control_socket,
    );
    immutable(
        &mut errs,
        "control_socket_mode",
        o.control_socket_mode != n.control_socket_mode,
    );
    immutable(
        &mut errs,
        "control_socket_gid",
        o.control_socket_gid != n.control_socket_gid,
    );
    immutable(&mut errs, "admin_socket", o.admin_socket != n.admin_socket);
    immutable(&mut errs, "metrics", o.metrics != n.metrics);
    if !errs.is_empty() {
        return Err(ConfigErrors(errs));
    }
    let mut steps = Vec::new();
    if o.heartbeat_timeout_ms != n.heartbeat_timeout_ms {
        steps.push(Step::Global {
            what: format!("heartbeat_timeout_ms {}", n.heartbeat_timeout_ms),
        });
    }
    if o.admin_uids != n.admin_uids {
        steps.push(Step::Global {
            what: format!("admin_uids {:?}", n.admin_uids),
        });
    }
    if o.watch_config != n.watch_config {
        steps.push(Step::Global {
            what: format!("watch_config {}", n.watch_config),
        });
    }
    if o.stats_interval_ms != n.stats_interval_ms {
        steps.push(Step::Global {
            what: format!("stats_interval_ms {}", n.stats_interval_ms),
        });
    }
    for ov in &o.vnics {
        if !n.vnics.iter().any(|v| v.name == ov.name) {
            steps.push(Step::RemoveVnic {
                vnic: ov.name.clone(),
            });
        }
    }
    for (ni, nv) in n.vnics.iter().enumerate() {
        let Some(oi) = o.vnics.iter().position(|v| v.name == nv.name) else {
            steps.push(Step::AddVnic {
                vnic: nv.name.clone(),
            });
            continue;
        };
        let ov = &o.vnics[oi];
        let mut why = Vec::new();
        if old.mac(oi) != new.mac(ni) {
            why.push("mac");
        }
        if ov.mtu != nv.mtu {
            why.push("mtu");
        }
        if ov.queues != nv.queues {
            why.push("queues");
        }
        if ov.ring_depth != nv.ring_depth {
            why.push("ring_depth");
        }
        if ov.mbufs != nv.mbufs {
            why.push("mbufs");
        }
        if ov.client != nv.client {
            // A new client side (transport, socket, mode, memif id or secret): the client
            // reconnects to the new one.
            why.push("client");
        }
        if !why.is_empty() {
            steps.push(Step::RecreateVnic {
                vnic: nv.name.clone(),
                why: format!("{} changed", why.join(", ")),
            });
            continue;
        }
        let (oc, nc) = (old.vnic_core(oi), new.vnic_core(ni));
        if oc != nc {
            steps.push(Step::MoveVnic {
                vnic: nv.name.clone(),
                from_core: oc,
                to_core: nc,
            });
        }
        // Backing devices: same name and devargs = same device; anything else is remove + add.
        for ob in missing(ov, nv) {
            steps.push(Step::RemoveBacking {
                vnic: nv.name.clone(),
                backing: ob.name.clone(),
            });
        }
        for nb in missing(nv, ov) {
            steps.push(Step::AddBacking {
                vnic: nv.name.clone(),
                backing: nb.name.clone(),
            });
        }
        let what = policy_changes(ov, nv);
        if !what.is_empty() {
            steps.push(Step::UpdateVnic {
                vnic: nv.name.clone(),
                what,
            });
        }
    }
    Ok(steps)
}

fn policy_changes(o: &VnicConfig, n: &VnicConfig) -> Vec<String> {
    let mut w = Vec::new();
    let mut ch = |name: &str, changed: bool| {
        if changed {
            w.push(name.to_string());
        }
    };
    ch("allowed_uids", o.allowed_uids != n.allowed_uids);
    ch("allowed_gids", o.allowed_gids != n.allowed_gids);
    ch("allow_spoofing", o.allow_spoofing != n.allow_spoofing);
    ch(
        "auto_priority_failover",
        o.auto_priority_failover != n.auto_priority_failover,
    );
    ch("hold_down_ms", o.hold_down_ms != n.hold_down_ms);
    ch("flap_limit", o.flap_limit != n.flap_limit);
    ch("flap_window_ms", o.flap_window_ms != n.flap_window_ms);
    ch("tx_stall_ms", o.tx_stall_ms != n.tx_stall_ms);
    ch("tx_refuse_us", o.tx_refuse_us != n.tx_refuse_us);
    ch("announce_rounds", o.announce_rounds != n.announce_rounds);
    ch(
        "announce_interval_ms",
        o.announce_interval_ms != n.announce_interval_ms,
    );
    ch("ipv4", o.ipv4 != n.ipv4);
    for nb in &n.backing {
        if let Some(ob) = o
            .backing
            .iter()
            .find(|b| b.name == nb.name && b.devargs == nb.devargs)
        {
            if ob.priority != nb.priority {
                w.push(format!(
                    "{} priority {} -> {}",
                    nb.name, ob.priority, nb.priority
                ));
            }
            if ob.port_label != nb.port_label {
                w.push(format!("{} port_label", nb.name));
            }
        }
    }
    w
}

/// Backing devices of `a` that `b` does not have (same name and devargs = same device).
fn missing<'a>(
    a: &'a VnicConfig,
    b: &'a VnicConfig,
) -> impl Iterator<Item = &'a BackingConfig> + 'a {
    a.backing.iter().filter(move |x| {
        !b.backing
            .iter()
            .any(|y| y.name == x.name && y.devargs == x.devargs)
    })
}

pub use vnic_proto::msg::Reload;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use serde_json::json;

    fn cfg(edit: impl FnOnce(&mut serde_json::Value)) -> Config {
        let mut j = json!({
            "vnics": [
                {"name": "a", "mac": "02:00:00:00:00:01", "backing": [
                    {"name": "a0", "devargs": "net_null0", "port_label": "p0", "priority": 10},
                    {"name": "a1", "devargs": "net_null1", "port_label": "p1", "priority": 20}]},
                {"name": "b", "mac": "02:00:00:00:00:02", "backing": [{"name": "b0", "devargs": "net_null2", "port_label": "p0"}]}
            ]
        });
        edit(&mut j);
        parse(&j.to_string()).unwrap()
    }

    #[test]
    fn nothing_changed_means_no_step() {
        assert_eq!(plan(&cfg(|_| {}), &cfg(|_| {})).unwrap(), vec![]);
    }

    #[test]
    fn steps_for_each_kind_of_change() {
        let old = cfg(|_| {});
        let new = cfg(|j| {
            j["vnics"][0]["backing"][1]["priority"] = 5.into();
            j["vnics"][0]["hold_down_ms"] = 100.into();
            j["vnics"][1]["mtu"] = 9000.into();
            j["vnics"].as_array_mut().unwrap().push(json!({"name": "c", "mac": "02:00:00:00:00:03", "backing": [{"name": "c0", "devargs": "net_null3", "port_label": "p0"}]}));
            j["heartbeat_timeout_ms"] = 500.into();
        });
        let s = plan(&old, &new).unwrap();
        assert!(
            s.contains(&Step::Global {
                what: "heartbeat_timeout_ms 500".into()
            }),
            "{s:?}"
        );
        assert!(s.contains(&Step::AddVnic { vnic: "c".into() }));
        assert!(s.contains(&Step::RecreateVnic {
            vnic: "b".into(),
            why: "mtu changed".into()
        }));
        assert!(
            s.contains(&Step::UpdateVnic {
                vnic: "a".into(),
                what: vec!["hold_down_ms".into(), "a1 priority 20 -> 5".into()]
            }),
            "{s:?}"
        );
        let gone = cfg(|j| {
            j["vnics"].as_array_mut().unwrap().remove(1);
            j["vnics"][0]["backing"][1]["devargs"] = "net_null7".into();
        });
        let s = plan(&old, &gone).unwrap();
        assert!(s.contains(&Step::RemoveVnic { vnic: "b".into() }));
        assert!(s.contains(&Step::RemoveBacking {
            vnic: "a".into(),
            backing: "a1".into()
        }));
        assert!(s.contains(&Step::AddBacking {
            vnic: "a".into(),
            backing: "a1".into()
        }));
    }

    #[test]
    fn settings_that_cannot_change_live_are_named() {
        let old = cfg(|_| {});
        let new = cfg(|j| {
            j["eal"] = json!({"memory_mb": 1024});
            j["data_cores"] = json!([{"core": 1, "idle_sleep_us": 5}]);
        });
        let e = plan(&old, &new).unwrap_err();
        assert!(
            e.has("eal.memory_mb", "cannot change while vnicd runs"),
            "{e}"
        );
        assert!(e.has("data_cores", "cannot change while vnicd runs"), "{e}");
    }
}
