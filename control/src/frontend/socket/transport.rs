//! Socket transport: listeners, peer credentials, and one reader thread per connection that only
//! frames lines (size-limited) and hands them to the control thread.
use crate::proto;
use crossbeam::channel::Sender;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Peer credentials from `SO_PEERCRED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Creds {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Control,
    Admin,
}

pub(crate) enum ConnEvent {
    Accepted {
        id: u64,
        kind: Kind,
        stream: UnixStream,
        creds: Creds,
    },
    Line {
        id: u64,
        line: Vec<u8>,
    },
    TooLarge {
        id: u64,
        len: usize,
    },
    Closed {
        id: u64,
    },
}

/// Server errors at bind time.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{path}: {what}: {err}")]
    Io {
        path: PathBuf,
        what: &'static str,
        err: std::io::Error,
    },
    #[error("{path}: another vnicd is listening there")]
    InUse { path: PathBuf },
}

pub(crate) fn bind(path: &Path, mode: u32, gid: Option<u32>) -> Result<UnixListener, ServerError> {
    let io = |what| {
        let path = path.to_path_buf();
        move |err| ServerError::Io { path, what, err }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("create directory"))?;
    }
    if path.exists() {
        // A live listener answers; a stale socket file from a crash does not.
        if UnixStream::connect(path).is_ok() {
            return Err(ServerError::InUse { path: path.into() });
        }
        std::fs::remove_file(path).map_err(io("remove stale socket"))?;
    }
    let l = UnixListener::bind(path).map_err(io("bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io("chmod"))?;
    if let Some(g) = gid {
        std::os::unix::fs::chown(path, None, Some(g)).map_err(io("chown"))?;
    }
    Ok(l)
}

pub(crate) fn peer_creds(s: &UnixStream) -> Creds {
    match nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(c) => Creds {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
        },
        // Unknown credentials match no allow-list entry.
        Err(_) => Creds {
            pid: -1,
            uid: u32::MAX,
            gid: u32::MAX,
        },
    }
}

pub(crate) fn reader(id: u64, stream: UnixStream, tx: Sender<ConnEvent>) {
    let mut r = BufReader::new(stream);
    let mut buf = Vec::with_capacity(512);
    loop {
        buf.clear();
        // Read at most one byte past the limit, so an endless line cannot grow memory.
        let n = match (&mut r)
            .take(proto::MAX_MESSAGE as u64 + 2)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if buf.last() != Some(&b'\n') && n > proto::MAX_MESSAGE {
            // Oversized: report, then skip the rest of that line.
            let mut skipped = n;
            loop {
                let mut chunk = Vec::new();
                match (&mut r).take(64 * 1024).read_until(b'\n', &mut chunk) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(ConnEvent::Closed { id });
                        return;
                    }
                    Ok(k) => {
                        skipped += k;
                        if chunk.last() == Some(&b'\n') {
                            break;
                        }
                    }
                }
            }
            if tx.send(ConnEvent::TooLarge { id, len: skipped }).is_err() {
                return;
            }
            continue;
        }
        while buf.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
            buf.pop();
        }
        if buf.is_empty() {
            continue;
        }
        if tx
            .send(ConnEvent::Line {
                id,
                line: buf.clone(),
            })
            .is_err()
        {
            return;
        }
    }
    let _ = tx.send(ConnEvent::Closed { id });
}

pub(crate) fn acceptor(l: UnixListener, kind: Kind, tx: Sender<ConnEvent>, base: u64) {
    let mut n = 0u64;
    for s in l.incoming() {
        let Ok(stream) = s else { continue };
        n += 1;
        let id = base + n;
        let creds = peer_creds(&stream);
        let Ok(read_half) = stream.try_clone() else {
            continue;
        };
        // Writes come from the control thread; a client that stops reading must not stall it.
        let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
        if tx
            .send(ConnEvent::Accepted {
                id,
                kind,
                stream,
                creds,
            })
            .is_err()
        {
            return;
        }
        let tx2 = tx.clone();
        let _ = std::thread::Builder::new()
            .name(format!("vnic-conn{id}"))
            .spawn(move || reader(id, read_half, tx2));
    }
}
