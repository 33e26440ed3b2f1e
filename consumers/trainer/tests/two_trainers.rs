//! Two trainers in one group, three models over three partitions: each model is trained
//! and numbered by the owner of its partition. One trainer is frozen (SIGSTOP) in the
//! middle of a fit until the group gives its partitions to the other, which trains and
//! publishes the same job; thawed, the frozen one finishes its fit and must publish
//! nothing (its partition's writer was fenced, or it has seen the rebalance). At the end
//! every model has exactly one record per version number and one version per trigger.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{World, row};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{Event, Labelled, SourcePosition};
use driftline_tests::{kafka, produce, producer};

struct Trainer {
    name: &'static str,
    child: Child,
    lines: Receiver<String>,
    log: PathBuf,
}

impl Trainer {
    /// A trainer of every model of `w`, in the group every instance shares.
    fn start(name: &'static str, w: &World, state: &Path) -> Result<Self> {
        let log = state.with_extension("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_driftline-trainer"));
        for (_, spec) in &w.specs {
            cmd.arg("--spec").arg(spec);
        }
        let mut child = cmd
            .arg("--state-dir")
            .arg(state)
            .args(["--group", &format!("{}-trainers", w.model)])
            .args(["--http-addr", "127.0.0.1:0"])
            .args([
                "--labelled-topic",
                &w.labelled,
                "--retrain-topic",
                &w.retrain,
            ])
            .args(["--models-topic", &w.models, "--dlq-topic", &w.dlq])
            .args(["--bootstrap-until", "2013-04-01", "--min-rows", "50"])
            .args(["--phase-pause-ms", "3000"])
            .env("DRIFTLINE_BOOTSTRAP_SERVERS", kafka().bootstrap_servers)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(File::create(&log)?)
            .spawn()?;
        let lines = common::stdout_lines(&mut child)?;
        Ok(Self {
            name,
            child,
            lines,
            log,
        })
    }

    fn signal(&self, signal: &str) -> Result<()> {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()?
            .success();
        ensure!(ok, "kill {signal} {} failed", self.name);
        Ok(())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Trainer {
    fn drop(&mut self) {
        let _ = self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first phase line either trainer prints for `trigger`, and which trainer printed it.
fn first_phase<'a>(
    trainers: &'a [&'a Trainer],
    phase: &str,
    trigger: &str,
    timeout: Duration,
) -> Result<(&'a Trainer, String)> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for t in trainers {
            while let Ok(line) = t.lines.try_recv() {
                if line.starts_with(&format!("phase={phase} "))
                    && line.ends_with(&format!("trigger={trigger}"))
                {
                    let model = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("model="))
                        .context("model in phase line")?
                        .to_string();
                    return Ok((t, model));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("no phase={phase} for {trigger} within {timeout:?}")
}

/// Waits for `trainer` to print the phase for `model` and `trigger`.
fn wait_phase(
    trainer: &Trainer,
    phase: &str,
    model: &str,
    trigger: &str,
    timeout: Duration,
) -> Result<()> {
    let want = format!("phase={phase} model={model} trigger={trigger}");
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(line) = trainer.lines.recv_timeout(Duration::from_millis(200))
            && line == want
        {
            return Ok(());
        }
    }
    bail!("{}: no `{want}` within {timeout:?}", trainer.name)
}

/// Labelled rows `from..to` of `model` straight onto the labelled topic, as the joiner
/// writes them: y = 5 - 2x, a world the bootstrap model does not know.
async fn send_rows(w: &World, model: &str, from: i64, to: i64) -> Result<()> {
    let p = producer()?;
    let codec = Codec::single_object();
    for i in from..to {
        let (prediction, actual) = row(model, i, |x| 5.0 - 2.0 * x);
        let l = Labelled {
            prediction,
            actual,
            prediction_read_at: SourcePosition {
                topic: w.predictions.clone(),
                partition: 0,
                offset: i,
            },
            actual_read_at: SourcePosition {
                topic: w.actuals.clone(),
                partition: 0,
                offset: i,
            },
        };
        produce(&p, &w.labelled, &l.key(), &codec.encode(&l)?).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_trainers_never_publish_the_same_version_even_when_one_is_frozen_mid_fit() -> Result<()>
{
    let w = World::with_models(3, 3).await?;
    let state = tempfile::tempdir()?;
    let long = Duration::from_secs(120);
    let a = Trainer::start("a", &w, &state.path().join("a"))?;
    let b = Trainer::start("b", &w, &state.path().join("b"))?;
    let models: Vec<String> = w.specs.iter().map(|(m, _)| m.clone()).collect();

    // Both ask for every model's first version; each is trained once, by its owner.
    w.wait_registry("v1 of every model", long, |reg| {
        models
            .iter()
            .all(|m| reg.by_trigger(m, "bootstrap").is_some())
    })
    .await?;

    for m in &models {
        send_rows(&w, m, 0, 300).await?;
    }
    let p = producer()?;
    for m in &models {
        w.send_retrain_for(&p, m, "r1", 0, 300).await?;
    }
    let trigger = "drift:report-r1";

    // Freeze whichever trainer starts a fit first, mid-fit, past its session timeout
    // (10 s): the group gives its partitions to the other, which restores the job from
    // the changelog, trains it and publishes.
    let trainers = [&a, &b];
    let (frozen, model) = first_phase(&trainers, "training", trigger, long)?;
    frozen.signal("-STOP")?;
    let other = if frozen.name == "a" { &b } else { &a };
    if let Err(e) = wait_phase(other, "published", &model, trigger, long) {
        bail!("{e}\n--- {} ---\n{}", other.name, other.log());
    }
    frozen.signal("-CONT")?;

    w.wait_registry("the retrain of every model", long, |reg| {
        models.iter().all(|m| reg.by_trigger(m, trigger).is_some())
    })
    .await?;
    // The thawed trainer finishes its fit; give it time to try to publish.
    tokio::time::sleep(Duration::from_secs(10)).await;

    let mut per_key: BTreeMap<(String, i64), Vec<String>> = BTreeMap::new();
    for r in w.model_records()? {
        per_key
            .entry((r.model.clone(), r.version))
            .or_default()
            .push(r.trigger.clone());
    }
    for m in &models {
        let versions: Vec<(i64, Vec<String>)> = per_key
            .iter()
            .filter(|((model, _), _)| model == m)
            .map(|((_, v), t)| (*v, t.clone()))
            .collect();
        assert_eq!(
            versions,
            [
                (1, vec!["bootstrap".to_string()]),
                (2, vec![trigger.to_string()])
            ],
            "{m}: one record per version number, one version per trigger"
        );
    }
    let published_again = format!("phase=published model={model} trigger={trigger}");
    while let Ok(line) = frozen.lines.try_recv() {
        ensure!(
            line != published_again,
            "the frozen trainer published after it was thawed"
        );
    }
    let log = frozen.log();
    ensure!(
        log.contains("another trainer owns the partition now")
            || log.contains("the partition moved during training"),
        "the frozen trainer ({}) gave no sign of having lost {model}'s partition:\n{}",
        frozen.name,
        log.lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    for line in log
        .lines()
        .filter(|l| l.contains("owns the partition now") || l.contains("moved during"))
    {
        println!("frozen trainer {}: {line}", frozen.name);
    }
    Ok(())
}
