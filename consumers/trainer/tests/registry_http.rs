//! The registry's HTTP API over a real socket, against the real broker: reads are open,
//! promote needs the bearer token, a refused request publishes nothing, and an accepted
//! one is a record on the models topic that the registry then shows.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::{World, record};
use driftline_process::http::serve as serve_http;
use driftline_runtime::service::follow_registry;
use driftline_runtime::signing::Trust;
use driftline_schemas::codec::Codec;
use driftline_schemas::events::ModelStatus;
use driftline_tests::{kafka, producer};
use driftline_trainer::http::{RegistryApi, router};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "s3cret-token";

/// One HTTP/1.1 request on a fresh connection; returns the status and the JSON body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> Result<(u16, Value)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let json = serde_json::from_str(body).with_context(|| format!("body of {path}: {body}"))?;
    Ok((status, json))
}

/// The trainer's API as the service wires it: a registry following the broker's models
/// topic (v1 production, v2 rejected), a real producer, a real listener.
struct Served {
    w: World,
    addr: SocketAddr,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    follower: driftline_runtime::service::Follower,
}

impl Served {
    async fn start() -> Result<Self> {
        let w = World::new().await?;
        let p = producer()?;
        let codec = Codec::single_object();
        driftline_trainer::jobs::publish(
            &p,
            &w.models,
            &codec,
            None,
            &[
                record(&w.model, 1, ModelStatus::Production, 10),
                record(&w.model, 2, ModelStatus::Rejected, 20),
            ],
        )
        .await?;
        let shutdown = CancellationToken::new();
        let follower = follow_registry(
            &kafka(),
            &w.models,
            &codec,
            Trust::none(),
            |_, _| {},
            None,
            &shutdown,
        );
        tokio::time::timeout(Duration::from_secs(30), follower.loaded.cancelled())
            .await
            .context("the registry did not load")?;
        let api = RegistryApi {
            kafka: kafka(),
            registry: follower.registry.clone(),
            producer: p.clone(),
            models_topic: w.models.clone(),
            codec: codec.clone(),
            trust: Trust::none(),
            signer: None,
            admin_token: Some(TOKEN.into()),
        };
        let app = router(api, prometheus::Registry::new());
        let (addr, server) = serve_http(
            "registry API",
            "127.0.0.1:0".parse()?,
            app,
            Default::default(),
            &shutdown,
        )
        .await?;
        Ok(Self {
            w,
            addr,
            shutdown,
            server,
            follower,
        })
    }

    async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        self.server.await??;
        self.follower.task.await??;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn promote_over_http_needs_the_bearer_token_and_lands_on_the_models_topic() -> Result<()> {
    let served = Served::start().await?;
    let (w, addr) = (&served.w, served.addr);

    // Reads need no token.
    let (status, list) = request(addr, "GET", "/models", None).await?;
    assert_eq!(status, 200);
    assert_eq!(list["models"][0]["production"], 1);
    let (status, v2) = request(
        addr,
        "GET",
        &format!("/models/{}/versions/2", w.model),
        None,
    )
    .await?;
    assert_eq!((status, &v2["status"]), (200, &Value::from("rejected")));

    // Changes do.
    let promote = format!("/models/{}/versions/2/promote", w.model);
    let (status, body) = request(addr, "POST", &promote, None).await?;
    assert_eq!(status, 401, "{body}");
    let (status, _) = request(addr, "POST", &promote, Some("Bearer wrong-token")).await?;
    assert_eq!(status, 401);
    let (status, _) = request(addr, "POST", &promote, Some(&format!("Basic {TOKEN}"))).await?;
    assert_eq!(status, 401, "only a bearer token counts");
    let (status, _) = request(addr, "POST", &format!("/models/{}/rollback", w.model), None).await?;
    assert_eq!(status, 401);
    assert_eq!(
        w.model_records()?.len(),
        2,
        "a refused request publishes nothing"
    );

    let (status, body) = request(addr, "POST", &promote, Some(&format!("Bearer {TOKEN}"))).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["published"][0]["version"], 2);
    assert_eq!(body["published"][0]["status"], "production");

    // The promotion is a record on the broker's models topic...
    let records = w.model_records()?;
    assert_eq!(records.len(), 3);
    let last = records.last().context("no records")?;
    assert_eq!(
        (last.model.as_str(), last.version, last.status),
        (w.model.as_str(), 2, ModelStatus::Production)
    );
    // ...and the registry, which is that topic, serves it on the open read endpoint.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, shown) = request(addr, "GET", &format!("/models/{}", w.model), None).await?;
        if shown["production"] == 2 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the registry still shows {shown}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    served.stop().await
}

/// schemathesis (from PyPI) generates calls from the description the trainer serves, with
/// the token and without: no 5xx, every answer as described, and the two changes refused
/// without a valid token (its `ignored_auth` check). Generated promotes and rollbacks that
/// pass are real records on the topic. Left out, as for the predictor: that every
/// schema-valid call succeeds (a promote of v1, already production, is rightly a 409).
#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_and_no_answer_the_description_does_not_allow()
-> Result<()> {
    let served = Served::start().await?;
    let schemathesis = driftline_tests::python()?.with_file_name("schemathesis");
    anyhow::ensure!(
        schemathesis.exists(),
        "{} is missing: infra/setup.sh installs it in the test venv",
        schemathesis.display()
    );
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "headers = {{ Authorization = \"Bearer {TOKEN}\" }}\n\
             [parameters]\n\"path.model\" = \"{}\"\n\"path.version\" = \"2\"\n",
            served.w.model
        ),
    )?;
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let out = tokio::process::Command::new(&schemathesis)
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("http://{}/openapi.json", served.addr))
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--seed", &var("DRIFTLINE_SCHEMATHESIS_SEED", "1")])
        .args([
            "--max-examples",
            &var("DRIFTLINE_SCHEMATHESIS_EXAMPLES", "50"),
        ])
        .current_dir(dir.path())
        .output()
        .await?;
    let report = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "schemathesis found failures:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated: usize = report
        .lines()
        .find_map(|l| l.trim().split_once(" generated"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(0);
    anyhow::ensure!(
        report.contains("Tested: 5") && generated >= 100,
        "schemathesis did not test every operation ({generated} cases):\n{report}"
    );
    eprintln!("schemathesis: {generated} cases over 5 operations, no failure");
    served.stop().await
}
