//! Attach and detach: a client's rings are made, bound to the active backing device's queues
//! and published; at detach they are withdrawn, repaired if the client died mid-move, drained.
use super::build::new_token;
use super::{
    Attachment, Caps, LinkState, Owner, QueueRings, Side, CLIENT_LCORES, CLIENT_LCORE_BASE,
};
use crate::appliance::Appliance;
use crate::publish::PublishError;
use std::sync::Arc;
use vnic_dataplane::Ring;
use vnic_proto::msg::Attached;

/// What a client asks for at ATTACH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachRequest {
    pub queues: u32,
    pub depth: u32,
    pub mtu: u32,
    pub promisc: bool,
}

/// What ATTACH grants: the client's message, and the epoch it starts.
#[derive(Debug, Clone)]
pub struct AttachGrant {
    pub attached: Attached,
    pub epoch: u64,
}

/// Why ATTACH or DETACH was refused. Nothing changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    #[error("unknown vNIC {0:?}")]
    UnknownVnic(String),
    #[error("vNIC {0:?} is already attached")]
    AlreadyAttached(String),
    #[error("vNIC {0:?} is not attached")]
    NotAttached(String),
    #[error("{field} {value} out of range {range}")]
    OutOfRange {
        field: &'static str,
        value: u32,
        range: String,
    },
    #[error("vNIC {vnic:?} is served over {transport}, not shm: connect to its socket")]
    Transport {
        vnic: String,
        transport: &'static str,
    },
    #[error("cannot create client rings: {0}")]
    Rings(#[source] vnic_dataplane::Error),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl Appliance {
    pub(crate) fn vnic_index(&self, name: &str) -> Result<usize, AttachError> {
        self.vnics
            .iter()
            .position(|v| v.name == name)
            .ok_or_else(|| AttachError::UnknownVnic(name.into()))
    }

    /// Limits a client may ask for (CAPS).
    pub fn caps(&self, vnic: &str) -> Result<Caps, AttachError> {
        let v = &self.vnics[self.vnic_index(vnic)?];
        Ok(Caps {
            max_queues: v.max_queues as u32,
            min_depth: 64,
            max_depth: v.max_depth,
            min_mtu: 68,
            max_mtu: v.mtu,
            offloads: vec![],
            spoof_check: !v.allow_spoofing,
        })
    }

    /// Whether these peer credentials may attach `vnic`.
    pub fn allowed(&self, vnic: &str, uid: u32, gid: u32) -> Result<bool, AttachError> {
        let v = &self.vnics[self.vnic_index(vnic)?];
        Ok(v.allowed_uids.contains(&uid) || v.allowed_gids.contains(&gid))
    }

    /// The vNIC's epoch and attached owner.
    pub fn vnic_epoch(
        &self,
        vnic: &str,
    ) -> Result<(u64, Option<Owner>, Option<String>), AttachError> {
        let v = &self.vnics[self.vnic_index(vnic)?];
        Ok((
            v.epoch,
            v.attach.as_ref().map(|a| a.owner.clone()),
            v.token.clone(),
        ))
    }

    /// Link state of a vNIC (its active backing device).
    pub fn link(&self, vnic: &str) -> Result<LinkState, AttachError> {
        Ok(self.vnics[self.vnic_index(vnic)?].link())
    }

    /// The EAL lcore id a separate-process client of `vnic` must use.
    pub fn client_lcore(&self, vnic: &str) -> Option<u32> {
        self.vnic_index(vnic).ok().map(client_lcore)
    }

    /// The control-socket session attached to `vnic`, if a client session holds it.
    pub fn client_session(&self, vnic: &str) -> Option<u64> {
        let v = self.vnics.iter().find(|v| v.name == vnic)?;
        match v.attach.as_ref()?.owner {
            Owner::Client { session, .. } => Some(session),
            _ => None,
        }
    }

    /// Create the vNIC's client rings, bind queue i to VF queue i of the active backing device and
    /// publish the new table of its data core. Other vNICs keep forwarding throughout.
    pub(crate) fn attach(
        &mut self,
        vnic: &str,
        req: AttachRequest,
        owner: Owner,
    ) -> Result<AttachGrant, AttachError> {
        let i = self.vnic_index(vnic)?;
        let v = &self.vnics[i];
        if v.attach.is_some() {
            return Err(AttachError::AlreadyAttached(vnic.into()));
        }
        if v.client != crate::config::ClientConfig::Shm {
            return Err(AttachError::Transport {
                vnic: vnic.into(),
                transport: v.client.transport(),
            });
        }
        let range = |field: &'static str, value: u32, lo: u32, hi: u32| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                Err(AttachError::OutOfRange {
                    field,
                    value,
                    range: format!("{lo}..={hi}"),
                })
            }
        };
        range("queues", req.queues, 1, v.max_queues as u32)?;
        range("depth", req.depth, 64, v.max_depth)?;
        if !req.depth.is_power_of_two() {
            return Err(AttachError::OutOfRange {
                field: "depth",
                value: req.depth,
                range: "a power of two".into(),
            });
        }
        range("mtu", req.mtu, 68, v.mtu)?;
        let epoch = v.epoch + 1;
        let socket = vnic_dataplane::socket_id();
        let mut rings = Vec::new();
        let mut names = Vec::new();
        for q in 0..req.queues {
            // The epoch keeps names unique while an old ring may still be held by a client.
            let rxn = format!("{}.{}r{q}", v.name, epoch % 10_000);
            let txn = format!("{}.{}t{q}", v.name, epoch % 10_000);
            let rx = Ring::new(&rxn, req.depth, socket).map_err(AttachError::Rings)?;
            let tx = Ring::new(&txn, req.depth, socket).map_err(AttachError::Rings)?;
            rings.push((Arc::new(rx), Arc::new(tx)));
            names.push(QueueRings { rx: rxn, tx: txn });
        }
        let token = new_token();
        let core_idx = v.core_idx;
        let v = &mut self.vnics[i];
        v.attach = Some(Attachment {
            queues: req.queues as u16,
            depth: req.depth,
            mtu: req.mtu,
            promisc: req.promisc,
            side: Side::Rings(rings),
            owner,
        });
        if let Err(e) = self.publish_core(core_idx) {
            // Roll back: the core never saw the rings (or still runs the old table).
            self.vnics[i].attach = None;
            return Err(AttachError::Publish(e));
        }
        let v = &mut self.vnics[i];
        v.epoch = epoch;
        v.token = Some(token.clone());
        let mac = v.mac.to_string();
        let mempool = v.pool.name().to_string();
        Ok(AttachGrant {
            attached: Attached {
                queues: req.queues,
                depth: req.depth,
                mtu: req.mtu,
                promisc: req.promisc,
                rings: names,
                mempool,
                mac,
                link: self.link(vnic)?,
                token,
                client_lcore: client_lcore(i),
                file_prefix: self.shared_prefix(),
            },
            epoch,
        })
    }

    /// A vhost or memif client connected: serve it (publish its data core's table).
    pub(crate) fn connect(
        &mut self,
        vnic: &str,
        side: Side,
        owner: Owner,
    ) -> Result<u64, AttachError> {
        let i = self.vnic_index(vnic)?;
        let v = &mut self.vnics[i];
        if v.attach.is_some() {
            return Err(AttachError::AlreadyAttached(vnic.into()));
        }
        let queues = match &side {
            Side::Vhost { pairs, .. } => *pairs,
            _ => v.max_queues,
        };
        v.attach = Some(Attachment {
            queues,
            depth: 0,
            mtu: v.mtu,
            promisc: true,
            side,
            owner,
        });
        v.client_refused = None;
        let core_idx = v.core_idx;
        if let Err(e) = self.publish_core(core_idx) {
            self.vnics[i].attach = None;
            return Err(AttachError::Publish(e));
        }
        let v = &mut self.vnics[i];
        v.epoch += 1;
        Ok(v.epoch)
    }

    /// Unpublish the vNIC, then drain its rings and return every mbuf. Returns mbufs drained.
    /// The client must have stopped using the rings (it asked, died, or was told).
    pub(crate) fn detach(&mut self, vnic: &str) -> Result<usize, AttachError> {
        let i = self.vnic_index(vnic)?;
        let Some(att) = self.vnics[i].attach.take() else {
            return Err(AttachError::NotAttached(vnic.into()));
        };
        let core_idx = self.vnics[i].core_idx;
        self.vnics[i].epoch += 1;
        if let Err(e) = self.publish_core(core_idx) {
            // The core may still read the old table: keep the rings (and their mbufs) alive
            // rather than free memory it may touch; report it.
            tracing::error!(vnic, "detach: {e}; rings kept");
            self.vnics[i].attach = Some(att);
            return Err(AttachError::Publish(e));
        }
        let mut drained = 0;
        for (rx, tx) in att.rings() {
            if matches!(att.owner, Owner::Client { .. }) {
                // A client killed mid-move leaves a half-done in-place move: finish or undo it
                // so every mbuf is in a ring before the drain.
                let r = vnic_dataplane::ring::recover_client(rx, tx);
                if r != vnic_dataplane::ring::Recovery::Clean {
                    tracing::info!(
                        vnic,
                        ?r,
                        "repaired the rings of a client that died mid-move"
                    );
                }
            }
            drained += rx.drain() + tx.drain();
        }
        Ok(drained)
    }
}

/// EAL lcore ids for separate-process clients: mempool caches are per lcore id in shared memory,
/// so every process needs its own.
fn client_lcore(vnic_index: usize) -> u32 {
    CLIENT_LCORE_BASE + (vnic_index as u32 % CLIENT_LCORES)
}
