//! The one HTTP server every service runs, over real sockets: a client that never
//! finishes its headers is cut off, connections past the cap wait for a free slot, a
//! slow handler gets a 408 and a big body a 413.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use driftline_process::http::{Limits, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route(
            "/echo",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
}

/// Sends a whole request and reads the answer's status.
async fn status(stream: &mut TcpStream, request: &str) -> Result<u16> {
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    Ok(text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

const GET: &str = "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn slow_clients_are_cut_off_and_connections_past_the_cap_wait() -> Result<()> {
    let limits = Limits {
        body_bytes: 1024,
        timeout: Duration::from_secs(1),
        header_timeout: Duration::from_secs(1),
        connections: 2,
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let (addr, server) = serve("test", "127.0.0.1:0".parse()?, app(), limits, &shutdown).await?;

    // A slowloris client: half a request line, then nothing. Closed within the timeout.
    let started = Instant::now();
    let mut slow = TcpStream::connect(addr).await?;
    slow.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await?;
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    ensure!(
        closed.is_ok(),
        "a client that never finished its headers was kept"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // Two idle connections fill the cap: a third is not served until one is cut off.
    let _a = TcpStream::connect(addr).await?;
    let _b = TcpStream::connect(addr).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let mut third = TcpStream::connect(addr).await?;
    ensure!(status(&mut third, GET).await? == 200);
    let waited = started.elapsed();
    ensure!(
        waited >= Duration::from_millis(500),
        "served at once past the cap ({waited:?})"
    );

    // A handler past the request timeout: 408. A body past the limit: 413.
    let mut c = TcpStream::connect(addr).await?;
    let slow_get = "GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    ensure!(status(&mut c, slow_get).await? == 408);
    let body = "x".repeat(2048);
    let big = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut c = TcpStream::connect(addr).await?;
    ensure!(status(&mut c, &big).await? == 413);

    shutdown.cancel();
    drop((_a, _b));
    tokio::time::timeout(Duration::from_secs(5), server).await???;
    Ok(())
}
