//! The EAL: one per process. [`EalOptions`] → argv is a pure function ([`eal_args`]) so it can be
//! unit-tested without DPDK; [`Eal::init`] runs `rte_eal_init` once and `rte_eal_cleanup` on drop.
use crate::error::{check, Error, Result};
use std::ffi::{c_char, CString};
use std::sync::atomic::{AtomicBool, Ordering};

/// How the EAL gets its memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Memory {
    /// Hugepages with no files left behind (`--in-memory`). Single process only.
    HugeInMemory,
    /// Hugepages shared under a file prefix, so DPDK secondary processes (clients) can attach.
    HugeShared { file_prefix: String },
    /// Plain anonymous memory: `--no-huge -m MB --no-shconf` (works everywhere, slower TLB).
    NoHuge,
}

/// Everything vnicd decides about the EAL command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EalOptions {
    /// Program name for argv[0].
    pub program: String,
    /// CPU cores the EAL may use as lcores (lcore id = cpu id).
    pub cores: Vec<u32>,
    /// The core of the main lcore (the control thread).
    pub main_core: u32,
    /// Memory to reserve, in MiB.
    pub memory_mb: u32,
    /// Memory mode.
    pub memory: Memory,
    /// PCI devices to probe at init (backing devices that are real VFs). Empty means `--no-pci`.
    pub pci_allow: Vec<String>,
    /// EAL log level (0..=8).
    pub log_level: u32,
    /// Extra arguments appended verbatim (operator escape hatch).
    pub extra: Vec<String>,
}

impl Default for EalOptions {
    fn default() -> Self {
        EalOptions {
            program: "vnicd".into(),
            cores: vec![0],
            main_core: 0,
            memory_mb: 512,
            memory: Memory::NoHuge,
            pci_allow: vec![],
            log_level: 5,
            extra: vec![],
        }
    }
}

/// Map options to the EAL argv. Pure: no DPDK call, no I/O.
pub fn eal_args(o: &EalOptions) -> Vec<String> {
    let mut a = vec![o.program.clone()];
    let mut cores = o.cores.clone();
    if !cores.contains(&o.main_core) {
        cores.push(o.main_core);
    }
    cores.sort_unstable();
    cores.dedup();
    let list: Vec<String> = cores.iter().map(u32::to_string).collect();
    a.push("-l".into());
    a.push(list.join(","));
    a.push("--main-lcore".into());
    a.push(o.main_core.to_string());
    match &o.memory {
        Memory::HugeInMemory => {
            a.push("--in-memory".into());
            a.push("-m".into());
            a.push(o.memory_mb.to_string());
        }
        Memory::HugeShared { file_prefix } => {
            a.push("--file-prefix".into());
            a.push(file_prefix.clone());
            a.push("-m".into());
            a.push(o.memory_mb.to_string());
        }
        Memory::NoHuge => {
            // `--in-memory` implies legacy-mem checks that `--no-huge` fails (DESIGN §8).
            a.push("--no-huge".into());
            a.push("-m".into());
            a.push(o.memory_mb.to_string());
            a.push("--no-shconf".into());
        }
    }
    if o.pci_allow.is_empty() {
        a.push("--no-pci".into());
    } else {
        for p in &o.pci_allow {
            a.push("-a".into());
            a.push(p.clone());
        }
    }
    if matches!(o.memory, Memory::HugeInMemory | Memory::NoHuge) {
        // No shared config: a telemetry socket would only collide between processes.
        a.push("--no-telemetry".into());
    }
    a.push(format!("--log-level={}", o.log_level));
    a.extend(o.extra.iter().cloned());
    a
}

/// Whether this host has free hugepages on a mounted hugetlbfs, from `/proc/meminfo` and
/// `/proc/mounts` text. Pure, so the fallback decision is testable.
pub fn hugepages_usable(meminfo: &str, mounts: &str) -> bool {
    let free = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let mounted = mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"));
    free > 0 && mounted
}

/// [`hugepages_usable`] on this host.
pub fn host_hugepages_usable() -> bool {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    hugepages_usable(&meminfo, &mounts)
}

static EAL_UP: AtomicBool = AtomicBool::new(false);

/// Proof that the EAL is initialised. Dropping it waits for all lcores and runs `rte_eal_cleanup`;
/// everything made from DPDK memory must be dropped before.
#[derive(Debug)]
pub struct Eal {
    args: Vec<String>,
}

impl Eal {
    /// Initialise the EAL with these arguments (argv[0] included).
    pub fn init(args: &[String]) -> Result<Eal> {
        if EAL_UP.swap(true, Ordering::SeqCst) {
            return Err(Error::EalAlreadyInitialised);
        }
        let cstrs: Vec<CString> = args
            .iter()
            .map(|s| crate::error::c_name("EAL argument", s, 4096))
            .collect::<Result<_>>()?;
        // rte_eal_init may permute argv and keep pointers into it for the life of the process,
        // so the strings are leaked on purpose (one init per process).
        let mut argv: Vec<*mut c_char> = cstrs.into_iter().map(CString::into_raw).collect();
        let argc = argv.len() as i32;
        argv.push(std::ptr::null_mut());
        let argv = Box::leak(argv.into_boxed_slice());
        // SAFETY: argv is a NUL-terminated array of valid, leaked C strings; single call per
        // process is guaranteed by EAL_UP.
        let ret = unsafe { dpdk_sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            return Err(Error::from_errno("rte_eal_init", args.join(" ")));
        }
        Ok(Eal {
            args: args.to_vec(),
        })
    }

    /// The arguments the EAL was started with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Number of lcores the EAL runs.
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: plain query after init.
        unsafe { dpdk_sys::rte_lcore_count() }
    }

    /// Lcore id of the main (control) lcore.
    pub fn main_lcore(&self) -> u32 {
        // SAFETY: plain query after init.
        unsafe { dpdk_sys::rte_get_main_lcore() }
    }

    /// Whether `lcore` is an enabled EAL lcore.
    pub fn lcore_enabled(&self, lcore: u32) -> bool {
        // SAFETY: plain query after init; out-of-range ids return 0.
        unsafe { dpdk_sys::rte_lcore_is_enabled(lcore) != 0 }
    }

    /// TSC frequency in Hz.
    pub fn tsc_hz(&self) -> u64 {
        tsc_hz()
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: waits for worker lcores to return, then releases EAL resources; all DPDK
        // objects are owned by values that borrow nothing from here and were dropped before.
        unsafe {
            dpdk_sys::rte_eal_mp_wait_lcore();
            let ret = dpdk_sys::rte_eal_cleanup();
            if let Err(e) = check("rte_eal_cleanup", String::new, ret) {
                tracing::warn!("{e}");
            }
        }
        // A shared-memory primary leaves its hugepage files (which keep the pages allocated) and
        // runtime directory behind; a secondary must not touch them.
        let secondary = self.args.iter().any(|a| a.starts_with("--proc-type"));
        if let (Some(prefix), false) = (file_prefix(&self.args), secondary) {
            let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
            remove_shared_files(
                &prefix,
                &hugetlbfs_dirs(&mounts),
                std::path::Path::new("/var/run/dpdk"),
            );
        }
    }
}

fn file_prefix(args: &[String]) -> Option<String> {
    let i = args.iter().position(|a| a == "--file-prefix")?;
    args.get(i + 1).cloned()
}

/// Mount points of hugetlbfs in `/proc/mounts` text.
pub fn hugetlbfs_dirs(mounts: &str) -> Vec<std::path::PathBuf> {
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"hugetlbfs")).then(|| std::path::PathBuf::from(f[1]))
        })
        .collect()
}

/// Remove `<prefix>map_<n>` hugepage files and the `<prefix>` runtime directory. Returns the
/// number of hugepage files removed.
pub fn remove_shared_files(
    prefix: &str,
    huge_dirs: &[std::path::PathBuf],
    run_dir: &std::path::Path,
) -> usize {
    let mut n = 0;
    let stem = format!("{prefix}map_");
    for d in huge_dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let is_ours = name
                .strip_prefix(&stem)
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()));
            if is_ours && std::fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
    }
    if !prefix.is_empty() && !prefix.contains('/') && !prefix.contains("..") {
        let _ = std::fs::remove_dir_all(run_dir.join(prefix));
    }
    n
}

/// TSC frequency in Hz (valid after EAL init).
pub fn tsc_hz() -> u64 {
    // SAFETY: reads a value computed at EAL init.
    unsafe { dpdk_sys::vnic_rte_get_tsc_hz() }
}

/// Current TSC.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // Inline instruction rather than a shim call: the poll loop reads it every iteration.
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rdtsc has no preconditions on x86_64.
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: rte_rdtsc has no preconditions.
    unsafe {
        dpdk_sys::vnic_rte_rdtsc()
    }
}

/// The DPDK version string of the linked library.
pub fn dpdk_version() -> &'static str {
    dpdk_sys::DPDK_VERSION
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(memory: Memory) -> EalOptions {
        EalOptions {
            cores: vec![1, 0],
            main_core: 0,
            memory_mb: 256,
            memory,
            ..Default::default()
        }
    }

    #[test]
    fn no_huge_maps_to_no_huge_no_shconf_and_never_in_memory() {
        let a = eal_args(&opts(Memory::NoHuge));
        assert_eq!(
            a,
            [
                "vnicd",
                "-l",
                "0,1",
                "--main-lcore",
                "0",
                "--no-huge",
                "-m",
                "256",
                "--no-shconf",
                "--no-pci",
                "--no-telemetry",
                "--log-level=5"
            ]
        );
        assert!(!a.iter().any(|s| s == "--in-memory"));
    }

    #[test]
    fn hugepages_in_memory() {
        let a = eal_args(&opts(Memory::HugeInMemory));
        assert_eq!(a[5..8], ["--in-memory", "-m", "256"]);
        assert!(!a.iter().any(|s| s == "--no-huge"));
    }

    #[test]
    fn shared_hugepages_use_file_prefix_and_keep_telemetry() {
        let a = eal_args(&opts(Memory::HugeShared {
            file_prefix: "vnicd-a".into(),
        }));
        assert_eq!(a[5..7], ["--file-prefix", "vnicd-a"]);
        assert!(!a
            .iter()
            .any(|s| s == "--no-telemetry" || s == "--in-memory"));
    }

    #[test]
    fn main_core_is_added_to_the_core_list() {
        let mut o = opts(Memory::NoHuge);
        o.cores = vec![3];
        o.main_core = 2;
        let a = eal_args(&o);
        assert_eq!(a[1..5], ["-l", "2,3", "--main-lcore", "2"]);
    }

    #[test]
    fn pci_devices_are_allow_listed_instead_of_no_pci() {
        let mut o = opts(Memory::NoHuge);
        o.pci_allow = vec!["0000:03:00.1".into(), "0000:03:00.2".into()];
        let a = eal_args(&o);
        assert!(!a.iter().any(|s| s == "--no-pci"));
        let joined = a.join(" ");
        assert!(
            joined.contains("-a 0000:03:00.1 -a 0000:03:00.2"),
            "{joined}"
        );
    }

    #[test]
    fn extra_args_come_last_and_log_level_is_set() {
        let mut o = opts(Memory::NoHuge);
        o.extra = vec!["--vdev".into(), "net_null0".into()];
        o.log_level = 8;
        let a = eal_args(&o);
        assert_eq!(a[a.len() - 3..], ["--log-level=8", "--vdev", "net_null0"]);
    }

    #[test]
    fn shared_memory_files_of_one_prefix_are_removed_and_nothing_else() {
        let base = std::env::temp_dir().join(format!("vnic-eal-files-{}", std::process::id()));
        let huge = base.join("huge");
        let run = base.join("run");
        std::fs::create_dir_all(&huge).unwrap();
        std::fs::create_dir_all(run.join("vp")).unwrap();
        std::fs::create_dir_all(run.join("other")).unwrap();
        for f in ["vpmap_0", "vpmap_17", "vpmap_x", "vp2map_0", "othermap_1"] {
            std::fs::write(huge.join(f), b"").unwrap();
        }
        std::fs::write(run.join("vp").join("config"), b"").unwrap();
        assert_eq!(
            remove_shared_files("vp", std::slice::from_ref(&huge), &run),
            2
        );
        let mut left: Vec<String> = std::fs::read_dir(&huge)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["othermap_1", "vp2map_0", "vpmap_x"]);
        assert!(!run.join("vp").exists());
        assert!(run.join("other").exists());
        let mounts = "nodev /dev/hugepages hugetlbfs rw 0 0\nnodev /mnt/huge1G hugetlbfs rw,pagesize=1G 0 0\nproc /proc proc rw 0 0\n";
        assert_eq!(
            hugetlbfs_dirs(mounts),
            [
                std::path::PathBuf::from("/dev/hugepages"),
                std::path::PathBuf::from("/mnt/huge1G")
            ]
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn hugepage_detection() {
        let mounts_ok = "nodev /dev/hugepages hugetlbfs rw,relatime 0 0\n";
        let mounts_none = "proc /proc proc rw 0 0\n";
        let free = "HugePages_Total:    1024\nHugePages_Free:     1000\n";
        let none = "HugePages_Total:       0\nHugePages_Free:        0\n";
        assert!(hugepages_usable(free, mounts_ok));
        assert!(!hugepages_usable(free, mounts_none));
        assert!(!hugepages_usable(none, mounts_ok));
        assert!(!hugepages_usable("", ""));
    }
}
