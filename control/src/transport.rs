//! The appliance's side of the vhost-user and memif transports: which vNIC serves a socket,
//! what the memif frontend needs to see, refusals and queue re-mapping, and re-opening client
//! sides that could not be opened (a socket directory that appears later, say).
use crate::appliance::Appliance;
use crate::vnic::{AttachError, Endpoint, Side};
use std::time::Instant;

/// A memif vNIC as the memif frontend sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemifView {
    pub vnic: String,
    pub socket: String,
    pub id: u32,
    /// The server port's link: a client is connected.
    pub connected: bool,
    pub attached: bool,
}

impl Appliance {
    /// The vNIC whose vhost-user socket is `path`.
    pub fn vnic_on_socket(&self, path: &str) -> Option<String> {
        self.vnics
            .iter()
            .find(|v| v.client.socket() == Some(path))
            .map(|v| v.name.clone())
    }

    /// A vNIC's client transport config.
    pub fn client_config(&self, vnic: &str) -> Option<&crate::config::ClientConfig> {
        self.vnics
            .iter()
            .find(|v| v.name == vnic)
            .map(|v| &v.client)
    }

    /// The vhost device a vNIC serves now, if any.
    pub fn vhost_vid(&self, vnic: &str) -> Option<i32> {
        let v = self.vnics.iter().find(|v| v.name == vnic)?;
        match v.attach.as_ref()?.side {
            Side::Vhost { vid, .. } => Some(vid),
            _ => None,
        }
    }

    /// Every memif vNIC whose server port is open.
    pub fn memif_views(&self) -> Vec<MemifView> {
        self.vnics
            .iter()
            .filter_map(|v| {
                let Endpoint::Memif(p) = &v.endpoint else {
                    return None;
                };
                let crate::config::ClientConfig::Memif { socket, id, .. } = &v.client else {
                    return None;
                };
                Some(MemifView {
                    vnic: v.name.clone(),
                    socket: socket.clone(),
                    id: *id,
                    connected: p.link().is_ok_and(|l| l.up),
                    attached: v.attach.is_some(),
                })
            })
            .collect()
    }

    pub(crate) fn note_refused(&mut self, vnic: &str, why: String) -> Result<(), AttachError> {
        let i = self.vnic_index(vnic)?;
        self.vnics[i].client_refused = Some(why);
        Ok(())
    }

    /// Re-publish a vNIC's core so its queues follow the vrings the frontend enabled.
    pub(crate) fn requeue(&mut self, vnic: &str) -> Result<(), AttachError> {
        let i = self.vnic_index(vnic)?;
        let ci = self.vnics[i].core_idx;
        self.publish_core(ci)?;
        Ok(())
    }

    /// Try again to open client sides that are closed and due (health tick; after a reload).
    pub(crate) fn open_endpoints(&mut self) {
        let now = Instant::now();
        for v in &mut self.vnics {
            if let Endpoint::Closed { next_try, .. } = &v.endpoint {
                if *next_try <= now {
                    let pc = v.client_port_config();
                    let _ = v.open_endpoint(&pc);
                }
            }
        }
    }
}
