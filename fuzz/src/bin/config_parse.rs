//! Any text as a config file: a validated config or errors with a JSON path, never a panic; a
//! config that validates re-parses from its own serialization to the same config.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        match vnic_control::config::parse(text) {
            Ok(c) => {
                let again = serde_json::to_string(c.raw()).expect("a config serializes");
                let c2 = vnic_control::config::parse(&again).expect("a valid config re-parses");
                assert_eq!(c, c2);
            }
            Err(e) => assert!(!e.0.is_empty() && e.0.iter().all(|x| !x.path.is_empty())),
        }
    });
}
