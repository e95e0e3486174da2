//! The mobility tests' rig: `vnic_bench::mobility` with a failed step as a failed test.
#![allow(dead_code)] // each test file uses its part
use serde_json::Value;
use std::path::{Path, PathBuf};
use vnic_bench::mobility as rig;
use vnic_bench::procs::Guard;
use vnic_bench::vnicd::Output;

#[allow(unused_imports)] // not every test file uses them
pub use rig::{attached, BYA, BYB, MV};

pub fn bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_vnic-gen")).with_file_name(name)
}

pub fn id() -> u32 {
    std::process::id() % 10000
}

pub fn sh(args: &[&str]) {
    rig::sh(args).unwrap();
}

/// The switch and its ports; removed on drop.
pub struct Net(pub rig::Net);

impl std::ops::Deref for Net {
    type Target = rig::Net;
    fn deref(&self) -> &rig::Net {
        &self.0
    }
}

impl Net {
    pub fn new() -> Net {
        Net(rig::Net::new(id()).unwrap())
    }
    pub fn vf(&mut self, tag: &str) -> (String, String) {
        self.0.vf(tag).unwrap()
    }
    pub fn peer_port(&mut self, tag: &str) -> String {
        self.0.peer_port(tag).unwrap()
    }
    pub fn peer_port_ip(&mut self, tag: &str, cidr: &str) -> String {
        self.0.peer_port_ip(tag, cidr).unwrap()
    }
}

/// A with `vnic` on a VF; B with a spare and a socket directory (`vnic_bench::mobility::pair`).
pub fn pair(d: &Path, net: &mut Net, vnic: Value) -> (Appliance, Appliance) {
    let (a, b) = rig::pair(&bin("vnicd"), d, id(), &mut net.0, vnic).unwrap();
    (Appliance(a), Appliance(b))
}

/// The shm scene of `vnic_bench::mobility`, its parts wrapped.
pub struct Scene {
    pub net: Net,
    pub a: Appliance,
    pub b: Appliance,
    pub gen: vnic_bench::gen::Gen,
    pub clients: Vec<Guard>,
}

pub fn shm_scene(dir: &Path, arrive_timeout_ms: u32, mv_extra: &[&str]) -> Scene {
    let s = rig::ShmScene::start(
        &bin("vnicd"),
        dir,
        id(),
        arrive_timeout_ms,
        mv_extra,
        Output::ShowErrors,
    )
    .unwrap();
    Scene {
        net: Net(s.net),
        a: Appliance(s.a),
        b: Appliance(s.b),
        gen: s.gen,
        clients: s.clients,
    }
}

/// One appliance.
pub struct Appliance(pub rig::Appliance);

impl std::ops::Deref for Appliance {
    type Target = rig::Appliance;
    fn deref(&self) -> &rig::Appliance {
        &self.0
    }
}

impl std::ops::DerefMut for Appliance {
    fn deref_mut(&mut self) -> &mut rig::Appliance {
        &mut self.0
    }
}

impl Appliance {
    pub fn start(dir: &Path, tag: &'static str, vnics: Value, mobility: Value) -> Appliance {
        Appliance(rig::Appliance::start(&bin("vnicd"), dir, tag, id(), vnics, mobility).unwrap())
    }
    pub fn status(&self) -> Value {
        self.0.status().unwrap()
    }
    pub fn vnic(&self, name: &str) -> Option<Value> {
        self.0.vnic(name).unwrap()
    }
    pub fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) {
        self.0.wait(what, pred).unwrap()
    }
    pub fn client(&self, vnic: &str, extra: &[&str]) -> Guard {
        self.0.client(vnic, extra, Output::ShowErrors).unwrap()
    }
    /// Stop it; mbufs not back in their pools at its shutdown (must be 0).
    pub fn finish(self) -> u64 {
        self.0.finish().unwrap()
    }
}

pub fn vnicctl(adm: &Path, args: &[&str]) -> (i32, String) {
    rig::vnicctl(&bin("vnicd"), adm, args).unwrap()
}

/// When dropped, kills every process whose command line names `dir`: the successors a moving
/// vNIC's client started are not our children, and a test leaves nothing running.
pub struct Reaper(pub PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        let me = std::process::id();
        let key = self.0.display().to_string();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if pid != me && String::from_utf8_lossy(&cmd).contains(&key) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            }
        }
    }
}
