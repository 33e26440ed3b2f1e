//! The dashboard in a real headless browser (Debian's `chromium`): the page is served over
//! a real socket while events keep arriving, and the rendered DOM must show charts with data.
//!
//! Needs `chromium` on the PATH (`apt-get install -y chromium`), or its path in
//! `DRIFTLINE_CHROMIUM`. Set `DRIFTLINE_DASHBOARD_SCREENSHOT=docs/dashboard.png` to keep the
//! screenshot.

// The dashboard lives in the `driftline` binary crate; the test compiles the same file.
#[path = "../../consumers/driftline/src/dashboard.rs"]
#[allow(dead_code)]
mod dashboard;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use dashboard::sample;

fn chromium() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("DRIFTLINE_CHROMIUM") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "no headless browser: this test needs chromium on the PATH (Debian: `apt-get install -y chromium`) \
         or DRIFTLINE_CHROMIUM=/path/to/chrome"
    )
}

/// One headless run: `--dump-dom` or `--screenshot=...`.
async fn run_chromium(browser: &Path, url: &str, mode: &str) -> Result<Output> {
    let profile = tempfile::tempdir()?;
    let mut cmd = tokio::process::Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1400,1500",
        // Virtual time runs the page's timers (the 2 s polling) without waiting for them.
        "--virtual-time-budget=8000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(mode)
    .arg(url)
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .context("chromium did not finish within 90 s")?
        .with_context(|| format!("starting {}", browser.display()))?;
    ensure!(
        out.status.success(),
        "chromium {mode} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// The value of `attr` on the element with `id`, from serialised HTML.
fn attr_of(dom: &str, id: &str, attr: &str) -> Option<String> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let tag_start = dom[..start].rfind('<')?;
    let tag_end = start + dom[start..].find('>')?;
    let tag = &dom[tag_start..tag_end];
    let at = tag.find(&format!(" {attr}=\""))? + attr.len() + 3;
    Some(tag[at..at + tag[at..].find('"')?].to_string())
}

fn count(dom: &str, id: &str, attr: &str) -> usize {
    attr_of(dom, id, attr)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_renders_charts_with_data_in_a_headless_browser() -> Result<()> {
    let browser = chromium()?;

    // The first 40 days are there when the page loads; the rest arrive while it is open,
    // as they would during a replay.
    let history = Arc::new(Mutex::new(dashboard::History::default()));
    {
        let mut h = history.lock().unwrap();
        h.set_thresholds(Some(0.1), 0.2);
        for day in 1..=40 {
            sample::feed_day(&mut h, day);
        }
    }
    let feeder = {
        let history = history.clone();
        tokio::spawn(async move {
            for day in 41..=60 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                sample::feed_day(&mut history.lock().unwrap(), day);
            }
        })
    };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let server =
        tokio::spawn(async move { axum::serve(listener, dashboard::router(history)).await });

    let out = run_chromium(&browser, &url, "--dump-dom").await?;
    let dom = String::from_utf8_lossy(&out.stdout);
    for chart in ["chart-drift", "chart-prediction", "chart-error"] {
        let n = count(&dom, chart, "data-points");
        ensure!(
            n > 0,
            "{chart} has no data points after rendering; DOM:\n{dom}"
        );
    }
    // Three features with a PSI (carrier is categorical: no PSI) and the prediction, over
    // at least the 40 days present at load.
    ensure!(
        count(&dom, "chart-drift", "data-points") >= 2 * 40,
        "drift chart: {:?}",
        attr_of(&dom, "chart-drift", "data-points")
    );
    ensure!(
        dom.contains("PSI threshold 0.2"),
        "the PSI threshold line is drawn"
    );
    ensure!(
        count(&dom, "models", "data-rows") >= 2,
        "model timeline: {:?}",
        attr_of(&dom, "models", "data-rows")
    );
    // v1 served from day 1, v2 rejected on day 20; v3 comes on day 55, later.
    ensure!(
        count(&dom, "steps", "data-rows") >= 2,
        "rollout steps: {:?}",
        attr_of(&dom, "steps", "data-rows")
    );
    ensure!(
        count(&dom, "latest", "data-rows") == 4,
        "latest report: {:?}",
        attr_of(&dom, "latest", "data-rows")
    );
    // The realised MAE, then the multivariate check with its line.
    ensure!(
        count(&dom, "performance", "data-rows") == 2 && dom.contains("reconstruction error"),
        "latest report's checks: {:?}",
        attr_of(&dom, "performance", "data-rows")
    );
    ensure!(
        dom.contains("rejected") && dom.contains("dep_delay"),
        "timeline and report are in the page"
    );

    feeder.await?;
    // Once every day has arrived, the page shows the step that came after it loaded.
    let out = run_chromium(&browser, &url, "--dump-dom").await?;
    let dom = String::from_utf8_lossy(&out.stdout);
    ensure!(
        count(&dom, "steps", "data-rows") == 3,
        "rollout steps after the replay: {:?}",
        attr_of(&dom, "steps", "data-rows")
    );
    let shots = tempfile::tempdir()?;
    let png = shots.path().join("dashboard.png");
    run_chromium(&browser, &url, &format!("--screenshot={}", png.display())).await?;
    let bytes = std::fs::read(&png).context("chromium wrote no screenshot")?;
    ensure!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is not a PNG"
    );
    // A blank 1400x1500 page compresses to a few KB; drawn charts and tables do not.
    ensure!(
        bytes.len() > 40_000,
        "the screenshot is suspiciously small ({} bytes)",
        bytes.len()
    );
    if let Some(keep) = std::env::var_os("DRIFTLINE_DASHBOARD_SCREENSHOT") {
        std::fs::copy(&png, &keep)
            .with_context(|| format!("copying the screenshot to {keep:?}"))?;
    }
    server.abort();
    Ok(())
}
