//! `vnicd --preflight`: what a config needs from this host, checked before anything starts —
//! hugepages and their mount, the DPDK drivers its devices use, the IOMMU, VFIO and each PCI
//! backing device's driver and group, the configured CPUs (and whether data cores are
//! isolated), socket directories, the port limit of this DPDK build, privileges and memlock.
//! Every check that is not fine says the command that fixes it. Reads the host, changes nothing.
use crate::config::{ClientConfig, Config, Hugepages, MetricsListen};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ok,
    /// vnicd runs, but not as it should in production.
    Warn,
    /// vnicd will not start, or a device will not come up.
    Fail,
}

impl State {
    pub fn word(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Warn => "WARN",
            State::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub state: State,
    pub detail: String,
    /// The command (or edit) that fixes it, when it is not fine.
    pub fix: Option<String>,
}

fn check(
    name: impl Into<String>,
    state: State,
    detail: impl Into<String>,
    fix: Option<String>,
) -> Check {
    Check {
        name: name.into(),
        state,
        detail: detail.into(),
        fix,
    }
}

fn read(p: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Every check that applies to `cfg` on this host.
pub fn run(cfg: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    ports(cfg, &mut out);
    hugepages(cfg, &mut out);
    cpus(cfg, &mut out);
    drivers(cfg, &mut out);
    pci(cfg, &mut out);
    sockets(cfg, &mut out);
    privileges(cfg, &mut out);
    out
}

/// Whether every check passed or only warned.
pub fn passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.state != State::Fail)
}

/// `preflight: 12 checks, 0 failed, 0 warnings`.
pub fn summary(checks: &[Check]) -> String {
    let n = |s: State| checks.iter().filter(|c| c.state == s).count();
    format!(
        "preflight: {} checks, {} failed, {} warnings",
        checks.len(),
        n(State::Fail),
        n(State::Warn)
    )
}

fn ports(cfg: &Config, out: &mut Vec<Check>) {
    out.push(match crate::eal_options::check_build_limits(cfg) {
        Ok(()) => check(
            "DPDK ports",
            State::Ok,
            format!("within RTE_MAX_ETHPORTS ({})", vnic_dataplane::MAX_PORTS),
            None,
        ),
        Err(e) => check(
            "DPDK ports",
            State::Fail,
            e.to_string(),
            Some("fewer backing devices (or memif clients) in the config".into()),
        ),
    });
}

/// (page size in kB, total pages, free pages) for each hugepage size of the host.
fn free_hugepages() -> Vec<(u64, u64, u64)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/sys/kernel/mm/hugepages")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(kb) = name
            .strip_prefix("hugepages-")
            .and_then(|s| s.strip_suffix("kB"))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let n = |f: &str| {
            read(e.path().join(f))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        v.push((kb, n("nr_hugepages"), n("free_hugepages")));
    }
    v.sort();
    v
}

fn hugepages(cfg: &Config, out: &mut Vec<Check>) {
    let e = &cfg.raw().eal;
    if e.hugepages == Hugepages::Off {
        out.push(check(
            "hugepages",
            State::Ok,
            "not used (eal.hugepages \"off\")",
            None,
        ));
        return;
    }
    let need = e.memory_mb as u64;
    let pages = free_hugepages();
    let free_mb: u64 = pages.iter().map(|(kb, _, n)| kb * n / 1024).sum();
    let in_use_mb: u64 = pages
        .iter()
        .map(|(kb, t, n)| kb * (t - n.min(t)) / 1024)
        .sum();
    let shown = pages
        .iter()
        .filter(|(_, _, n)| *n > 0)
        .map(|(kb, _, n)| format!("{n} × {} MB", kb / 1024))
        .collect::<Vec<_>>()
        .join(" + ");
    let mounted = read("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"));
    // Without hugepages, "auto" runs on ordinary memory (only in-core clients then: shm
    // clients need shared hugepage memory), "on" does not start.
    let needed = e.hugepages == Hugepages::On;
    let short = if needed { State::Fail } else { State::Warn };
    // Reserve what others hold plus what vnicd needs.
    let fix = format!(
        "dpdk-hugepages.py --pagesize 2M --setup {}M (or deploy/hugepages.sh; at boot: hugepages= on the kernel command line)",
        (in_use_mb + need).next_multiple_of(2)
    );
    out.push(if free_mb >= need {
        check(
            "hugepages",
            State::Ok,
            format!("{free_mb} MB free ({shown}), eal.memory_mb needs {need}"),
            None,
        )
    } else {
        check(
            "hugepages",
            short,
            format!(
                "{free_mb} MB free{}, eal.memory_mb needs {need}{}",
                if shown.is_empty() {
                    String::new()
                } else {
                    format!(" ({shown})")
                },
                match (needed, e.file_prefix.is_some()) {
                    (true, _) => "",
                    (false, true) =>
                        ": vnicd would run without them, and shm clients could not attach",
                    (false, false) => ": vnicd would run without them",
                }
            ),
            Some(fix),
        )
    });
    out.push(if mounted {
        check("hugetlbfs", State::Ok, "mounted", None)
    } else {
        check(
            "hugetlbfs",
            short,
            "no hugetlbfs mounted",
            Some("dpdk-hugepages.py --mount (mount -t hugetlbfs nodev /dev/hugepages)".into()),
        )
    });
}

/// A CPU list as the kernel writes it (`0-3,8,10-11`).
fn cpu_list(s: &str) -> BTreeSet<u32> {
    let mut v = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
            v.extend(a..=b);
        }
    }
    v
}

fn cpus(cfg: &Config, out: &mut Vec<Check>) {
    let online = cpu_list(&read("/sys/devices/system/cpu/online").unwrap_or_default());
    let allowed: BTreeSet<u32> = read("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(cpu_list)
        .unwrap_or_else(|| online.clone());
    let want = &cfg.raw().eal.cores;
    let missing: Vec<u32> = want
        .iter()
        .copied()
        .filter(|c| !online.contains(c) || !allowed.contains(c))
        .collect();
    let have = allowed
        .intersection(&online)
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    out.push(if missing.is_empty() {
        check(
            "CPUs",
            State::Ok,
            format!("eal.cores {want:?} online and allowed"),
            None,
        )
    } else {
        check(
            "CPUs",
            State::Fail,
            format!("eal.cores {missing:?} not online or not allowed to vnicd (it may use {have})"),
            Some(format!(
                "set eal.cores and data_cores[].core to CPUs of {have}"
            )),
        )
    });
    let isolated = cpu_list(&read("/sys/devices/system/cpu/isolated").unwrap_or_default());
    for d in &cfg.raw().data_cores {
        if missing.contains(&d.core) {
            continue;
        }
        let name = format!("data core {}", d.core);
        out.push(if isolated.contains(&d.core) {
            check(name, State::Ok, "isolated", None)
        } else if d.idle_sleep_us > 0 {
            check(
                name,
                State::Ok,
                format!("not isolated; shares its CPU by design (idle_sleep_us {})", d.idle_sleep_us),
                None,
            )
        } else {
            check(
                name,
                State::Warn,
                "not isolated: other tasks can preempt the busy-polling core (latency spikes, drops)",
                Some(format!(
                    "isolcpus={c} nohz_full={c} rcu_nocbs={c} on the kernel command line (GRUB_CMDLINE_LINUX), then reboot",
                    c = d.core
                )),
            )
        });
    }
}

/// The DPDK driver plugins directory (Debian: `<libdir>/dpdk/pmds-<ABI>`).
fn pmd_dirs() -> Vec<PathBuf> {
    let base = Path::new(vnic_dataplane::DPDK_LIBDIR).join("dpdk");
    std::fs::read_dir(&base)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("pmds-"))
        })
        .collect()
}

fn drivers(cfg: &Config, out: &mut Vec<Check>) {
    let mut want = BTreeSet::new();
    for v in cfg.vnics() {
        for b in &v.backing {
            if !crate::config::is_pci_address(&b.devargs) {
                let dev = crate::config::device_name(&b.devargs);
                let drv = dev.trim_end_matches(|c: char| c.is_ascii_digit());
                want.insert(drv.to_string());
            }
        }
        if matches!(v.client, ClientConfig::Memif { .. }) {
            want.insert("net_memif".to_string());
        }
    }
    let dirs = pmd_dirs();
    for drv in want {
        let lib = format!("librte_{drv}.so");
        let found = dirs.iter().map(|d| d.join(&lib)).find(|p| p.exists());
        out.push(match found {
            Some(p) => check(
                format!("driver {drv}"),
                State::Ok,
                p.display().to_string(),
                None,
            ),
            None => check(
                format!("driver {drv}"),
                State::Fail,
                format!(
                    "{lib} not found in {}",
                    if dirs.is_empty() {
                        format!("{}/dpdk/pmds-*", vnic_dataplane::DPDK_LIBDIR)
                    } else {
                        dirs.iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
                Some(format!(
                    "apt-get install librte-{}23 (or dpdk, which brings every driver)",
                    drv.replace('_', "-")
                )),
            ),
        });
    }
}

/// The config's PCI backing devices: (address, the field that names it).
fn pci_devices(cfg: &Config) -> Vec<(String, String)> {
    cfg.raw()
        .vnics
        .iter()
        .enumerate()
        .flat_map(|(i, v)| {
            v.backing
                .iter()
                .enumerate()
                .filter(|(_, b)| crate::config::is_pci_address(&b.devargs))
                .map(move |(j, b)| {
                    (
                        crate::config::device_name(&b.devargs).to_string(),
                        format!("vnics[{i}].backing[{j}].devargs"),
                    )
                })
        })
        .collect()
}

fn pci(cfg: &Config, out: &mut Vec<Check>) {
    let devs = pci_devices(cfg);
    if devs.is_empty() {
        return;
    }
    let groups = std::fs::read_dir("/sys/kernel/iommu_groups")
        .map(|d| d.count())
        .unwrap_or(0);
    out.push(if groups > 0 {
        check("IOMMU", State::Ok, format!("{groups} IOMMU groups"), None)
    } else {
        check(
            "IOMMU",
            State::Fail,
            "no IOMMU groups: the IOMMU is off, VFIO cannot map VFs",
            Some("enable VT-d/AMD-Vi in the firmware and add intel_iommu=on iommu=pt (AMD: amd_iommu=on iommu=pt) to the kernel command line".into()),
        )
    });
    let vfio = Path::new("/dev/vfio/vfio").exists();
    out.push(if vfio {
        check("/dev/vfio", State::Ok, "present", None)
    } else {
        check(
            "/dev/vfio",
            State::Fail,
            "missing: the vfio-pci module is not loaded",
            Some("modprobe vfio-pci (and add vfio-pci to /etc/modules-load.d/)".into()),
        )
    });
    for (addr, field) in devs {
        let sys = Path::new("/sys/bus/pci/devices").join(&addr);
        let name = format!("PCI {addr}");
        if !sys.exists() {
            out.push(check(
                name,
                State::Fail,
                format!("{field}: no such PCI device"),
                Some(format!("lspci -D lists this host's PCI addresses; correct {field} (VFs: vnicd-vfs@PF.service creates them)")),
            ));
            continue;
        }
        let link_name = |p: PathBuf| {
            std::fs::read_link(p)
                .ok()
                .and_then(|l| l.file_name().map(|n| n.to_string_lossy().to_string()))
        };
        let driver = link_name(sys.join("driver"));
        let group = link_name(sys.join("iommu_group"));
        out.push(match (&driver, &group) {
            (Some(d), Some(g)) if d == "vfio-pci" && Path::new("/dev/vfio").join(g).exists() => {
                check(name, State::Ok, format!("vfio-pci, IOMMU group {g}"), None)
            }
            (Some(d), Some(g)) if d == "vfio-pci" => check(
                name,
                State::Fail,
                format!("vfio-pci, but /dev/vfio/{g} is missing"),
                Some("modprobe vfio-pci; check dmesg for VFIO errors".into()),
            ),
            _ => check(
                name,
                State::Fail,
                format!(
                    "driver {}, IOMMU group {}: DPDK needs it on vfio-pci",
                    driver.as_deref().unwrap_or("none"),
                    group.as_deref().unwrap_or("none")
                ),
                Some(format!(
                    "driverctl set-override {addr} vfio-pci (or vnicd-vfs@PF.service)"
                )),
            ),
        });
    }
}

fn sockets(cfg: &Config, out: &mut Vec<Check>) {
    let raw = cfg.raw();
    // vnicd makes the directories of its own two sockets; the others must exist.
    for (what, p) in [
        ("control socket", &raw.control_socket),
        ("admin socket", &raw.admin_socket),
    ] {
        let dir = p.parent().unwrap_or(Path::new("/"));
        let ancestor = dir.ancestors().find(|a| a.exists());
        out.push(match ancestor {
            Some(a) if a == dir => {
                check(what, State::Ok, format!("{} exists", dir.display()), None)
            }
            Some(a) if nix::unistd::access(a, nix::unistd::AccessFlags::W_OK).is_ok() => check(
                what,
                State::Ok,
                format!("{} will be created", dir.display()),
                None,
            ),
            _ => check(
                what,
                State::Fail,
                format!("{} cannot be created", dir.display()),
                Some(format!(
                    "mkdir -p {} (the package's tmpfiles.d makes /run/vnicd)",
                    dir.display()
                )),
            ),
        });
    }
    let mut dirs: Vec<(String, PathBuf)> = Vec::new();
    for (i, v) in raw.vnics.iter().enumerate() {
        if let Some(s) = crate::vnic::endpoint::listens(&v.client) {
            dirs.push((format!("vnics[{i}].client.socket"), PathBuf::from(s)));
        }
    }
    if let Some(d) = &raw.mobility.socket_dir {
        dirs.push(("mobility.socket_dir".into(), PathBuf::from(d).join("x")));
    }
    if let Some(Ok(MetricsListen::Unix(p))) = raw.metrics.as_ref().map(|m| m.parse_listen()) {
        dirs.push(("metrics.listen".into(), p));
    }
    let own: Vec<&Path> = [&raw.control_socket, &raw.admin_socket]
        .iter()
        .filter_map(|p| p.parent())
        .collect();
    for (field, p) in dirs {
        let dir = p.parent().unwrap_or(Path::new("/"));
        out.push(if dir.is_dir() {
            check(
                format!("{field} directory"),
                State::Ok,
                format!("{} exists", dir.display()),
                None,
            )
        } else if own.contains(&dir) {
            check(
                format!("{field} directory"),
                State::Ok,
                format!(
                    "{} will be created (vnicd's own socket directory)",
                    dir.display()
                ),
                None,
            )
        } else {
            check(
                format!("{field} directory"),
                State::Fail,
                format!("{} does not exist", dir.display()),
                Some(format!("mkdir -p {}", dir.display())),
            )
        });
    }
}

fn privileges(cfg: &Config, out: &mut Vec<Check>) {
    let root = nix::unistd::geteuid().is_root();
    out.push(if root {
        check("privileges", State::Ok, "root", None)
    } else {
        check(
            "privileges",
            State::Warn,
            "not root: hugepages, VFIO and /run/vnicd need root (or CAP_IPC_LOCK, CAP_SYS_ADMIN and the right file modes)",
            Some("run vnicd as root (the packaged unit does)".into()),
        )
    });
    let pci = !pci_devices(cfg).is_empty();
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    let (soft, _) = getrlimit(Resource::RLIMIT_MEMLOCK).unwrap_or((0, 0));
    let need = cfg.raw().eal.memory_mb as u64 * 1024 * 1024;
    // VFIO charges DMA mappings to RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK (root).
    out.push(if soft == RLIM_INFINITY || soft >= need || root {
        check(
            "memlock",
            State::Ok,
            match (soft == RLIM_INFINITY, root) {
                (true, _) => "unlimited".to_string(),
                (false, true) => format!(
                    "{} MB, but root (CAP_IPC_LOCK): the limit does not apply",
                    soft / (1024 * 1024)
                ),
                (false, false) => format!("{} MB", soft / (1024 * 1024)),
            },
            None,
        )
    } else {
        check(
            "memlock",
            if pci { State::Fail } else { State::Warn },
            format!(
                "{} MB locked memory allowed, eal.memory_mb is {}: VFIO DMA mapping fails beyond it",
                soft / (1024 * 1024),
                cfg.raw().eal.memory_mb
            ),
            Some("LimitMEMLOCK=infinity in the unit (the packaged one has it), or ulimit -l unlimited".into()),
        )
    });
}

/// The report as a table (check, state, detail, fix); wrapped to a terminal's width, one line
/// per check into a pipe or file.
pub fn table(checks: &[Check]) -> String {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
        .set_header(["check", "state", "detail", "fix"]);
    for c in checks {
        t.add_row([
            c.name.as_str(),
            c.state.word(),
            c.detail.as_str(),
            c.fix.as_deref().unwrap_or(""),
        ]);
    }
    t.to_string()
}
