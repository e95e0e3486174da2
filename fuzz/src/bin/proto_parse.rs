//! Any bytes on the control or admin socket: a request or a typed error, never a panic; a
//! parsed request's error reply and any reply line decode again on the client side.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        for admin in [false, true] {
            match vnic_proto::wire::parse(data, admin) {
                Ok(r) => {
                    let _ = format!("{r:?}");
                }
                Err((id, e)) => {
                    assert!(!e.message.is_empty());
                    let line = vnic_proto::wire::encode(&vnic_proto::wire::error(id, 0, &e));
                    assert!(line.ends_with('\n'));
                }
            }
        }
    });
}
