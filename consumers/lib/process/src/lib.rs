//! What every driftline binary does around its work: logs and traces (stderr, OTLP), the
//! Prometheus `/metrics` endpoint and its HTTP server, one shutdown token for SIGINT and
//! SIGTERM, and one way to end with an error.

pub mod http;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;

/// Errors setting up the process's telemetry or servers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("telemetry: {0}")]
    Telemetry(String),
    #[error("config: {0}")]
    Config(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a binary ends: success, or one line `<program>: <error with its causes>` on stderr
/// and a failure code (no backtrace, even with RUST_BACKTRACE set).
pub fn exit_code(program: &str, result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
