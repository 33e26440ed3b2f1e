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

/// The `main` of a binary that runs one service on its own: telemetry from the
/// environment, the command line `C`, then `serve` until SIGINT/SIGTERM fires the token it
/// is given, and the exit code of [`exit_code`].
pub async fn service_main<C, F, E>(
    program: &str,
    serve: impl FnOnce(C, tokio_util::sync::CancellationToken) -> F,
) -> std::process::ExitCode
where
    C: clap::Parser,
    F: std::future::Future<Output = std::result::Result<(), E>>,
    E: Into<anyhow::Error>,
{
    let result = async {
        let _telemetry = telemetry::init_from_env()?;
        let cli = C::parse();
        serve(cli, shutdown::on_signal()).await.map_err(Into::into)
    }
    .await;
    exit_code(program, result)
}
