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
    driftline_process::service_main("driftline-monitor", |cli: Cli, shutdown| {
        service::run(cli.args, shutdown, Default::default())
    })
    .await
}
