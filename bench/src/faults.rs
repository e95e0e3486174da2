//! Faults the tests and benchmarks inject: holding one thread of another process still (the
//! control thread of a `vnicd`, to prove the data path fails over without it).
use crate::vnicd::Res;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

/// One thread of another process, stopped with ptrace (`PTRACE_SEIZE` + `PTRACE_INTERRUPT`:
/// only that thread stops, unlike SIGSTOP) by a small python3 helper that holds it until this
/// value is dropped. Its other threads (a data core, DPDK's interrupt thread) keep running.
pub struct Held {
    helper: Child,
}

const HELPER: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
tid = int(sys.argv[1])
def call(req, what):
    if libc.ptrace(req, tid, None, None) != 0:
        print("error", what, os.strerror(ctypes.get_errno()), flush=True); sys.exit(1)
call(0x4206, "PTRACE_SEIZE")
call(0x4207, "PTRACE_INTERRUPT")
os.waitpid(tid, 0x40000000)  # __WALL: the thread is in its ptrace stop
print("held", flush=True)
sys.stdin.readline()
call(17, "PTRACE_DETACH")
print("released", flush=True)
"#;

/// Stop thread `tid` (for a process's main thread, its pid) until the result is dropped.
pub fn hold_thread(tid: u32) -> Res<Held> {
    let mut helper = Command::new("python3")
        .args(["-c", HELPER, &tid.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    if let Some(out) = helper.stdout.as_mut() {
        BufReader::new(out).read_line(&mut line)?;
    }
    if line.trim() != "held" {
        let _ = helper.kill();
        let _ = helper.wait();
        return Err(format!("could not hold thread {tid}: {}", line.trim()).into());
    }
    Ok(Held { helper })
}

/// The state letter of a thread (`t`: stopped by a tracer), from /proc.
pub fn thread_state(pid: u32, tid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    s.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(mut i) = self.helper.stdin.take() {
            let _ = i.write_all(b"\n");
        }
        let _ = self.helper.wait();
    }
}
