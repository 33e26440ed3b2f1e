//! Serving a service's HTTP API until shutdown.

use std::net::SocketAddr;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{Error, Result};

/// Binds `addr` and serves `app` until `shutdown`, draining in-flight requests.
/// Returns the bound address (useful with port 0) and the server task.
pub async fn serve(
    what: &str,
    addr: SocketAddr,
    app: axum::Router,
    shutdown: &CancellationToken,
) -> Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener.local_addr().unwrap_or(addr);
    info!(addr = %bound, "{what} listening");
    let shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    });
    Ok((bound, task))
}
