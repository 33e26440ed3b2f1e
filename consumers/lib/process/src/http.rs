//! Serving a service's HTTP API until shutdown: one server for every driftline service,
//! with the same limits on each.
//!
//! axum::serve sets no timer on hyper, so a client could hold a connection open forever
//! by sending its headers one byte at a time (slowloris), and it accepts every connection
//! offered. This loop gives hyper a timer and a header-read timeout, caps the connections
//! open at once, and wraps every app in a body limit, a concurrency limit and a request
//! timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::limit::ConcurrencyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::{debug, info, warn};

use crate::{Error, Result};

/// What one server allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body, bytes (413 past it).
    pub body_bytes: usize,
    /// Requests handled at once; more wait.
    pub concurrency: usize,
    /// Time to answer one request (408 past it).
    pub timeout: Duration,
    /// Time a client has to send a request's headers, and the longest a kept-alive
    /// connection may sit idle; then it is closed.
    pub header_timeout: Duration,
    /// Connections open at once; more wait to be accepted.
    pub connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 2 * 1024 * 1024,
            concurrency: 512,
            timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            connections: 1024,
        }
    }
}

/// Binds `addr` and serves `app` within `limits` until `shutdown`, then lets the requests
/// in flight finish. Returns the bound address (useful with port 0) and the server task.
pub async fn serve(
    what: &str,
    addr: SocketAddr,
    app: Router,
    limits: Limits,
    shutdown: &CancellationToken,
) -> Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener.local_addr().unwrap_or(addr);
    info!(addr = %bound, "{what} listening");
    let app = app
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(ConcurrencyLimitLayer::new(limits.concurrency.max(1)))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.timeout,
        ));
    let task = tokio::spawn(accept(listener, app, limits, shutdown.clone()));
    Ok((bound, task))
}

/// Accepts connections while fewer than `limits.connections` are open; each is served
/// by hyper's HTTP/1 with the header-read timeout. On shutdown it stops accepting, asks
/// every connection to close after its current request, and waits for them.
async fn accept(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = limits.connections.clamp(1, Semaphore::MAX_PERMITS);
    let open = Arc::new(Semaphore::new(slots));
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = open.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, a connection reset before accept: wait a
                    // little rather than spin.
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = http
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let served = tokio::select! {
                served = conn.as_mut() => served,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = served {
                debug!(error = %e, "connection ended");
            }
            drop(slot);
        });
    }
    // Every open connection holds a slot: all slots back means all are closed.
    let _all = open.acquire_many(slots as u32).await;
    Ok(())
}
