//! vhost-user clients: the vhost library's device events (posted by its thread) become
//! commands on the control thread. A device that comes up is served; one that goes is no longer
//! (its memory is already out of the data path: see `vnic_dataplane::vhost`).
use crate::appliance::{Appliance, Command};
use crate::config::{ClientConfig, VhostMode};
use crate::vnic::{Owner, Side};
use crossbeam::channel::Receiver;
use vnic_dataplane::VhostEvent;

/// The vhost event queue's reader.
pub struct VhostFrontend {
    events: Receiver<VhostEvent>,
}

impl Default for VhostFrontend {
    fn default() -> Self {
        Self::new()
    }
}

impl VhostFrontend {
    pub fn new() -> Self {
        VhostFrontend {
            events: vnic_dataplane::vhost::events(),
        }
    }

    /// Turn every pending vhost event into a command.
    pub fn poll(&mut self, app: &mut Appliance) {
        while let Ok(ev) = self.events.try_recv() {
            handle(app, ev);
        }
    }
}

fn handle(app: &mut Appliance, ev: VhostEvent) {
    match ev {
        VhostEvent::Ready {
            socket,
            vid,
            pairs,
            features,
            kicks_off,
            gate,
        } => {
            let Some(vnic) = app.vnic_on_socket(&socket) else {
                tracing::warn!(socket, vid, "vhost device on a socket no vNIC serves");
                return;
            };
            if app.vhost_vid(&vnic).is_some() {
                // Reconnect before the old device's Gone (cannot happen in order; be safe).
                let _ = app.apply(Command::Disconnect { vnic: vnic.clone() });
            }
            let mode = match app.client_config(&vnic) {
                Some(ClientConfig::VhostUser {
                    mode: VhostMode::Client,
                    ..
                }) => "client",
                _ => "server",
            };
            let enabled = crate::publish::enabled_pairs(gate.enabled_vrings(), pairs).len();
            let owner = Owner::Vhost {
                socket: socket.clone(),
                mode: mode.into(),
                vid,
                pairs: pairs as u32,
                enabled_pairs: enabled as u32,
                features: format!("{features:#x}"),
                kicks_off,
            };
            let side = Side::Vhost { vid, gate, pairs };
            match app.apply(Command::Connect {
                vnic: vnic.clone(),
                side,
                owner,
            }) {
                Ok(_) => tracing::info!(vnic, socket, vid, pairs, "vhost client attached"),
                Err(e) => tracing::error!(vnic, socket, vid, "vhost client not attached: {e}"),
            }
        }
        VhostEvent::Refused {
            socket,
            pairs,
            max_pairs,
            ..
        } => {
            if let Some(vnic) = app.vnic_on_socket(&socket) {
                let why = format!(
                    "the vhost frontend set up {pairs} queue pairs; the vNIC has {max_pairs}"
                );
                let _ = app.apply(Command::Refused { vnic, why });
            }
        }
        VhostEvent::VringState { socket, vid, .. } => {
            if let Some(vnic) = app.vnic_on_socket(&socket) {
                if app.vhost_vid(&vnic) == Some(vid) {
                    let _ = app.apply(Command::Requeue { vnic });
                }
            }
        }
        VhostEvent::Gone { socket, vid } => {
            if let Some(vnic) = app.vnic_on_socket(&socket) {
                if app.vhost_vid(&vnic) == Some(vid) {
                    match app.apply(Command::Disconnect { vnic: vnic.clone() }) {
                        Ok(_) => tracing::info!(vnic, socket, vid, "vhost client detached"),
                        Err(e) => tracing::error!(vnic, "vhost detach: {e}"),
                    }
                }
            }
        }
    }
}
