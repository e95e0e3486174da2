//! Child processes the harness starts: tracked by PID, stopped on drop (SIGINT, then SIGKILL).
use std::process::Child;
use std::time::{Duration, Instant};

/// A child that is interrupted and reaped when dropped.
pub struct Guard {
    pub name: String,
    pub child: Option<Child>,
}

impl Guard {
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        Guard {
            name: name.into(),
            child: Some(child),
        }
    }
    /// PID of the child.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
    /// Send a signal.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // A PID we spawned and have not reaped yet, so it cannot have been recycled.
            let _ = nix_kill(c.id() as i32, sig);
        }
    }
    /// True while it runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
    /// Wait up to `t` for exit; returns the exit status if it exited.
    pub fn wait_timeout(&mut self, t: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + t;
        let c = self.child.as_mut()?;
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    /// SIGINT, wait `grace`, then SIGKILL; returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        if !self.running() {
            return self.child.as_mut().and_then(|c| c.wait().ok());
        }
        self.signal(libc::SIGINT);
        if let Some(s) = self.wait_timeout(grace) {
            return Some(s);
        }
        self.signal(libc::SIGKILL);
        self.child.as_mut().and_then(|c| c.wait().ok())
    }
}

fn nix_kill(pid: i32, sig: i32) -> std::io::Result<()> {
    let out = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

/// Read a child's pipe to the end on a thread; join it for the text.
pub fn collect<R: std::io::Read + Send + 'static>(
    pipe: Option<R>,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut s);
        }
        s
    })
}

impl Guard {
    /// Take the child's stdout and stderr (when piped) and collect each on a thread.
    pub fn collect_output(
        &mut self,
    ) -> (
        std::thread::JoinHandle<String>,
        std::thread::JoinHandle<String>,
    ) {
        let c = self.child.as_mut();
        let (out, err) = match c {
            Some(c) => (c.stdout.take(), c.stderr.take()),
            None => (None, None),
        };
        (collect(out), collect(err))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop(Duration::from_secs(3));
        }
    }
}
