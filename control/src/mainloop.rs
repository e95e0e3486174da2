//! The control thread's one loop, used by `vnicd` and by the in-process runner alike: requests
//! from the sockets, the health tick on its own clock, the appliance's events out to the clients,
//! heartbeats, and reloads asked for by SIGHUP or a change of the config file.
use crate::appliance::Appliance;
use crate::proto::ProtoError;
use crate::reload::Reload;
use crate::server::Server;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often health checks (and the arbiter) run, whatever the sockets are doing.
pub const HEALTH_TICK: Duration = Duration::from_millis(1);
/// Writes to the config file settle this long before a watch-triggered reload (an editor
/// writes in pieces).
const WATCH_SETTLE: Duration = Duration::from_millis(100);

/// A reload that ran this turn: what asked for it and how it went.
#[derive(Debug)]
pub struct Reloaded {
    pub source: &'static str,
    pub result: Result<Reload, ProtoError>,
}

/// The appliance, its sockets, and what may ask for a reload.
pub struct MainLoop {
    app: Appliance,
    server: Server,
    config_path: Option<PathBuf>,
    /// Set by the SIGHUP handler (or anyone who wants a reload of the config file).
    hup: Arc<AtomicBool>,
    changed: Arc<AtomicBool>,
    watcher: Option<notify::RecommendedWatcher>,
    last_change: Option<Instant>,
    next_health: Instant,
    vhost: crate::frontend::vhost::VhostFrontend,
    memif: crate::frontend::memif::MemifFrontend,
    mobility: crate::frontend::mobility::MobilityFrontend,
    /// The status as readers (metrics, DPDK telemetry) see it, published when one asks.
    snapshot: crate::metrics::Snapshot,
    metrics: Option<crate::metrics::http::MetricsServer>,
    service: Option<crate::service::Notifier>,
}

impl MainLoop {
    /// `config_path` is the file vnicd runs (SIGHUP, the file watch and reloads without a file
    /// read it); `hup` is the flag a SIGHUP handler sets.
    pub fn new(
        app: Appliance,
        mut server: Server,
        config_path: Option<PathBuf>,
        hup: Arc<AtomicBool>,
    ) -> MainLoop {
        if let Some(p) = &config_path {
            server.set_config_path(p.clone());
        }
        let snapshot = crate::metrics::Snapshot::default();
        crate::metrics::telemetry::register(&snapshot);
        MainLoop {
            app,
            server,
            config_path,
            hup,
            changed: Arc::new(AtomicBool::new(false)),
            watcher: None,
            last_change: None,
            next_health: Instant::now(),
            vhost: crate::frontend::vhost::VhostFrontend::new(),
            memif: crate::frontend::memif::MemifFrontend::new(),
            mobility: crate::frontend::mobility::MobilityFrontend::new(),
            snapshot,
            metrics: None,
            service: None,
        }
    }

    /// Serve `/metrics` where the config says (nothing when it has no `metrics`).
    pub fn start_metrics(&mut self) -> Result<Option<String>, String> {
        let Some(m) = &self.app.config().raw().metrics else {
            return Ok(None);
        };
        let listen = m
            .parse_listen()
            .map_err(|e| format!("metrics.listen: {e}"))?;
        let srv = crate::metrics::http::MetricsServer::start(&listen, self.snapshot.clone())?;
        let shown = srv.listen.clone();
        self.metrics = Some(srv);
        Ok(Some(shown))
    }

    /// Tell the service manager (`NOTIFY_SOCKET`) that vnicd serves, and keep it told: reloads,
    /// the watchdog, the status line.
    pub fn notify_ready(&mut self) {
        self.service = crate::service::Notifier::from_env();
        if let Some(n) = &mut self.service {
            n.ready(&self.app.status());
        }
    }

    /// Tell the service manager that vnicd stops.
    pub fn notify_stopping(&self) {
        if let Some(n) = &self.service {
            n.stopping();
        }
    }

    /// The appliance (status, config).
    pub fn app(&self) -> &Appliance {
        &self.app
    }

    /// One turn of the control thread, at most about one health tick long.
    pub fn turn(&mut self) -> Option<Reloaded> {
        let wait = self
            .next_health
            .saturating_duration_since(Instant::now())
            .min(HEALTH_TICK);
        // Moves in flight are waiting on another appliance: poll the sockets in short slices.
        let wait = if self.mobility.active() > 0 {
            wait.min(Duration::from_micros(200))
        } else {
            wait
        };
        self.server.poll(&mut self.app, wait);
        for m in self.server.take_moves() {
            self.mobility.start(&mut self.app, m);
        }
        self.mobility.poll(&mut self.app);
        // A data core that rerouted already carries the traffic: make it official now.
        self.app.on_dataplane_events();
        let now = Instant::now();
        self.vhost.poll(&mut self.app);
        if now >= self.next_health {
            self.app.health_tick();
            self.memif.poll(&mut self.app);
            self.next_health = now + HEALTH_TICK;
        }
        let events = self.app.drain_events();
        self.server.deliver(&mut self.app, &events);
        self.server.periodic(&mut self.app);
        self.follow_watch();
        if self.snapshot.wanted() {
            self.snapshot.publish(self.app.status());
        }
        if let Some(n) = &mut self.service {
            let app = &self.app;
            n.tick(|| app.status());
        }
        let source = self.reload_due()?;
        if let Some(n) = &self.service {
            n.reloading(source);
        }
        let result = self.server.reload(&mut self.app, None, source);
        let events = self.app.drain_events();
        self.server.deliver(&mut self.app, &events);
        if let Some(n) = &mut self.service {
            n.ready(&self.app.status());
        }
        Some(Reloaded { source, result })
    }

    /// Start or stop watching the config file as the running config's `watch_config` says.
    fn follow_watch(&mut self) {
        let want = self.app.config().raw().watch_config && self.config_path.is_some();
        if want != self.watcher.is_some() {
            self.watcher = if want {
                watch(self.config_path.as_deref(), self.changed.clone())
            } else {
                None
            };
        }
    }

    fn reload_due(&mut self) -> Option<&'static str> {
        if self.changed.swap(false, Ordering::Relaxed) {
            self.last_change = Some(Instant::now());
        }
        let watch_due = self
            .last_change
            .is_some_and(|t| t.elapsed() >= WATCH_SETTLE);
        if watch_due {
            self.last_change = None;
        }
        if self.hup.swap(false, Ordering::Relaxed) {
            Some("SIGHUP")
        } else if watch_due {
            Some("file watch")
        } else {
            None
        }
    }

    /// Close the sockets and hand the appliance back (for its shutdown).
    pub fn into_appliance(self) -> Appliance {
        drop(self.metrics);
        drop(self.server);
        self.app
    }
}

/// Watch the config file's directory (editors replace files by rename) for changes to the file.
fn watch(path: Option<&Path>, flag: Arc<AtomicBool>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let path = std::fs::canonicalize(path?).ok()?;
    let dir = path.parent()?.to_path_buf();
    let name = path.file_name()?.to_os_string();
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            if ev
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()))
            {
                flag.store(true, Ordering::Relaxed);
            }
        }
    })
    .map_err(|e| tracing::error!("cannot watch the config file: {e}"))
    .ok()?;
    if let Err(e) = w.watch(&dir, notify::RecursiveMode::NonRecursive) {
        tracing::error!("cannot watch {}: {e}", dir.display());
        return None;
    }
    tracing::info!("watching {} for changes", path.display());
    Some(w)
}
