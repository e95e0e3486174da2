//! memif clients: vnicd is the server, and a connection is the server port's link. A link that
//! comes up attaches the vNIC, one that goes down detaches it (the server copies both ways, so
//! nothing of ours is left with a client that vanished). net_memif in 22.11 has no link-state
//! interrupt: the link is polled, every health tick.
use crate::appliance::{Appliance, Command};
use crate::vnic::{Owner, Side};

/// Follows the memif vNICs' connections.
#[derive(Debug, Default)]
pub struct MemifFrontend;

impl MemifFrontend {
    pub fn new() -> Self {
        MemifFrontend
    }

    /// Attach the vNICs whose client connected, detach those whose client left.
    pub fn poll(&mut self, app: &mut Appliance) {
        for m in app.memif_views() {
            if m.connected && !m.attached {
                let owner = Owner::Memif {
                    socket: m.socket.clone(),
                    id: m.id,
                };
                match app.apply(Command::Connect {
                    vnic: m.vnic.clone(),
                    side: Side::Memif,
                    owner,
                }) {
                    Ok(_) => {
                        tracing::info!(vnic = m.vnic, socket = m.socket, "memif client attached")
                    }
                    Err(e) => tracing::error!(vnic = m.vnic, "memif client not attached: {e}"),
                }
            } else if !m.connected && m.attached {
                match app.apply(Command::Disconnect {
                    vnic: m.vnic.clone(),
                }) {
                    Ok(_) => tracing::info!(vnic = m.vnic, "memif client detached"),
                    Err(e) => tracing::error!(vnic = m.vnic, "memif detach: {e}"),
                }
            }
        }
    }
}
