//! Properties of the two parsers that face input: the control/admin message parser and the config
//! parser. Pure (no EAL).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test
use proptest::prelude::*;
use vnic_control::config;
use vnic_control::proto;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Any bytes: a request or a typed error, never a panic, on either socket.
    #[test]
    fn any_bytes_parse_to_a_request_or_a_typed_error(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        for admin in [false, true] {
            match proto::parse(&bytes, admin) {
                Ok(_) => {}
                Err((_, e)) => prop_assert!(!e.code.as_str().is_empty() && !e.message.is_empty()),
            }
        }
    }

    /// JSON objects that look like requests (known ops, fields of every type): same.
    #[test]
    fn request_shaped_json_parses_or_is_refused_with_a_reason(
        op in prop_oneof![Just("HELLO"), Just("CAPS"), Just("ATTACH"), Just("DETACH"),
                          Just("HEARTBEAT"), Just("REQUEST_FAILOVER"), Just("STATUS"),
                          Just("FAILOVER"), Just("BACKING"), Just("RELOAD"), Just("SHOW"), Just("x")],
        id in prop_oneof![Just(serde_json::json!(1)), Just(serde_json::json!(-1)),
                          Just(serde_json::json!("1")), Just(serde_json::json!(u64::MAX))],
        fields in proptest::collection::btree_map(
            prop_oneof![Just("vnic"), Just("versions"), Just("queues"), Just("depth"), Just("mtu"),
                        Just("to"), Just("enabled"), Just("backing"), Just("epoch"), Just("zz")],
            prop_oneof![Just(serde_json::json!(null)), Just(serde_json::json!(0)),
                        Just(serde_json::json!(4294967296u64)), Just(serde_json::json!("v0")),
                        Just(serde_json::json!([1])), Just(serde_json::json!({"a": 1})),
                        Just(serde_json::json!(true)), Just(serde_json::json!(-3.5))],
            0..5),
    ) {
        let mut m = serde_json::Map::new();
        m.insert("v".into(), serde_json::json!(1));
        m.insert("id".into(), id);
        m.insert("op".into(), serde_json::json!(op));
        for (k, v) in fields {
            m.insert(k.into(), v);
        }
        let line = serde_json::Value::Object(m).to_string();
        for admin in [false, true] {
            if let Err((_, e)) = proto::parse(line.as_bytes(), admin) {
                prop_assert!(!e.message.is_empty());
            }
        }
    }

    /// A valid config, serialized, parses back to the same config.
    #[test]
    fn a_serialized_valid_config_reparses_to_the_same_config(
        vnics in proptest::collection::vec(
            (1u32..=9600, 1u32..=16, 6u32..=15, any::<bool>(), 1u32..=100, 0u32..=600_000,
             proptest::collection::vec(1u32..=100, 1..=6)),
            0..8),
        memory_mb in 64u32..=65536,
        heartbeat in 20u32..=60_000,
    ) {
        let vnics: Vec<serde_json::Value> = vnics
            .iter()
            .enumerate()
            .map(|(i, (mtu, queues, depth_log, spoof, flap, hold, prios))| {
                serde_json::json!({
                    "name": format!("v{i}"),
                    "mac": format!("02:00:00:00:{:02x}:{:02x}", i / 256, i % 256 + 1),
                    "mtu": (*mtu).max(68),
                    "queues": queues,
                    "ring_depth": 1u32 << depth_log,
                    "allow_spoofing": spoof,
                    "flap_limit": flap,
                    "hold_down_ms": hold,
                    "ipv4": [format!("10.0.{}.1", i)],
                    "backing": prios.iter().enumerate().map(|(k, p)| serde_json::json!({
                        "name": format!("v{i}b{k}"),
                        "devargs": format!("net_null{}", i * 6 + k),
                        "priority": p,
                        "port_label": format!("p{k}"),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let j = serde_json::json!({
            "eal": {"cores": [0, 1], "main_core": 0, "memory_mb": memory_mb},
            "heartbeat_timeout_ms": heartbeat,
            "vnics": vnics,
        });
        let a = config::parse(&j.to_string()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let text = serde_json::to_string_pretty(&a.raw()).unwrap();
        let b = config::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(a, b);
    }
}
