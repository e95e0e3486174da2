//! The control thread on a thread of its own: an appliance plus its control and admin sockets,
//! run by vnicd's own main loop ([`crate::mainloop`]). Tests use it to run vnicd in-process and
//! talk to it over the real sockets (feature `testing`: its helpers panic on failure).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers (feature `testing`): they fail the test that calls them
use crate::appliance::{Appliance, ShutdownReport, StartOptions};
use crate::client::Client;
use crate::config::Config;
use crate::mainloop::MainLoop;
use crate::server::Server;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running control thread.
pub struct Running {
    pub control_socket: PathBuf,
    pub admin_socket: PathBuf,
    stop: Arc<AtomicBool>,
    /// Set it to reload the config file given at start, as SIGHUP does for vnicd.
    pub hup: Arc<AtomicBool>,
    handle: Option<JoinHandle<Option<Appliance>>>,
}

/// Why it could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Start(String),
}

impl Running {
    /// Start the appliance and its sockets; returns once both are up.
    pub fn start(cfg: Config, opts: StartOptions) -> Result<Running, RunError> {
        Self::start_with_file(cfg, opts, None)
    }

    /// Start on `cfg`, read from `path`: reloads without a file, `hup` and (with
    /// `watch_config`) changes to the file re-read it.
    pub fn start_with_file(
        cfg: Config,
        opts: StartOptions,
        path: Option<PathBuf>,
    ) -> Result<Running, RunError> {
        let control_socket = cfg.raw().control_socket.clone();
        let admin_socket = cfg.raw().admin_socket.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = stop.clone();
        let hup = Arc::new(AtomicBool::new(false));
        let h2 = hup.clone();
        let handle = std::thread::Builder::new()
            .name("vnic-control".into())
            .spawn(move || {
                let app = match Appliance::start(cfg, &opts) {
                    Ok(a) => a,
                    Err(e) => {
                        let _ = tx.send(Err(format!("appliance did not start: {e}")));
                        return None;
                    }
                };
                let server = match Server::start(app.config()) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(format!("sockets did not open: {e}")));
                        return None;
                    }
                };
                let _ = tx.send(Ok(()));
                let mut main = MainLoop::new(app, server, path, h2);
                while !s2.load(Ordering::Relaxed) {
                    if let Some(r) = main.turn() {
                        tracing::info!(source = r.source, ok = r.result.is_ok(), "reload");
                    }
                }
                Some(main.into_appliance())
            })
            .map_err(|e| RunError::Start(e.to_string()))?;
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => Ok(Running {
                control_socket,
                admin_socket,
                stop,
                hup,
                handle: Some(handle),
            }),
            Ok(Err(e)) => Err(RunError::Start(e)),
            Err(_) => Err(RunError::Start("the control thread did not come up".into())),
        }
    }

    /// A new client session on the control socket.
    pub fn client(&self) -> Client {
        Client::connect(&self.control_socket).expect("control socket")
    }

    /// `STATUS` over the admin socket.
    pub fn status(&self) -> Value {
        let mut a = Client::connect(&self.admin_socket).expect("admin socket");
        a.request("STATUS", json!({})).expect("STATUS")
    }

    /// One admin request.
    pub fn admin(&self, op: &str, fields: Value) -> Result<Value, crate::client::ClientError> {
        Client::connect(&self.admin_socket)?.request(op, fields)
    }

    /// One vNIC's status.
    pub fn vnic(&self, name: &str) -> Value {
        let st = self.status();
        st["vnics"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Wait until `f(vnic status)` holds; returns how long it took. Panics after `within`.
    pub fn wait_for(
        &self,
        name: &str,
        what: &str,
        within: Duration,
        f: impl Fn(&Value) -> bool,
    ) -> Duration {
        let t = Instant::now();
        loop {
            let v = self.vnic(name);
            if f(&v) {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < within,
                "{name}: not {what} within {within:?}: {v}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Wait until the vNIC is in `state` ("attached"/"detached").
    pub fn wait_state(&self, name: &str, state: &str, within: Duration) -> Duration {
        self.wait_for(name, state, within, |v| v["state"] == state)
    }

    /// Stop the control thread and tear the appliance down.
    pub fn finish(mut self) -> ShutdownReport {
        self.stop.store(true, Ordering::Relaxed);
        let app = self
            .handle
            .take()
            .expect("running")
            .join()
            .expect("control thread")
            .expect("the appliance ran");
        app.shutdown()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.stop.store(true, Ordering::Relaxed);
            if let Ok(Some(app)) = h.join() {
                drop(app.shutdown());
            }
        }
    }
}
