//! kill -9 during training and during publishing, for the bootstrap and for a retrain
//! event: after the restarts there is exactly one version per trigger.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use common::World;
use driftline_tests::{kafka, producer};

struct Trainer {
    child: Child,
    lines: Receiver<String>,
}

impl Trainer {
    /// Every start joins the same consumer group, as a restarted service would: it gets
    /// the partitions once the killed member's session has expired on the broker.
    fn start(w: &World, state: &Path) -> Result<Self> {
        let group = format!("{}-trainer", w.model);
        let mut child = Command::new(env!("CARGO_BIN_EXE_driftline-trainer"))
            .arg("--spec")
            .arg(&w.spec_path)
            .arg("--state-dir")
            .arg(state)
            .args(["--group", &group, "--http-addr", "127.0.0.1:0"])
            .args(["--labelled-topic", &w.labelled])
            .args([
                "--retrain-topic",
                &w.retrain,
                "--models-topic",
                &w.models,
                "--dlq-topic",
                &w.dlq,
            ])
            .args([
                "--bootstrap-until",
                "2013-04-01",
                "--min-rows",
                "50",
                "--phase-pause-ms",
                "2000",
            ])
            .env("DRIFTLINE_BOOTSTRAP_SERVERS", kafka().bootstrap_servers)
            .env(
                "RUST_LOG",
                std::env::var("TRAINER_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .spawn()?;
        let lines = common::stdout_lines(&mut child)?;
        Ok(Self { child, lines })
    }

    /// Waits for the phase line; fails on any other training line first (a second run of
    /// something already published).
    fn wait_phase(&self, phase: &str, trigger: &str, timeout: Duration) -> Result<()> {
        let want = format!("phase={phase} ");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                if line.starts_with(&want) && line.ends_with(&format!("trigger={trigger}")) {
                    return Ok(());
                }
                if line.starts_with("phase=training") {
                    bail!("unexpected: {line}");
                }
            }
        }
        bail!("no phase={phase} for {trigger} within {timeout:?}")
    }

    /// No training starts within `quiet`.
    fn stays_idle(&self, quiet: Duration) -> Result<()> {
        let deadline = Instant::now() + quiet;
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200))
                && line.starts_with("phase=")
            {
                bail!("trained again: {line}");
            }
        }
        Ok(())
    }

    fn wait_phase_then_kill(self, phase: &str, trigger: &str, timeout: Duration) -> Result<()> {
        self.wait_phase(phase, trigger, timeout)?;
        self.kill9()
    }

    fn kill9(mut self) -> Result<()> {
        self.child.kill()?; // SIGKILL: no shutdown path runs
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Trainer {
    /// A failed assertion must not leave the child running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_one_version_per_trigger_after_kills_during_training_and_publishing() -> Result<()>
{
    let w = World::new().await?;
    let state = tempfile::tempdir()?;
    let long = Duration::from_secs(90);

    // Bootstrap: killed while training, then killed right after publishing.
    Trainer::start(&w, state.path())?.wait_phase_then_kill("training", "bootstrap", long)?;
    let t = Trainer::start(&w, state.path())?;
    t.wait_phase("training", "bootstrap", long)?;
    t.wait_phase("published", "bootstrap", long)?;
    t.kill9()?;

    // A retrain event: killed while training, then right after publishing (the job is
    // still in the store), then a restart that must find the version and not train.
    // The joiner in front of the trainer is not what this test kills.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let joiner = w.spawn_joiner(state.path(), &shutdown);
    let p = producer()?;
    w.send_labelled(&p, 0, 300, |x| 5.0 - 2.0 * x).await?;
    w.wait_labelled(300).await?;
    w.send_retrain(&p, "r1", 0, 300).await?;
    // The trigger names the drift report behind the retrain event.
    let trigger = "drift:report-r1";
    Trainer::start(&w, state.path())?.wait_phase_then_kill("training", trigger, long)?;
    let t = Trainer::start(&w, state.path())?;
    t.wait_phase("training", trigger, long)?;
    t.wait_phase("published", trigger, long)?;
    t.kill9()?;
    // The same event delivered again, too.
    w.send_retrain(&p, "r1", 0, 300).await?;
    let t = Trainer::start(&w, state.path())?;
    t.stays_idle(Duration::from_secs(15))?;
    t.kill9()?;
    shutdown.cancel();
    joiner.await??;

    let records = w.model_records()?;
    let mut seen: Vec<(i64, String)> = records
        .iter()
        .map(|m| (m.version, m.trigger.clone()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [(1, "bootstrap".to_string()), (2, trigger.to_string())],
        "one record per trigger"
    );
    Ok(())
}
