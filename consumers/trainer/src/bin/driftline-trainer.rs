//! The trainer on its own (the same service as `driftline trainer`), for deployments that
//! run one process per service and for the kill -9 tests.

use clap::Parser;
use driftline_trainer::service::{self, TrainerArgs};

#[derive(Debug, Parser)]
#[command(
    name = "driftline-trainer",
    version,
    about = "Train and publish model versions on driftline.models"
)]
struct Cli {
    #[command(flatten)]
    args: TrainerArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    driftline_process::service_main("driftline-trainer", |cli: Cli, shutdown| {
        service::run(cli.args, shutdown, Default::default())
    })
    .await
}
