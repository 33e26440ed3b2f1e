//! The monitor alone, for deployments that run one process per service and for the
//! crash tests (the `driftline monitor` subcommand runs the same [`service::run`]).

use clap::Parser;
use driftline_monitor::service::{self, MonitorArgs};

#[derive(Debug, Parser)]
#[command(
    name = "driftline-monitor",
    about = "Watch driftline.predictions for drift; report to driftline.drift, ask driftline.retrain"
)]
struct Cli {
    #[command(flatten)]
    args: MonitorArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = async {
        let _telemetry = driftline_process::telemetry::init_from_env()?;
        let cli = Cli::parse();
        service::run(
            cli.args,
            driftline_process::shutdown::on_signal(),
            Default::default(),
        )
        .await?;
        anyhow::Ok(())
    }
    .await;
    driftline_process::exit_code("driftline-monitor", result)
}
