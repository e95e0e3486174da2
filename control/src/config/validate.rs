//! Validation: a parsed config becomes a [`Config`] only here, with every error named by its
//! JSON path and the rule it breaks, all at once.
use super::*;
use std::collections::{HashMap, HashSet};

pub(super) fn valid_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > MAX_NAME {
        return Err(format!(
            "must be at most {MAX_NAME} characters (got {})",
            s.len()
        ));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err("may contain only letters, digits, '_' and '-'".into());
    }
    Ok(())
}

/// True for a PCI address (`0000:03:00.1` or `03:00.1`), optionally followed by `,args`.
pub fn is_pci_address(devargs: &str) -> bool {
    let addr = devargs.split(',').next().unwrap_or("");
    let parts: Vec<&str> = addr.split(':').collect();
    let (dom, bus, devfn) = match parts.as_slice() {
        [d, b, df] => (Some(*d), *b, *df),
        [b, df] => (None, *b, *df),
        _ => return false,
    };
    let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
    let Some((dev, func)) = devfn.split_once('.') else {
        return false;
    };
    dom.is_none_or(|d| hex(d, 4))
        && hex(bus, 2)
        && hex(dev, 2)
        && matches!(func.as_bytes(), [b'0'..=b'7'])
}

/// The device name DPDK gives the port for these devargs (the part before the first comma).
pub fn device_name(devargs: &str) -> &str {
    devargs.split(',').next().unwrap_or(devargs)
}

/// Check a backing device's devargs: a PCI address, or `net_<driver><n>[,key=value...]`.
pub fn check_devargs(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace".into());
    }
    let mut parts = s.split(',');
    let dev = parts.next().unwrap_or("");
    let looks_pci = dev.contains(':') && !dev.starts_with("net_");
    if looks_pci {
        if !is_pci_address(dev) {
            return Err(format!("{dev:?} is not a PCI address (DDDD:BB:DD.F)"));
        }
    } else {
        let Some(rest) = dev.strip_prefix("net_") else {
            return Err(format!(
                "{dev:?} is neither a PCI address nor a vdev name (net_<driver><n>)"
            ));
        };
        let drv = rest.trim_end_matches(|c: char| c.is_ascii_digit());
        if drv.is_empty()
            || drv.len() == rest.len()
            || !drv.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            return Err(format!(
                "vdev name {dev:?} must be net_<driver><number>, e.g. net_memif0"
            ));
        }
    }
    for kv in parts {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => {}
            _ => return Err(format!("device argument {kv:?} must be key=value")),
        }
    }
    Ok(())
}

impl RawConfig {
    /// Validate into a [`Config`], collecting every error.
    pub fn validate(self) -> Result<Config, ConfigErrors> {
        let mut errs = Vec::new();
        let mut err = |path: String, msg: String| errs.push(ConfigError { path, msg });

        // EAL
        let e = &self.eal;
        if e.cores.is_empty() {
            err("eal.cores".into(), "must list at least one CPU".into());
        }
        let ncpu = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let max_cpu = ncpu.max(128);
        for (i, c) in e.cores.iter().enumerate() {
            if *c >= max_cpu {
                err(
                    format!("eal.cores[{i}]"),
                    format!("CPU {c} out of range 0..{max_cpu}"),
                );
            }
        }
        if !e.cores.contains(&e.main_core) {
            err(
                "eal.main_core".into(),
                format!("core {} is not in eal.cores {:?}", e.main_core, e.cores),
            );
        }
        if !(64..=65536).contains(&e.memory_mb) {
            err(
                "eal.memory_mb".into(),
                format!("{} out of range 64..=65536", e.memory_mb),
            );
        }
        if e.log_level > 8 {
            err(
                "eal.log_level".into(),
                format!("{} out of range 0..=8", e.log_level),
            );
        }
        if let Some(p) = &e.file_prefix {
            if valid_name(p).is_err() || p.len() > 32 {
                err(
                    "eal.file_prefix".into(),
                    "must be 1..=32 of letters, digits, '_' and '-'".into(),
                );
            }
        }

        // Data cores
        if self.data_cores.is_empty() {
            err(
                "data_cores".into(),
                "must list at least one data core".into(),
            );
        }
        let mut seen_cores = HashSet::new();
        for (i, d) in self.data_cores.iter().enumerate() {
            let p = format!("data_cores[{i}].core");
            if !e.cores.contains(&d.core) {
                err(
                    p.clone(),
                    format!("core {} is not in eal.cores {:?}", d.core, e.cores),
                );
            } else if d.core == e.main_core
                && !(d.launch == LaunchKind::Thread && d.idle_sleep_us > 0)
            {
                // An EAL lcore cannot be the main lcore; a pinned thread may share the control
                // thread's CPU, but only if it backs off when idle (else it starves the control
                // thread).
                err(
                    p.clone(),
                    format!(
                        "core {} is the main (control) core (only a \"thread\" data core with idle_sleep_us > 0 may share it)",
                        d.core
                    ),
                );
            }
            if !seen_cores.insert(d.core) {
                err(p, format!("core {} listed twice", d.core));
            }
            if d.idle_sleep_us > 100_000 {
                err(
                    format!("data_cores[{i}].idle_sleep_us"),
                    format!("{} out of range 0..=100000", d.idle_sleep_us),
                );
            }
        }
        if !(100..=60_000).contains(&self.stats_interval_ms) {
            err(
                "stats_interval_ms".into(),
                format!("{} out of range 100..=60000", self.stats_interval_ms),
            );
        }
        if self.control_socket.as_os_str().is_empty() {
            err("control_socket".into(), "must not be empty".into());
        }
        if self.admin_socket.as_os_str().is_empty() {
            err("admin_socket".into(), "must not be empty".into());
        } else if self.admin_socket == self.control_socket {
            err(
                "admin_socket".into(),
                "must differ from control_socket".into(),
            );
        }
        if let Some(m) = &self.metrics {
            match m.parse_listen() {
                Err(msg) => err("metrics.listen".into(), msg),
                Ok(super::MetricsListen::Unix(p))
                    if [&self.control_socket, &self.admin_socket].contains(&&p) =>
                {
                    err(
                        "metrics.listen".into(),
                        format!(
                            "{:?} is vnicd's own control or admin socket",
                            p.display().to_string()
                        ),
                    )
                }
                Ok(_) => {}
            }
        }
        if let Err(m) = parse_mode(&self.control_socket_mode) {
            err("control_socket_mode".into(), m);
        }
        if !(20..=60_000).contains(&self.heartbeat_timeout_ms) {
            err(
                "heartbeat_timeout_ms".into(),
                format!("{} out of range 20..=60000", self.heartbeat_timeout_ms),
            );
        }

        // vNICs
        if self.vnics.len() > MAX_VNICS {
            err(
                "vnics".into(),
                format!("{} vNICs, at most {MAX_VNICS}", self.vnics.len()),
            );
        }
        let mut vnic_names: HashMap<&str, usize> = HashMap::new();
        let mut backing_names: HashMap<&str, String> = HashMap::new();
        let mut devices: HashMap<String, String> = HashMap::new();
        let mut macs_seen: HashMap<MacAddr, usize> = HashMap::new();
        let mut sockets: HashMap<&str, String> = HashMap::new();
        let mut macs = Vec::new();
        let mut vnic_cores = Vec::new();
        let first_core = self.data_cores.first().map(|d| d.core).unwrap_or(1);
        for (i, v) in self.vnics.iter().enumerate() {
            let vp = format!("vnics[{i}]");
            if let Err(m) = valid_name(&v.name) {
                err(format!("{vp}.name"), m);
            }
            if let Some(j) = vnic_names.insert(&v.name, i) {
                err(
                    format!("{vp}.name"),
                    format!("duplicate vNIC name {:?} (also vnics[{j}])", v.name),
                );
            }
            match v.mac.parse::<MacAddr>() {
                Ok(m) => {
                    if let Some(j) = macs_seen.insert(m, i) {
                        err(
                            format!("{vp}.mac"),
                            format!("MAC {m} also used by vnics[{j}]"),
                        );
                    }
                    macs.push(m);
                }
                Err(why) => {
                    err(format!("{vp}.mac"), format!("bad MAC {:?}: {why}", v.mac));
                    macs.push(MacAddr([0; 6]));
                }
            }
            if !(68..=9600).contains(&v.mtu) {
                err(
                    format!("{vp}.mtu"),
                    format!("{} out of range 68..=9600", v.mtu),
                );
            }
            if !(1..=MAX_QUEUES as u32).contains(&v.queues) {
                err(
                    format!("{vp}.queues"),
                    format!("{} out of range 1..={MAX_QUEUES}", v.queues),
                );
            }
            if !(64..=32768).contains(&v.ring_depth) || !v.ring_depth.is_power_of_two() {
                err(
                    format!("{vp}.ring_depth"),
                    format!("{} must be a power of two in 64..=32768", v.ring_depth),
                );
            }
            if v.tx_refuse_us > 1_000_000 {
                err(
                    format!("{vp}.tx_refuse_us"),
                    format!("{} out of range 0..=1000000", v.tx_refuse_us),
                );
            }
            let core = v.data_core.unwrap_or(first_core);
            if !self.data_cores.iter().any(|d| d.core == core) {
                err(
                    format!("{vp}.data_core"),
                    format!("core {core} is not one of data_cores"),
                );
            }
            vnic_cores.push(core);
            if v.backing.is_empty() {
                err(
                    format!("{vp}.backing"),
                    "needs at least one backing device".into(),
                );
            }
            if v.backing.len() > MAX_BACKING {
                err(
                    format!("{vp}.backing"),
                    format!("{} backing devices, at most {MAX_BACKING}", v.backing.len()),
                );
            }
            if let Some(path) = v.client.socket() {
                let cp = format!("{vp}.client.socket");
                if let Err(m) = check_socket_path(path) {
                    err(cp.clone(), m);
                } else if let Some(other) = sockets.insert(path, cp.clone()) {
                    err(cp, format!("socket {path:?} is also {other}"));
                } else if [&self.control_socket, &self.admin_socket]
                    .iter()
                    .any(|p| p.as_os_str() == path)
                {
                    err(
                        cp,
                        format!("socket {path:?} is vnicd's own control or admin socket"),
                    );
                }
                // File permissions are the access check these transports allow: one owner and
                // one group.
                if v.allowed_uids.len() > 1 {
                    err(
                        format!("{vp}.allowed_uids"),
                        format!(
                            "{} uids, but a {} socket file has one owner: give one uid and use allowed_gids for more",
                            v.allowed_uids.len(),
                            v.client.transport()
                        ),
                    );
                }
                if v.allowed_gids.len() > 1 {
                    err(
                        format!("{vp}.allowed_gids"),
                        format!(
                            "{} gids, but a {} socket file has one group",
                            v.allowed_gids.len(),
                            v.client.transport()
                        ),
                    );
                }
            }
            if let ClientConfig::Memif {
                secret: Some(sec), ..
            } = &v.client
            {
                if sec.len() > 24 || sec.contains(',') || sec.chars().any(|c| c.is_control()) {
                    err(
                        format!("{vp}.client.secret"),
                        "at most 24 characters, no commas or control characters".into(),
                    );
                }
            }
            let mut labels: HashMap<&str, usize> = HashMap::new();
            for (k, b) in v.backing.iter().enumerate() {
                let bp = format!("{vp}.backing[{k}]");
                if let Err(m) = valid_name(&b.name) {
                    err(format!("{bp}.name"), m);
                }
                if let Some(other) = backing_names.insert(&b.name, bp.clone()) {
                    err(
                        format!("{bp}.name"),
                        format!("duplicate backing device name {:?} (also {other})", b.name),
                    );
                }
                match check_devargs(&b.devargs) {
                    Ok(()) => {
                        let dev = device_name(&b.devargs).to_string();
                        if let Some(other) = devices.insert(dev.clone(), bp.clone()) {
                            err(
                                format!("{bp}.devargs"),
                                format!("device {dev:?} already backs {other}"),
                            );
                        }
                    }
                    Err(m) => err(format!("{bp}.devargs"), m),
                }
                if !(1..=100).contains(&b.priority) {
                    err(
                        format!("{bp}.priority"),
                        format!("{} out of range 1..=100", b.priority),
                    );
                }
                if b.port_label.is_empty() {
                    err(format!("{bp}.port_label"), "must not be empty".into());
                } else if let Some(j) = labels.insert(&b.port_label, k) {
                    err(
                        format!("{bp}.port_label"),
                        format!(
                            "physical port {:?} already used by {vp}.backing[{j}]: backing devices of one vNIC must be on different ports",
                            b.port_label
                        ),
                    );
                }
            }
        }
        // Spares for vNICs that move in: a spare in use is a backing device of exactly one
        // vNIC, with the same name and devargs; a free one is no backing device at all.
        let m = &self.mobility;
        let mut spare_names = HashSet::new();
        let mut spare_devs = HashSet::new();
        for (k, sp) in m.spares.iter().enumerate() {
            let sp_path = format!("mobility.spares[{k}]");
            if let Err(msg) = valid_name(&sp.name) {
                err(format!("{sp_path}.name"), msg);
            }
            if !spare_names.insert(sp.name.as_str()) {
                err(
                    format!("{sp_path}.name"),
                    format!("duplicate spare name {:?}", sp.name),
                );
            }
            match check_devargs(&sp.devargs) {
                Ok(()) => {
                    let dev = device_name(&sp.devargs).to_string();
                    if !spare_devs.insert(dev.clone()) {
                        err(
                            format!("{sp_path}.devargs"),
                            format!("device {dev:?} is listed twice among the spares"),
                        );
                    }
                    let users: Vec<(&str, &BackingConfig)> = self
                        .vnics
                        .iter()
                        .enumerate()
                        .flat_map(|(i, v)| v.backing.iter().map(move |b| (i, b)))
                        .filter(|(_, b)| device_name(&b.devargs) == dev || b.name == sp.name)
                        .map(|(i, b)| (self.vnics[i].name.as_str(), b))
                        .collect();
                    for (vnic, b) in &users {
                        if b.name != sp.name || b.devargs != sp.devargs {
                            err(
                                sp_path.clone(),
                                format!(
                                    "spare {:?} ({dev}) clashes with backing device {:?} of vNIC {vnic:?}: a spare must not be a configured backing device",
                                    sp.name, b.name
                                ),
                            );
                        }
                    }
                }
                Err(msg) => err(format!("{sp_path}.devargs"), msg),
            }
            if sp.port_label.is_empty() {
                err(format!("{sp_path}.port_label"), "must not be empty".into());
            }
        }
        if let Some(dir) = &m.socket_dir {
            // The longest name a socket here gets: `<dir>/<16-character vNIC>.memif`.
            let longest = format!("{dir}/{}.memif", "x".repeat(MAX_NAME));
            if let Err(msg) = check_socket_path(&longest) {
                err(
                    "mobility.socket_dir".into(),
                    format!("{dir:?} cannot hold vNIC sockets: {msg}"),
                );
            }
        }
        if !(100..=600_000).contains(&m.arrive_timeout_ms) {
            err(
                "mobility.arrive_timeout_ms".into(),
                format!("{} out of range 100..=600000", m.arrive_timeout_ms),
            );
        }
        if errs.is_empty() {
            Ok(Config {
                raw: self,
                macs,
                vnic_cores,
            })
        } else {
            Err(ConfigErrors(errs))
        }
    }
}

/// A client socket path: absolute, fits a `sun_path` (107 bytes), and usable in devargs.
pub fn check_socket_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} must be an absolute path"));
    }
    if p.len() > 107 {
        return Err(format!(
            "{} bytes, a unix socket path has at most 107",
            p.len()
        ));
    }
    if p.ends_with('/') {
        return Err(format!("{p:?} names a directory"));
    }
    if p.contains(',') || p.contains('=') || p.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!(
            "{p:?} must not contain commas, '=', spaces or control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn pci_addresses() {
        assert!(is_pci_address("0000:03:00.1"));
        assert!(is_pci_address("03:00.1"));
        assert!(is_pci_address("0000:af:10.7,txq_inline=0"));
        assert!(!is_pci_address("net_memif0,role=client"));
        assert!(!is_pci_address("0000:03:00.8"));
        assert!(!is_pci_address("0000:3:00.1"));
        assert!(!is_pci_address("net_tap0,iface=a:b.c"));
        assert_eq!(
            device_name("net_memif0,role=client,socket=/x"),
            "net_memif0"
        );
    }
}
