//! The `/metrics` listener (`tiny_http`) on TCP or a unix socket.
//!
//! One thread takes requests and hands them to two responder threads through a bounded queue;
//! when the queue is full the request gets `503` at once, so a scrape storm or a client that
//! never reads its response costs a bounded number of threads and never the control thread's
//! time. Threads are made from the control thread, so they inherit its CPU (the main core), never
//! a data core's.
use super::{render, Format, Snapshot};
use crate::config::MetricsListen;
use crossbeam::channel::{bounded, Receiver, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Requests waiting for a responder; beyond it, `503`.
const QUEUE: usize = 64;
const RESPONDERS: usize = 2;

/// A running listener; dropping it stops it.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    threads: Vec<JoinHandle<()>>,
    /// Where it listens, as the config says it (for logs and status).
    pub listen: String,
}

impl MetricsServer {
    /// Bind and start serving `snapshot`. The error names the address and the cause.
    pub fn start(listen: &MetricsListen, snapshot: Snapshot) -> Result<MetricsServer, String> {
        let (server, shown) = match listen {
            MetricsListen::Tcp(a) => {
                let l = std::net::TcpListener::bind(a)
                    .map_err(|e| format!("metrics.listen {a}: {e}"))?;
                (tiny_http::Server::from_listener(l, None), a.to_string())
            }
            MetricsListen::Unix(p) => {
                let l = crate::frontend::socket::transport::bind(p, 0o660, None)
                    .map_err(|e| format!("metrics.listen unix:{}: {e}", p.display()))?;
                (
                    tiny_http::Server::from_listener(l, None),
                    format!("unix:{}", p.display()),
                )
            }
        };
        let server = Arc::new(server.map_err(|e| format!("metrics.listen {shown}: {e}"))?);
        let (tx, rx) = bounded::<tiny_http::Request>(QUEUE);
        let mut threads = Vec::new();
        for i in 0..RESPONDERS {
            let rx = rx.clone();
            let snap = snapshot.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("vnicd-metrics{i}"))
                    .spawn(move || respond_all(rx, snap))
                    .map_err(|e| format!("metrics: cannot start a thread: {e}"))?,
            );
        }
        let srv = server.clone();
        threads.push(
            std::thread::Builder::new()
                .name("vnicd-metrics".into())
                .spawn(move || {
                    for req in srv.incoming_requests() {
                        if let Err(TrySendError::Full(req)) = tx.try_send(req) {
                            let _ = req.respond(
                                tiny_http::Response::from_string("busy: too many scrapes\n")
                                    .with_status_code(503),
                            );
                        }
                    }
                })
                .map_err(|e| format!("metrics: cannot start a thread: {e}"))?,
        );
        tracing::info!("metrics on {shown}/metrics");
        Ok(MetricsServer {
            server,
            threads,
            listen: shown,
        })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        // Ends incoming_requests(); the queue's sender goes with that thread, ending the rest.
        self.server.unblock();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn respond_all(rx: Receiver<tiny_http::Request>, snap: Snapshot) {
    for req in rx {
        let _ = respond(req, &snap);
    }
}

fn respond(req: tiny_http::Request, snap: &Snapshot) -> std::io::Result<()> {
    let text =
        |code: u16, body: &str| tiny_http::Response::from_string(body).with_status_code(code);
    if req.url().split('?').next() != Some("/metrics") {
        return req.respond(text(404, "not found: vnicd serves /metrics\n"));
    }
    if !matches!(
        req.method(),
        tiny_http::Method::Get | tiny_http::Method::Head
    ) {
        return req.respond(text(405, "method not allowed: GET /metrics\n"));
    }
    let accept = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Accept"))
        .map(|h| h.value.as_str().to_string());
    let format = Format::from_accept(accept.as_deref());
    let Some(status) = snap.fresh() else {
        return req.respond(text(503, "not ready: no status yet\n"));
    };
    match render(status, format) {
        Ok(body) => {
            let ct = tiny_http::Header::from_bytes("Content-Type", format.content_type())
                .map_err(|()| std::io::Error::other("content type"))?;
            req.respond(tiny_http::Response::from_string(body).with_header(ct))
        }
        Err(_) => req.respond(text(500, "cannot encode the metrics\n")),
    }
}
