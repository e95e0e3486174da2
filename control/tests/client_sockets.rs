//! The files behind vhost-user and memif client sides: what vnicd refuses to listen on (and
//! never removes), the stale sockets it does remove, and the owner, group and mode it gives the
//! socket from the vNIC's credentials. Start-up refuses with the vNIC and path named; a reload
//! refuses and changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
mod common;
use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use vnic_control::client::Client;
use vnic_control::config;
use vnic_control::runner::Running;

fn cfg_with_client(dir: &std::path::Path, client: Value) -> Value {
    json!({
        "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": 256},
        "data_cores": [{"core": 1, "idle_sleep_us": 20}],
        "control_socket": dir.join("c.sock"), "admin_socket": dir.join("a.sock"),
        "vnics": [{"name": "vnic0", "mac": "02:00:00:00:00:01", "client": client,
                   "allowed_uids": [4242], "allowed_gids": [0],
                   "backing": [{"name": "vf0", "devargs": "net_ring0", "port_label": "p0"}]}]
    })
}

fn start_err(j: &Value) -> String {
    let cfg = config::parse(&j.to_string()).unwrap();
    match Running::start(cfg, Default::default()) {
        Ok(_) => panic!("must not start"),
        Err(e) => format!("{e:?}"),
    }
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vnic-cs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

// One EAL per process: one refused start per test.
#[test]
fn a_regular_file_is_refused_at_start_and_left_alone() {
    let dir = tmpdir("start");
    let file = dir.join("vnic0.sock");
    std::fs::write(&file, "keep me").unwrap();
    let e = start_err(&cfg_with_client(
        &dir,
        json!({"transport": "vhost-user", "socket": file}),
    ));
    assert!(
        e.contains(&format!(
            "vNIC vnic0: client.socket {}: exists and is not a socket (vnicd does not remove it)",
            file.display()
        )),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn a_missing_directory_is_refused_at_start() {
    let dir = tmpdir("nodir");
    let missing = dir.join("nope/vnic0.memif");
    let e = start_err(&cfg_with_client(
        &dir,
        json!({"transport": "memif", "socket": missing}),
    ));
    assert!(
        e.contains(&format!(
            "directory {} does not exist",
            dir.join("nope").display()
        )),
        "{e}"
    );
}

#[test]
fn sockets_get_their_owner_group_and_mode_and_stale_ones_are_replaced() {
    let dir = tmpdir("perm");
    let sock = dir.join("vnic0.memif");
    // A stale socket: bound, then its listener gone.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let cfg = config::parse(
        &cfg_with_client(&dir, json!({"transport": "memif", "socket": sock})).to_string(),
    )
    .unwrap();
    let run = Running::start(cfg, Default::default()).expect("vnicd starts over a stale socket");
    let md = std::fs::metadata(&sock).unwrap();
    assert_eq!((md.uid(), md.gid()), (4242, 0));
    assert_eq!(md.permissions().mode() & 0o777, 0o660);
    let v = run.vnic("vnic0");
    assert_eq!(v["transport"], "memif");
    assert_eq!(v["client_socket"], sock.display().to_string());
    assert_eq!(v["client_error"], Value::Null);

    // A shm client cannot attach a memif vNIC over the control socket.
    let mut c = run.client();
    common::raw::hello(&mut c, "vnic0", None).unwrap();
    let e = common::raw::attach(&mut c, 1, 1024, 1500, false).unwrap_err();
    assert!(
        e.to_string()
            .contains("vNIC \"vnic0\" is served over memif, not shm: connect to its socket"),
        "{e}"
    );
    let r = run.finish();
    assert_eq!(r.leaked(), 0, "{r:?}");
}

#[test]
fn a_reload_onto_a_regular_file_is_refused_and_changes_nothing() {
    let dir = tmpdir("reload");
    let j = cfg_with_client(&dir, json!({"transport": "shm"}));
    let cfg = config::parse(&j.to_string()).unwrap();
    let run = Running::start(cfg, Default::default()).expect("vnicd");
    let file = dir.join("taken");
    std::fs::write(&file, "keep me").unwrap();
    let mut j2 = j.clone();
    j2["vnics"][0]["client"] = json!({"transport": "vhost-user", "socket": file});
    let p = dir.join("new.json");
    std::fs::write(&p, j2.to_string()).unwrap();
    let e = Client::connect(&dir.join("a.sock"))
        .unwrap()
        .request("RELOAD", json!({"path": p}))
        .unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "step \"recreate vNIC vnic0 (client changed)\" failed: client.socket {}: exists and is not a socket (vnicd does not remove it); nothing was changed",
            file.display()
        )),
        "{e}"
    );
    assert_eq!(run.vnic("vnic0")["transport"], "shm");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    let r = run.finish();
    assert_eq!(r.leaked(), 0, "{r:?}");
}
