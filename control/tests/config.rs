//! Config parsing and validation: good configs pass; each bad input is rejected with its JSON path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
use vnic_control::config::{self, parse, ConfigErrors};
use vnic_control::eal_options::{check_build_limits, eal_options};
use vnic_dataplane::Memory;

fn base() -> serde_json::Value {
    serde_json::json!({
        "eal": {"cores": [0, 1], "main_core": 0},
        "data_cores": [{"core": 1}],
        "vnics": [{
            "name": "vnic0",
            "mac": "02:00:00:00:00:01",
            "backing": [
                {"name": "a", "devargs": "net_memif0,role=client,socket=/tmp/a.sock", "priority": 10, "port_label": "p0"},
                {"name": "b", "devargs": "0000:03:00.1", "port_label": "p1"}
            ]
        }]
    })
}

fn errs(v: serde_json::Value) -> ConfigErrors {
    // Everything `vnicd --check-config` checks: the config, then this DPDK build's limits.
    parse(&v.to_string())
        .and_then(|c| check_build_limits(&c).map(|()| c))
        .expect_err("must be rejected")
}

fn assert_err(e: &ConfigErrors, path: &str, needle: &str) {
    assert!(
        e.has(path, needle),
        "expected error at {path} containing {needle:?}, got:\n{e}"
    );
}

#[test]
fn the_embedded_demo_config_is_valid() {
    let c = parse(config::DEMO_CONFIG).unwrap();
    assert_eq!(c.vnics().len(), 4);
    assert_eq!(c.vnics()[0].backing.len(), 2);
    assert_eq!(c.vnics()[1].mtu, 1500, "default");
}

#[test]
fn a_good_config_gets_defaults() {
    let c = parse(&base().to_string()).unwrap();
    let v = &c.vnics()[0];
    assert_eq!((v.mtu, v.queues, v.ring_depth), (1500, 1, 1024));
    assert_eq!(v.backing[1].priority, 50);
    assert_eq!((c.vnics().len(), c.vnic_core(0)), (1, 1));
    assert_eq!(c.mac(0).to_string(), "02:00:00:00:00:01");
    assert_eq!(c.raw().stats_interval_ms, 1000);
}

#[test]
fn syntax_error_has_line_and_column() {
    let e = parse("{\n  \"vnics\": [\n    {\"name\": \"x\",,}\n  ]\n}").unwrap_err();
    assert_eq!(e.0.len(), 1);
    let m = e.to_string();
    assert!(m.contains("syntax error at line 3 column"), "{m}");
    let e = parse("{\"vnics\": [").unwrap_err();
    assert!(e.to_string().contains("line 1 column"), "{e}");
}

#[test]
fn unknown_field_is_named_with_its_path() {
    let mut v = base();
    v["vnics"][0]["backing"][1]["prio"] = 3.into();
    let e = errs(v);
    assert_err(
        &e,
        "vnics[0].backing[1].prio",
        "unknown field `prio`, expected one of",
    );
    let mut v = base();
    v["eal"]["hugepage"] = true.into();
    assert_err(&errs(v), "eal.hugepage", "unknown field `hugepage`");
}

#[test]
fn missing_field_is_named() {
    let mut v = base();
    v["vnics"][0].as_object_mut().unwrap().remove("mac");
    assert_err(&errs(v), "vnics[0]", "missing field `mac`");
    let mut v = base();
    v["vnics"][0]["backing"][0]
        .as_object_mut()
        .unwrap()
        .remove("port_label");
    assert_err(
        &errs(v),
        "vnics[0].backing[0]",
        "missing field `port_label`",
    );
}

#[test]
fn wrong_type_is_named() {
    let mut v = base();
    v["vnics"][0]["mtu"] = "1500".into();
    assert_err(&errs(v), "vnics[0].mtu", "invalid type");
}

#[test]
fn out_of_range_numbers() {
    let mut v = base();
    v["vnics"][0]["backing"][0]["priority"] = 0.into();
    v["vnics"][0]["backing"][1]["priority"] = 101.into();
    v["vnics"][0]["mtu"] = 10000.into();
    v["vnics"][0]["queues"] = 0.into();
    v["vnics"][0]["ring_depth"] = 1000.into();
    v["eal"]["memory_mb"] = 1.into();
    let e = errs(v);
    assert_err(&e, "vnics[0].backing[0].priority", "out of range 1..=100");
    assert_err(&e, "vnics[0].backing[1].priority", "out of range 1..=100");
    assert_err(&e, "vnics[0].mtu", "out of range 68..=9600");
    assert_err(&e, "vnics[0].queues", "out of range 1..=16");
    assert_err(&e, "vnics[0].ring_depth", "power of two");
    assert_err(&e, "eal.memory_mb", "out of range");
    assert_eq!(e.0.len(), 6, "all errors reported at once:\n{e}");
}

#[test]
fn negative_number_is_a_type_error_with_path() {
    let mut v = base();
    v["vnics"][0]["backing"][0]["priority"] = (-5).into();
    assert_err(&errs(v), "vnics[0].backing[0].priority", "invalid value");
}

#[test]
fn duplicate_names() {
    let mut v = base();
    let second = v["vnics"][0].clone();
    v["vnics"].as_array_mut().unwrap().push(second);
    let e = errs(v);
    assert_err(&e, "vnics[1].name", "duplicate vNIC name \"vnic0\"");
    assert_err(
        &e,
        "vnics[1].backing[0].name",
        "duplicate backing device name \"a\"",
    );
    assert_err(
        &e,
        "vnics[1].backing[0].devargs",
        "already backs vnics[0].backing[0]",
    );
    assert_err(&e, "vnics[1].mac", "also used by vnics[0]");
}

#[test]
fn bad_macs() {
    for (mac, why) in [
        ("02:00:00:00:00", "six hex octets"),
        ("02:00:00:00:00:zz", "hex"),
        ("01:00:5e:00:00:01", "unicast"),
        ("00:00:00:00:00:00", "all zeros"),
        ("2:00:00:00:00:01", "two hex digits"),
    ] {
        let mut v = base();
        v["vnics"][0]["mac"] = mac.into();
        assert_err(&errs(v), "vnics[0].mac", why);
    }
}

#[test]
fn more_than_six_backing_devices() {
    let mut v = base();
    let list: Vec<_> = (0..7)
        .map(|i| serde_json::json!({"name": format!("b{i}"), "devargs": format!("net_null{i}"), "port_label": format!("p{i}")}))
        .collect();
    v["vnics"][0]["backing"] = list.into();
    assert_err(&errs(v), "vnics[0].backing", "7 backing devices, at most 6");
}

#[test]
fn no_backing_device() {
    let mut v = base();
    v["vnics"][0]["backing"] = serde_json::json!([]);
    assert_err(&errs(v), "vnics[0].backing", "at least one");
}

#[test]
fn two_backing_devices_on_one_physical_port() {
    let mut v = base();
    v["vnics"][0]["backing"][1]["port_label"] = "p0".into();
    assert_err(
        &errs(v),
        "vnics[0].backing[1].port_label",
        "already used by vnics[0].backing[0]",
    );
}

#[test]
fn data_core_out_of_range() {
    let mut v = base();
    v["data_cores"] = serde_json::json!([{"core": 5}]);
    assert_err(&errs(v), "data_cores[0].core", "not in eal.cores");
    let mut v = base();
    v["data_cores"] = serde_json::json!([{"core": 0}]);
    assert_err(&errs(v), "data_cores[0].core", "main (control) core");
    let mut v = base();
    v["vnics"][0]["data_core"] = 7.into();
    assert_err(
        &errs(v),
        "vnics[0].data_core",
        "core 7 is not one of data_cores",
    );
    let mut v = base();
    v["eal"]["cores"] = serde_json::json!([0, 1, 4096]);
    assert_err(&errs(v), "eal.cores[2]", "out of range");
}

#[test]
fn bad_devargs_and_names() {
    for (d, why) in [
        ("", "empty"),
        ("memif0", "neither a PCI address nor a vdev"),
        ("net_memif", "net_<driver><number>"),
        ("0000:03:00.9", "not a PCI address"),
        ("net_memif0,role", "key=value"),
        ("net_memif0, role=client", "whitespace"),
    ] {
        let mut v = base();
        v["vnics"][0]["backing"][0]["devargs"] = d.into();
        assert_err(&errs(v), "vnics[0].backing[0].devargs", why);
    }
    let mut v = base();
    v["vnics"][0]["name"] = "a name with spaces".into();
    assert_err(&errs(v), "vnics[0].name", "at most 16");
    let mut v = base();
    v["vnics"][0]["name"] = "bad/name".into();
    assert_err(&errs(v), "vnics[0].name", "only letters");
}

#[test]
fn eal_mapping_follows_hugepage_policy() {
    let c = parse(&base().to_string()).unwrap();
    let o = eal_options(&c, true).unwrap();
    assert_eq!(o.memory, Memory::HugeInMemory);
    assert_eq!(
        o.pci_allow,
        vec!["0000:03:00.1".to_string()],
        "PCI backing devices are allow-listed"
    );
    assert_eq!(
        eal_options(&c, false).unwrap().memory,
        Memory::NoHuge,
        "auto falls back to --no-huge"
    );
    let mut v = base();
    v["eal"]["hugepages"] = "on".into();
    let c = parse(&v.to_string()).unwrap();
    assert!(eal_options(&c, false)
        .unwrap_err()
        .has("eal.hugepages", "no free hugepages"));
    let mut v = base();
    v["eal"]["file_prefix"] = "vnicd1".into();
    let c = parse(&v.to_string()).unwrap();
    assert_eq!(
        eal_options(&c, true).unwrap().memory,
        Memory::HugeShared {
            file_prefix: "vnicd1".into()
        }
    );
    let mut v = base();
    v["eal"]["hugepages"] = "off".into();
    let c = parse(&v.to_string()).unwrap();
    assert_eq!(eal_options(&c, true).unwrap().memory, Memory::NoHuge);
}

#[test]
fn more_backing_devices_than_dpdk_ports_are_refused() {
    let mut v = base();
    let vnics: Vec<_> = (0..17)
        .map(|i| {
            serde_json::json!({"name": format!("v{i}"), "mac": format!("02:00:00:00:01:{:02x}", i + 1), "backing": [
                {"name": format!("a{i}"), "devargs": format!("net_null{}", 2 * i), "port_label": "p0"},
                {"name": format!("b{i}"), "devargs": format!("net_null{}", 2 * i + 1), "port_label": "p1"}]})
        })
        .collect();
    v["vnics"] = vnics.into();
    assert_err(
        &errs(v),
        "vnics",
        "34 backing devices and 0 memif client ports in all, but this DPDK build supports at most 32 ports",
    );
}

#[test]
fn client_transports_parse_with_defaults() {
    let mut v = base();
    v["vnics"][0]["client"] =
        serde_json::json!({"transport": "vhost-user", "socket": "/run/vnicd/vnic0.sock"});
    let c = parse(&v.to_string()).unwrap();
    assert_eq!(
        c.vnics()[0].client,
        config::ClientConfig::VhostUser {
            socket: "/run/vnicd/vnic0.sock".into(),
            mode: config::VhostMode::Server
        }
    );
    v["vnics"][0]["client"] = serde_json::json!({"transport": "memif", "socket": "/run/vnicd/vnic0.memif", "secret": "s3"});
    let c = parse(&v.to_string()).unwrap();
    assert_eq!(c.vnics()[0].client.transport(), "memif");
    assert_eq!(
        parse(&base().to_string()).unwrap().vnics()[0].client,
        config::ClientConfig::Shm
    );
}

#[test]
fn bad_client_transports_are_named_with_their_path() {
    let with = |client: serde_json::Value| {
        let mut v = base();
        v["vnics"][0]["client"] = client;
        v
    };
    let e = errs(with(serde_json::json!({"transport": "vhost"})));
    assert_err(&e, "vnics[0].client.transport", "unknown variant `vhost`");
    let e = errs(with(serde_json::json!({"transport": "vhost-user"})));
    assert_err(&e, "vnics[0].client", "missing field `socket`");
    let e = errs(with(
        serde_json::json!({"transport": "vhost-user", "socket": "/a", "mode": "both"}),
    ));
    assert_err(&e, "vnics[0].client", "unknown variant `both`");
    let e = errs(with(
        serde_json::json!({"transport": "memif", "socket": "/a", "queues": 2}),
    ));
    assert_err(&e, "vnics[0].client", "unknown field `queues`");
    let e = errs(with(
        serde_json::json!({"transport": "memif", "socket": "run/x.sock"}),
    ));
    assert_err(&e, "vnics[0].client.socket", "must be an absolute path");
    let long = format!("/{}", "x".repeat(120));
    let e = errs(with(
        serde_json::json!({"transport": "memif", "socket": long}),
    ));
    assert_err(
        &e,
        "vnics[0].client.socket",
        "a unix socket path has at most 107",
    );
    let e = errs(with(
        serde_json::json!({"transport": "memif", "socket": "/a,role=client"}),
    ));
    assert_err(&e, "vnics[0].client.socket", "must not contain commas");
    let e = errs(with(
        serde_json::json!({"transport": "memif", "socket": "/a", "secret": "x".repeat(25)}),
    ));
    assert_err(&e, "vnics[0].client.secret", "at most 24 characters");

    // One owner and one group: what a socket file can express.
    let mut v = with(serde_json::json!({"transport": "vhost-user", "socket": "/a"}));
    v["vnics"][0]["allowed_uids"] = serde_json::json!([1000, 1001]);
    v["vnics"][0]["allowed_gids"] = serde_json::json!([10, 11]);
    let e = errs(v);
    assert_err(
        &e,
        "vnics[0].allowed_uids",
        "a vhost-user socket file has one owner",
    );
    assert_err(
        &e,
        "vnics[0].allowed_gids",
        "a vhost-user socket file has one group",
    );

    // Two vNICs on one socket, or on vnicd's own.
    let mut v = with(serde_json::json!({"transport": "memif", "socket": "/run/x.sock"}));
    let mut second = v["vnics"][0].clone();
    second["name"] = "vnic1".into();
    second["mac"] = "02:00:00:00:00:02".into();
    second["backing"] =
        serde_json::json!([{"name": "c", "devargs": "net_null5", "port_label": "p0"}]);
    v["vnics"].as_array_mut().unwrap().push(second);
    let e = errs(v);
    assert_err(
        &e,
        "vnics[1].client.socket",
        "socket \"/run/x.sock\" is also vnics[0].client.socket",
    );
    let mut v = with(serde_json::json!({"transport": "memif", "socket": "/tmp/adm.sock"}));
    v["admin_socket"] = "/tmp/adm.sock".into();
    let e = errs(v);
    assert_err(
        &e,
        "vnics[0].client.socket",
        "vnicd's own control or admin socket",
    );
}

#[test]
fn comments_are_allowed_and_errors_keep_the_files_line_and_column() {
    let text = r#"{
  // The appliance's CPUs.
  "eal": {"cores": [0, 1], "main_core": 0}, /* main core runs the control thread */
  "vnics": [{"name": "vnic0", "mac": "02:00:00:00:00:01",
             "backing": [{"name": "a", "devargs": "net_memif0,role=client,socket=/tmp//a.sock", "port_label": "p0"}]}]
}"#;
    let c = parse(text).unwrap();
    // `//` inside a string is not a comment.
    assert_eq!(
        c.vnics()[0].backing[0].devargs,
        "net_memif0,role=client,socket=/tmp//a.sock"
    );
    let e = parse("{\n  /* a\n  comment */ \"vnics\": [,]\n}").unwrap_err();
    assert!(
        e.to_string().contains("syntax error at line 3 column 24"),
        "{e}"
    );
    // An unterminated block comment is an error, not an empty config.
    let e = parse("{\"vnics\": [] /* never closed").unwrap_err();
    assert!(!e.0.is_empty(), "{e}");
}
