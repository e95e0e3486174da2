//! A vNIC's client side for the transports that are not shm: the vhost-user socket or the memif
//! server port clients connect to, opened when the vNIC goes into service, with the socket
//! file's owner, group and mode taken from the vNIC's `allowed_uids`/`allowed_gids` (file
//! permissions are the only access check vhost-user and memif allow).
use super::Vnic;
use crate::config::{ClientConfig, VhostMode};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vnic_dataplane::{Port, PortConfig, Ring, VhostSocket, VidGate};

/// How long a client side that could not be opened waits before the next try.
pub(crate) const REOPEN_EVERY: Duration = Duration::from_secs(1);

pub(crate) enum Endpoint {
    /// shm: clients come in over the control socket.
    Shm,
    /// Not open (yet, or it failed: why); health retries it.
    Closed {
        error: Option<String>,
        next_try: Instant,
    },
    /// Held: dropping it unregisters the socket.
    Vhost { _socket: VhostSocket },
    /// The memif server port.
    Memif(Port),
}

impl Endpoint {
    pub(crate) fn closed(c: &ClientConfig) -> Endpoint {
        match c {
            ClientConfig::Shm => Endpoint::Shm,
            _ => Endpoint::Closed {
                error: None,
                next_try: Instant::now(),
            },
        }
    }
    pub(crate) fn error(&self) -> Option<&str> {
        match self {
            Endpoint::Closed { error, .. } => error.as_deref(),
            _ => None,
        }
    }
}

/// What an attachment holds on to, by transport.
#[derive(Debug, Clone)]
pub enum Side {
    /// shm: the client's ring pairs.
    Rings(Vec<(Arc<Ring>, Arc<Ring>)>),
    /// A vhost device: its id and gate, and the queue pairs it set up (its features are in the
    /// owner record).
    Vhost {
        vid: i32,
        gate: Arc<VidGate>,
        pairs: u16,
    },
    /// The memif port's connection (the port itself is the endpoint's).
    Memif,
}

/// Why a client side could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("client.socket {path}: {why}")]
pub struct EndpointError {
    pub path: String,
    pub why: String,
}

/// Check a socket path vnicd is about to listen on: its directory exists; nothing is there, or a
/// stale socket nobody listens on (removed). A regular file, a directory or a live socket is
/// never touched.
pub(crate) fn check_listen_path(path: &str) -> Result<(), EndpointError> {
    let e = |why: String| EndpointError {
        path: path.into(),
        why,
    };
    if !precheck_listen_path(path)? {
        return Ok(());
    }
    let p = Path::new(path);
    match std::os::unix::net::UnixStream::connect(p) {
        Ok(_) => Err(e("another process listens on it".into())),
        Err(_) => std::fs::remove_file(p)
            .map_err(|err| e(format!("stale socket cannot be removed: {err}"))),
    }
}

/// The checks that need nothing removed (reload's prepare phase): the directory exists, and
/// what is at the path, if anything, is a socket. Returns whether something is there.
pub(crate) fn precheck_listen_path(path: &str) -> Result<bool, EndpointError> {
    let e = |why: String| EndpointError {
        path: path.into(),
        why,
    };
    let p = Path::new(path);
    let dir = p.parent().unwrap_or(Path::new("/"));
    if !dir.is_dir() {
        return Err(e(format!("directory {} does not exist", dir.display())));
    }
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return Ok(false);
    };
    if !md.file_type().is_socket() {
        return Err(e(
            "exists and is not a socket (vnicd does not remove it)".into()
        ));
    }
    Ok(true)
}

/// Whether vnicd will listen on this client config's socket (vhost server mode, memif).
pub(crate) fn listens(c: &ClientConfig) -> Option<&str> {
    match c {
        ClientConfig::VhostUser {
            socket,
            mode: VhostMode::Server,
        }
        | ClientConfig::Memif { socket, .. } => Some(socket),
        _ => None,
    }
}

/// Owner, group and mode from the vNIC's credentials: owner the allowed uid (root when none),
/// group the allowed gid; mode 0660 with a group, else 0600.
pub(crate) fn apply_permissions(path: &str, uids: &[u32], gids: &[u32]) -> Result<(), String> {
    let uid = uids.first().copied().unwrap_or(0);
    let gid = gids.first().copied();
    std::os::unix::fs::chown(path, Some(uid), Some(gid.unwrap_or(0)))
        .map_err(|e| format!("chown {uid}:{}: {e}", gid.unwrap_or(0)))?;
    let mode = if gid.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {mode:o}: {e}"))
}

/// The memif server port's devargs for a vNIC.
pub(crate) fn memif_devargs(vnic: &str, socket: &str, id: u32, secret: Option<&str>) -> String {
    // A file, not the abstract namespace (net_memif's default since 21.11): file permissions are
    // the access check, and VPP and libmemif dial files.
    let mut d =
        format!("net_memif_client_{vnic},role=server,socket={socket},socket-abstract=no,id={id}");
    if let Some(s) = secret {
        d.push_str(",secret=");
        d.push_str(s);
    }
    d
}

impl Vnic {
    /// Queues of the memif server port: the vNIC's.
    pub(crate) fn client_port_config(&self) -> PortConfig {
        PortConfig {
            queues: self.max_queues,
            rx_desc: super::VF_DESC,
            tx_desc: super::VF_DESC,
            mtu: Some(self.mtu as u16),
            promiscuous: false,
        }
    }

    /// Open the client side (vhost socket or memif port) if it is not open. Nothing to do for shm.
    pub(crate) fn open_endpoint(&mut self, port_cfg: &PortConfig) -> Result<(), EndpointError> {
        if !matches!(self.endpoint, Endpoint::Closed { .. }) {
            return Ok(());
        }
        match self.try_open(port_cfg) {
            Ok(ep) => {
                tracing::info!(vnic = %self.name, transport = self.client.transport(),
                    socket = self.client.socket().unwrap_or(""), "client side open");
                self.endpoint = ep;
                Ok(())
            }
            Err(err) => {
                tracing::error!(vnic = %self.name, "client side not open: {err}");
                self.endpoint = Endpoint::Closed {
                    error: Some(err.to_string()),
                    next_try: Instant::now() + REOPEN_EVERY,
                };
                Err(err)
            }
        }
    }

    fn try_open(&self, port_cfg: &PortConfig) -> Result<Endpoint, EndpointError> {
        let fail = |path: &str, why: String| EndpointError {
            path: path.into(),
            why,
        };
        match &self.client {
            ClientConfig::Shm => Ok(Endpoint::Shm),
            ClientConfig::VhostUser { socket, mode } => {
                let m = match mode {
                    VhostMode::Server => {
                        check_listen_path(socket)?;
                        vnic_dataplane::VhostMode::Server
                    }
                    VhostMode::Client => vnic_dataplane::VhostMode::Client,
                };
                let s = VhostSocket::start(socket, m, self.max_queues)
                    .map_err(|e| fail(socket, e.to_string()))?;
                if *mode == VhostMode::Server {
                    apply_permissions(socket, &self.allowed_uids, &self.allowed_gids)
                        .map_err(|e| fail(socket, e))?;
                }
                Ok(Endpoint::Vhost { _socket: s })
            }
            ClientConfig::Memif { socket, id, secret } => {
                check_listen_path(socket)?;
                let devargs = memif_devargs(&self.name, socket, *id, secret.as_deref());
                let mut port = Port::open(&devargs).map_err(|e| fail(socket, e.to_string()))?;
                port.configure(port_cfg, &self.pool)
                    .and_then(|()| port.start())
                    .map_err(|e| fail(socket, e.to_string()))?;
                apply_permissions(socket, &self.allowed_uids, &self.allowed_gids)
                    .map_err(|e| fail(socket, e))?;
                Ok(Endpoint::Memif(port))
            }
        }
    }
}
