//! Shared fixture: an appliance and its control server on a thread of their own, as vnicd's
//! control thread runs them; tests talk to it over the real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
#![allow(dead_code)]
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use vnic_control::client::Client;
use vnic_control::config;
use vnic_control::runner::Running;

pub struct Fx {
    pub dir: PathBuf,
    pub ctl: PathBuf,
    pub admin: PathBuf,
    run: Running,
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
    let run = Running::start(cfg, Default::default()).expect("vnicd up");
    Fx {
        dir,
        ctl,
        admin,
        run,
    }
}

impl Fx {
    pub fn client(&self) -> Client {
        self.run.client()
    }
    pub fn status(&self) -> Value {
        self.run.status()
    }
    pub fn vnic(&self, name: &str) -> Value {
        self.run.vnic(name)
    }
    pub fn wait_state(&self, name: &str, state: &str, within: Duration) -> Duration {
        self.run.wait_state(name, state, within)
    }
    /// Stop the control thread, tear down, and check that nothing leaked.
    pub fn finish(self) {
        let r = self.run.finish();
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

/// `ip link set IFACE up|down`: a real link change on a tap device.
pub fn ip_link(iface: &str, state: &str) {
    let ok = Command::new("ip")
        .args(["link", "set", iface, state])
        .status()
        .expect("ip")
        .success();
    assert!(ok, "ip link set {iface} {state}");
}

/// The protocol as raw JSON, for tests of the wire itself (the typed client methods decode it).
pub mod raw {
    use serde_json::{json, Value};
    use vnic_control::client::{Client, ClientError};

    pub fn hello(c: &mut Client, vnic: &str, token: Option<&str>) -> Result<Value, ClientError> {
        let mut f = json!({"versions": vnic_control::proto::VERSIONS, "vnic": vnic});
        if let Some(t) = token {
            f["token"] = json!(t);
        }
        c.request("HELLO", f)
    }
    pub fn caps(c: &mut Client) -> Result<Value, ClientError> {
        c.request("CAPS", json!({}))
    }
    pub fn attach(
        c: &mut Client,
        queues: u32,
        depth: u32,
        mtu: u32,
        promisc: bool,
    ) -> Result<Value, ClientError> {
        c.request(
            "ATTACH",
            json!({"queues": queues, "depth": depth, "mtu": mtu, "promisc": promisc}),
        )
    }
    pub fn detach(c: &mut Client) -> Result<Value, ClientError> {
        c.request("DETACH", json!({}))
    }
}
