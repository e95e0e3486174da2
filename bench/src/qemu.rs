//! A QEMU guest on a vhost-user socket for the tests and the benchmark: the guest built by
//! `deploy/guest/build.sh` (Debian's kernel and busybox), QEMU 7.2 with TCG (no nested KVM
//! here), its HMP monitor on a unix socket for live migration.
use crate::procs::Guard;
use crate::vnicd::Res;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Build (or find built) the test guest under `<root>/target/vm-guest`.
pub fn guest(root: &Path) -> Res<PathBuf> {
    let out = root.join("target/vm-guest");
    let st = Command::new(root.join("deploy/guest/build.sh"))
        .arg(&out)
        .status()?;
    if !st.success() {
        return Err(format!("the guest could not be built: {st}").into());
    }
    Ok(out)
}

/// A running QEMU.
pub struct Vm {
    pub guard: Guard,
    console: Receiver<String>,
    pub mon: PathBuf,
}

/// Start QEMU on vhost-user socket `sock` (its NIC with `mac`, the guest on `ip`, e.g.
/// `10.77.0.2/24`), its monitor on `mon`; with `incoming`, waiting for a migration on that TCP
/// port of 127.0.0.1.
pub fn start(
    guest: &Path,
    sock: &str,
    mon: &Path,
    mac: &str,
    ip: &str,
    incoming: Option<u16>,
) -> Res<Vm> {
    let mut q = Command::new("qemu-system-x86_64");
    q.args(["-machine", "q35,accel=tcg", "-smp", "1", "-m", "256"])
        .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on"])
        .args(["-numa", "node,memdev=mem"])
        .args(["-chardev", &format!("socket,id=c0,path={sock}")])
        .args(["-netdev", "vhost-user,id=n0,chardev=c0"])
        // vectors=0: QEMU 7.2 crashes under TCG with MSI-X on vhost-user. guest_announce=off:
        // the destination backend gets VHOST_USER_SEND_RARP (and announces for the guest).
        .args([
            "-device",
            &format!("virtio-net-pci,netdev=n0,mac={mac},vectors=0,guest_announce=off"),
        ])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .args([
            "-monitor",
            &format!("unix:{},server=on,wait=off", mon.display()),
        ])
        .args(["-kernel", &guest.join("vmlinuz").display().to_string()])
        .args(["-initrd", &guest.join("initrd.gz").display().to_string()])
        .args([
            "-append",
            &format!("console=ttyS0 quiet panic=-1 vnic.ip={ip}"),
        ]);
    if let Some(port) = incoming {
        q.args(["-incoming", &format!("tcp:127.0.0.1:{port}")]);
    }
    q.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut guard = Guard::new(
        "qemu",
        q.spawn()
            .map_err(|e| format!("qemu-system-x86_64 (make deps): {e}"))?,
    );
    let out = guard
        .child
        .as_mut()
        .and_then(|c| c.stdout.take())
        .ok_or("qemu's console")?;
    let (tx, console) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    Ok(Vm {
        guard,
        console,
        mon: mon.to_path_buf(),
    })
}

impl Vm {
    /// Wait for the guest's ready marker on its console; the marker's line (it names the
    /// guest's MAC and address). A failure quotes the console's last lines.
    pub fn wait_ready(&mut self, timeout: Duration) -> Res<String> {
        let end = Instant::now() + timeout;
        let mut seen: Vec<String> = Vec::new();
        loop {
            if let Ok(l) = self.console.recv_timeout(Duration::from_secs(1)) {
                if l.contains("VNIC-GUEST-READY") {
                    return Ok(l);
                }
                seen.push(l);
            }
            let last = || seen[seen.len().saturating_sub(20)..].join("\n");
            if !self.guard.running() {
                return Err(format!("qemu exited; console:\n{}", last()).into());
            }
            if Instant::now() > end {
                return Err(format!("guest not up after {timeout:?}; console:\n{}", last()).into());
            }
        }
    }
}

/// One HMP command on monitor `mon`; its output up to the next prompt.
pub fn hmp(mon: &Path, cmd: &str) -> Res<String> {
    let end = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match std::os::unix::net::UnixStream::connect(mon) {
            Ok(s) => break s,
            Err(e) if Instant::now() > end => {
                return Err(format!("monitor {}: {e}", mon.display()).into())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut out = String::new();
    let mut buf = [0u8; 4096];
    let mut sent = false;
    // The banner and a prompt, then the command's output and the next prompt.
    while out.matches("(qemu)").count() < 2 {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&String::from_utf8_lossy(&buf[..n]));
        if !sent && out.contains("(qemu)") {
            s.write_all(format!("{cmd}\n").as_bytes())?;
            sent = true;
        }
    }
    Ok(out)
}

/// Live-migrate the QEMU on `src_mon` to the one waiting on `port` (its monitor `dst_mon`);
/// QEMU's reported downtime, ms.
pub fn migrate(src_mon: &Path, dst_mon: &Path, port: u16) -> Res<u64> {
    // The destination listens once its monitor says it waits for the migration.
    let st = hmp(dst_mon, "info status")?;
    if !st.contains("inmigrate") {
        return Err(format!("the destination QEMU is not waiting: {st}").into());
    }
    let r = hmp(src_mon, &format!("migrate -d tcp:127.0.0.1:{port}"))?;
    if r.contains("rror") {
        return Err(format!("migrate: {r}").into());
    }
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let i = hmp(src_mon, "info migrate")?;
        if i.contains("Migration status: completed") {
            return Ok(i
                .lines()
                .find_map(|l| l.trim().strip_prefix("downtime:"))
                .and_then(|v| v.trim().trim_end_matches("ms").trim().parse().ok())
                .unwrap_or(0));
        }
        if i.contains("Migration status: failed") || Instant::now() > end {
            return Err(format!("migration: {i}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// From busybox ping's output: (transmitted, received, longest run of unanswered pings).
pub fn ping_stats(text: &str) -> (u64, u64, u64) {
    let stats = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or("");
    let nums: Vec<u64> = stats
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|x| x.parse().ok())
        .collect();
    let seqs: Vec<u64> = text
        .lines()
        .filter_map(|l| {
            l.split("seq=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let gap = seqs
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]).saturating_sub(1))
        .max()
        .unwrap_or(0);
    (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
        gap,
    )
}
