//! The alerts service alone, for deployments that run one process per service (the
//! `driftline alerts` subcommand runs the same [`service::run`]).

use clap::Parser;
use driftline_alerts::service::{self, AlertsArgs};

#[derive(Debug, Parser)]
#[command(
    name = "driftline-alerts",
    about = "Post the monitor's drift decisions from driftline.drift to webhooks"
)]
struct Cli {
    #[command(flatten)]
    args: AlertsArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    driftline_process::service_main("driftline-alerts", |cli: Cli, shutdown| {
        service::run(cli.args, shutdown, Default::default())
    })
    .await
}
