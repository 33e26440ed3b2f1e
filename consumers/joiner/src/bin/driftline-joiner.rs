//! The joiner alone, for deployments that run one process per service and for the crash
//! tests (the `driftline joiner` subcommand runs the same [`service::run`]).

use clap::Parser;
use driftline_joiner::service::{self, JoinerArgs};

#[derive(Debug, Parser)]
#[command(
    name = "driftline-joiner",
    about = "Join driftline.predictions with driftline.actuals into driftline.labelled"
)]
struct Cli {
    #[command(flatten)]
    args: JoinerArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    driftline_process::service_main("driftline-joiner", |cli: Cli, shutdown| {
        service::run(cli.args, shutdown, Default::default())
    })
    .await
}
