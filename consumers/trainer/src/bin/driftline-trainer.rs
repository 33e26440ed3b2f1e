//! The trainer on its own (the same service as `driftline trainer`), for deployments that
//! run one process per service and for the kill -9 tests.

use clap::Parser;
use driftline_trainer::service::{TrainerArgs, run};

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
    let result = async {
        let _telemetry = driftline_process::telemetry::init_from_env()?;
        let cli = Cli::parse();
        run(
            cli.args,
            driftline_process::shutdown::on_signal(),
            Default::default(),
        )
        .await?;
        anyhow::Ok(())
    }
    .await;
    driftline_process::exit_code("driftline-trainer", result)
}
