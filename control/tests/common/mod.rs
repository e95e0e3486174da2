//! Shared fixture: an appliance and its control server on a thread of their own, as vnicd's
//! control thread runs them; tests talk to it over the real sockets.
#![allow(dead_code)]
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vnic_control::appliance::Appliance;
use vnic_control::client::Client;
use vnic_control::config;
use vnic_control::server::Server;

pub struct Fx {
    pub dir: PathBuf,
    pub ctl: PathBuf,
    pub admin: PathBuf,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Appliance>>,
}

/// vnic0 and vnic1 are open to root; vnic2 only to uid 4242. Backing devices are `net_ring`
/// vdevs, which loop tx back to rx: what a client sends comes back to it.
pub fn start(heartbeat_ms: u32) -> Fx {
    start_with(heartbeat_ms, |_| {})
}

/// As [`start`], letting the caller edit the config JSON first.
pub fn start_with(heartbeat_ms: u32, edit: impl FnOnce(&mut Value)) -> Fx {
    let dir = std::env::temp_dir().join(format!("vnic-sess-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ctl = dir.join("control.sock");
    let admin = dir.join("admin.sock");
    let vnic = |i: u32, uids: Value| {
        json!({"name": format!("vnic{i}"), "mac": format!("02:00:00:00:00:0{}", i + 1), "queues": 2, "ring_depth": 1024,
               "allowed_uids": uids,
               "backing": [{"name": format!("vf{i}"), "devargs": format!("net_ring{i}"), "port_label": "p0"}]})
    };
    let mut j = json!({
        "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 256},
        "data_cores": [{"core": 1, "idle_sleep_us": 20}],
        "control_socket": ctl, "admin_socket": admin,
        "heartbeat_timeout_ms": heartbeat_ms,
        "vnics": [vnic(0, json!([0])), vnic(1, json!([0])), vnic(2, json!([4242]))]
    });
    edit(&mut j);
    let cfg = config::parse(&j.to_string()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let s2 = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut app = Appliance::start(cfg, &Default::default()).expect("appliance");
        let mut server = Server::start(app.config()).expect("server");
        tx.send(()).unwrap();
        while !s2.load(Ordering::Relaxed) {
            server.poll(&mut app, Duration::from_millis(5));
        }
        drop(server);
        app
    });
    rx.recv_timeout(Duration::from_secs(20)).expect("vnicd up");
    Fx {
        dir,
        ctl,
        admin,
        stop,
        handle: Some(handle),
    }
}

impl Fx {
    pub fn client(&self) -> Client {
        Client::connect(&self.ctl).unwrap()
    }
    pub fn status(&self) -> Value {
        let mut a = Client::connect(&self.admin).unwrap();
        a.request("STATUS", json!({})).unwrap()
    }
    pub fn vnic(&self, name: &str) -> Value {
        let st = self.status();
        st["vnics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap()
            .clone()
    }
    pub fn wait_state(&self, name: &str, state: &str, within: Duration) -> Duration {
        let t = Instant::now();
        while self.vnic(name)["state"] != state {
            assert!(
                t.elapsed() < within,
                "{name} not {state} within {within:?}: {}",
                self.vnic(name)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        t.elapsed()
    }
    /// Stop the control thread, tear down, and check that nothing leaked.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let app = self.handle.take().unwrap().join().unwrap();
        let r = app.shutdown();
        assert_eq!(r.leaked(), 0, "{r:?}");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Run a command; (exit code, stdout, stderr).
pub fn run(cmd: &mut std::process::Command) -> (i32, String, String) {
    let o = cmd.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
