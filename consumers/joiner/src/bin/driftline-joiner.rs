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
    driftline_process::exit_code("driftline-joiner", result)
}
