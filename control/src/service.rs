//! The service manager's side (`sd_notify`, `Type=notify`): `READY=1` once vnicd serves,
//! `RELOADING=1` … `READY=1` around a reload, `STOPPING=1`, a one-line `STATUS=`, and the
//! watchdog served from the control thread's loop (a wedged control thread stops pinging).
//! Without `NOTIFY_SOCKET` every call is a no-op.
use std::time::{Duration, Instant};
use vnic_proto::status::Status;

use sd_notify::NotifyState;

/// How often the status line is refreshed while running.
const STATUS_EVERY: Duration = Duration::from_secs(5);

pub struct Notifier {
    watchdog: Option<Duration>,
    last_ping: Instant,
    last_status: Instant,
}

impl Notifier {
    /// A notifier when the service manager asked for one (`NOTIFY_SOCKET` set).
    pub fn from_env() -> Option<Notifier> {
        std::env::var_os("NOTIFY_SOCKET")?;
        Some(Notifier {
            watchdog: sd_notify::watchdog_enabled(),
            last_ping: Instant::now(),
            last_status: Instant::now(),
        })
    }

    fn send(&self, st: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(st) {
            tracing::warn!("sd_notify: {e}");
        }
    }

    /// Serving: EAL up, devices started, sockets listening.
    pub fn ready(&mut self, s: &Status) {
        let line = summary(s);
        self.send(&[NotifyState::Ready, NotifyState::Status(&line)]);
        self.last_status = Instant::now();
    }

    /// A reload starts (`ready` ends it, whatever its result).
    pub fn reloading(&self, source: &str) {
        let line = format!("reloading ({source})");
        self.send(&[NotifyState::Reloading, NotifyState::Status(&line)]);
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// Every control-thread turn: the watchdog ping (at half its interval) and, now and then,
    /// the status line. `status` is called only when a line is due.
    pub fn tick(&mut self, status: impl FnOnce() -> Status) {
        if let Some(w) = self.watchdog {
            if self.last_ping.elapsed() >= w / 2 {
                self.send(&[NotifyState::Watchdog]);
                self.last_ping = Instant::now();
            }
        }
        if self.last_status.elapsed() >= STATUS_EVERY {
            let line = summary(&status());
            self.send(&[NotifyState::Status(&line)]);
            self.last_status = Instant::now();
        }
    }
}

/// `3 vNICs (2 attached, 3 links up), 1 data core, config generation 4`.
pub fn summary(s: &Status) -> String {
    let attached = s.vnics.iter().filter(|v| v.state == "attached").count();
    let up = s.vnics.iter().filter(|v| v.link_up).count();
    format!(
        "{} vNICs ({attached} attached, {up} links up), {} data cores, config generation {}",
        s.vnics.len(),
        s.cores.len(),
        s.config_generation
    )
}
