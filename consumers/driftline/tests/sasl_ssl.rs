//! driftline on a secured cluster: a broker listener with SASL_SSL and SCRAM-SHA-512,
//! a CA and a broker certificate made here with openssl, the SCRAM user created when the
//! broker's storage is formatted. Every service is configured only as the README says
//! (`DRIFTLINE_BOOTSTRAP_SERVERS` and `DRIFTLINE_KAFKA_OPTIONS`). The known secrets of
//! the run (the SASL password, the admin token, the model signing key made by openssl and
//! given as PEM text) show up nowhere: not in `--help`, the logs, any service's /metrics
//! or the dashboard. A wrong password is one clear error at start.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::{count_ids, exactly_once, exit_within, lines, repo, wait_for, write_data};
use driftline_kafka::KafkaArgs;
use driftline_runtime::signing::{Trust, TrustArgs};
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{Labelled, ModelPublished, PredictionLogged, PredictionRequest};
use driftline_schemas::topics;
use driftline_tests::{free_port, http, reader_on, unique};
use rdkafka::consumer::BaseConsumer;

mod common;

const USER: &str = "driftline-app";
const PASSWORD: &str = "Sc0tt-is-not-a-secret-3f9a";
const ADMIN_TOKEN: &str = "adm1n-t0ken-5e27b";

/// A single Kafka node with a SASL_SSL listener beside its plaintext one (which only the
/// start script's readiness probe uses), stopped on drop.
struct SecureBroker {
    dir: tempfile::TempDir,
    port: u16,
    sasl_port: u16,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()?;
    ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl SecureBroker {
    /// One SCRAM user, no authorizer: every authenticated client may do anything.
    fn start() -> Result<Self> {
        Self::start_with(&[(USER.into(), PASSWORD.into())], "")
    }

    /// The SCRAM `users` (name, password) and `extra` broker properties.
    fn start_with(users: &[(String, String)], extra: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        // A CA, and a broker certificate it signs for 127.0.0.1.
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=driftline-test-ca",
            ],
        )?;
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "broker.key",
                "-out",
                "broker.csr",
                "-subj",
                "/CN=localhost",
            ],
        )?;
        std::fs::write(
            d.join("san.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )?;
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "broker.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.cnf",
                "-out",
                "broker.pem",
            ],
        )?;
        // Kafka's PEM key store: the (PKCS#8) key, then the certificate.
        let keystore = [
            std::fs::read_to_string(d.join("broker.key"))?,
            std::fs::read_to_string(d.join("broker.pem"))?,
        ]
        .concat();
        std::fs::write(d.join("keystore.pem"), keystore)?;

        let (port, controller, sasl_port) = (free_port()?, free_port()?, free_port()?);
        std::fs::write(
            d.join("sasl.properties"),
            format!(
                "listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller},SASL_SSL://127.0.0.1:{sasl_port}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{sasl_port}\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL\n\
                 sasl.enabled.mechanisms=SCRAM-SHA-512\n\
                 listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
                 ssl.keystore.type=PEM\n\
                 ssl.keystore.location={}\n{extra}",
                d.join("keystore.pem").display()
            ),
        )?;
        let scram: Vec<String> = users
            .iter()
            .map(|(name, password)| {
                format!("--add-scram 'SCRAM-SHA-512=[name={name},password={password}]'")
            })
            .collect();
        let broker = Self {
            dir,
            port,
            sasl_port,
        };
        let status = broker
            .script("start")
            .env("DRIFTLINE_CONTROLLER_PORT", controller.to_string())
            .env(
                "DRIFTLINE_BROKER_EXTRA_CONFIG",
                broker.dir.path().join("sasl.properties"),
            )
            .env("DRIFTLINE_BROKER_FORMAT_ARGS", scram.join(" "))
            .status()?;
        ensure!(status.success(), "the secured broker did not start");
        Ok(broker)
    }

    fn script(&self, command: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg(repo().join("infra/broker.sh"))
            .arg(command)
            .env("DRIFTLINE_BROKER_PORT", self.port.to_string())
            .env("DRIFTLINE_BROKER_DIR", self.dir.path().join("broker"));
        c
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.sasl_port)
    }

    /// The client settings the README documents, as one `DRIFTLINE_KAFKA_OPTIONS` value.
    fn options(&self, user: &str, password: &str) -> String {
        format!(
            "security.protocol=SASL_SSL,sasl.mechanism=SCRAM-SHA-512,sasl.username={user},sasl.password={password},ssl.ca.location={}",
            self.dir.path().join("ca.pem").display()
        )
    }

    fn kafka(&self) -> KafkaArgs {
        self.kafka_as(USER, PASSWORD)
    }

    fn kafka_as(&self, user: &str, password: &str) -> KafkaArgs {
        let mut k = KafkaArgs::with_bootstrap(self.bootstrap());
        k.options = self
            .options(user, password)
            .split(',')
            .map(String::from)
            .collect();
        k
    }

    /// A driftline binary with this cluster's settings in its environment.
    fn command(&self, binary: &Path, password: &str) -> Command {
        self.command_as(binary, USER, password)
    }

    fn command_as(&self, binary: &Path, user: &str, password: &str) -> Command {
        let mut c = Command::new(binary);
        c.env("DRIFTLINE_BOOTSTRAP_SERVERS", self.bootstrap())
            .env("DRIFTLINE_KAFKA_OPTIONS", self.options(user, password))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        c
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        let _ = self.script("stop").status();
    }
}

fn driftline() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_driftline"))
}

/// send_data is another package's binary; `cargo test --workspace` builds it beside ours.
fn send_data() -> Result<PathBuf> {
    let path = driftline().with_file_name("send_data");
    ensure!(
        path.exists(),
        "{} is missing: run the workspace's tests (cargo test --workspace)",
        path.display()
    );
    Ok(path)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn no_password(what: &str, text: &str) -> Result<()> {
    ensure!(
        !text.contains(PASSWORD),
        "{what} shows the password:\n{text}"
    );
    Ok(())
}

/// The secrets of a run, and where each may not appear.
struct Secrets(Vec<(&'static str, String)>);

impl Secrets {
    /// The password, the admin token, and each line of the private key's PEM body (a
    /// key printed whole, or in part, shows at least one).
    fn new(signing_pem: &str) -> Self {
        let mut all = vec![
            ("the SASL password", PASSWORD.to_string()),
            ("the admin token", ADMIN_TOKEN.to_string()),
        ];
        all.extend(
            signing_pem
                .lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                .map(|l| ("the signing key", l.to_string())),
        );
        Self(all)
    }

    fn none_in(&self, what: &str, text: &str) -> Result<()> {
        for (name, secret) in &self.0 {
            ensure!(!text.contains(secret), "{what} shows {name}:\n{text}");
        }
        Ok(())
    }
}

/// An OTLP/HTTP endpoint on a loopback port that answers 200 to every export and keeps
/// the bodies; its base URL (the exporter posts to `<URL>/v1/traces`) and what it got.
async fn span_collector() -> Result<(String, Arc<Mutex<Vec<u8>>>)> {
    let got: Arc<Mutex<Vec<u8>>> = Arc::default();
    let keep = got.clone();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let keep = keep.clone();
        async move {
            keep.lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(&body);
            axum::http::StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, got))
}

/// Every message of a topic over the secured listener, until `expected` or the timeout.
fn reader(broker: &SecureBroker, topic: &str) -> Result<BaseConsumer> {
    reader_on(&broker.kafka(), topic)
}

#[test]
fn every_service_works_through_sasl_ssl_with_scram_signs_its_models_and_shows_no_secret()
-> Result<()> {
    let broker = SecureBroker::start()?;
    let work = tempfile::tempdir()?;
    // The model signing key as an operator would make it, given as PEM text (as a secret
    // store hands it over); its public half is what the services trust.
    openssl(
        work.path(),
        &["genpkey", "-algorithm", "ed25519", "-out", "signing.pem"],
    )?;
    openssl(
        work.path(),
        &[
            "pkey",
            "-in",
            "signing.pem",
            "-pubout",
            "-out",
            "signing.pub.pem",
        ],
    )?;
    let signing_pem = std::fs::read_to_string(work.path().join("signing.pem"))?;
    let trusted = work.path().join("signing.pub.pem");
    let secrets = Secrets::new(&signing_pem);
    let with_secrets = |binary: &Path| {
        let mut c = broker.command(binary, PASSWORD);
        c.env("DRIFTLINE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("DRIFTLINE_SIGNING_KEY", &signing_pem)
            .env("DRIFTLINE_TRUSTED_KEYS", &trusted);
        c
    };

    for args in [
        vec!["--help"],
        vec!["up", "--help"],
        vec!["predictor", "--help"],
        vec!["monitor", "--help"],
        vec!["trainer", "--help"],
        vec!["joiner", "--help"],
        vec!["models", "--help"],
        vec!["keygen", "--help"],
    ] {
        let out = with_secrets(&driftline()).args(&args).output()?;
        ensure!(out.status.success());
        secrets.none_in(&format!("driftline {}", args.join(" ")), &text(&out))?;
    }
    let out = broker
        .command(&send_data()?, PASSWORD)
        .arg("--help")
        .output()?;
    no_password("send_data --help", &text(&out))?;

    let out = broker
        .command(&driftline(), PASSWORD)
        .args(["topics", "apply"])
        .output()?;
    ensure!(out.status.success(), "topics apply: {}", text(&out));
    no_password("topics apply", &text(&out))?;

    // send_data: a few rows of its own, before the services run.
    let prefix = format!("{}-", unique("sasl"));
    let sent = tempfile::tempdir()?;
    let sent_slice = write_data(
        sent.path(),
        &format!("{prefix}sd-"),
        "2013-01-20",
        "2013-01-21",
    )?;
    let out = broker
        .command(&send_data()?, PASSWORD)
        .arg("--spec")
        .arg(sent.path().join("flights.toml"))
        .args(["--from", "2013-01-20", "--no-actuals"])
        .output()?;
    ensure!(out.status.success(), "send_data: {}", text(&out));
    no_password("send_data", &text(&out))?;

    // `up --no-broker`: the predictor, joiner, monitor and trainer in one process, and a replay.
    let slice = write_data(work.path(), &prefix, "2013-01-22", "2013-01-23")?;
    let (http_port, ports) = (
        free_port()?,
        [free_port()?, free_port()?, free_port()?, free_port()?],
    );
    let addr = |p: u16| format!("127.0.0.1:{p}");
    // A span collector: everything the services export over OTLP, kept to be searched.
    let runtime = tokio::runtime::Runtime::new()?;
    let (collector, spans) = runtime.block_on(span_collector())?;
    let mut up = with_secrets(&driftline())
        .args([
            "up",
            "--no-broker",
            "--from",
            "2013-01-22",
            "--speedup",
            "8640",
        ])
        .arg("--spec")
        .arg(work.path().join("flights.toml"))
        .arg("--state-dir")
        .arg(work.path().join("state"))
        .args([
            "--http-addr",
            &addr(http_port),
            "--dashboard-addr",
            &addr(ports[0]),
        ])
        .env("DRIFTLINE_MONITOR_HTTP_ADDR", addr(ports[1]))
        .env("DRIFTLINE_TRAINER_HTTP_ADDR", addr(ports[2]))
        .env("DRIFTLINE_JOINER_HTTP_ADDR", addr(ports[3]))
        .env("DRIFTLINE_KEYS_DIR", work.path().join("keys"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = lines(&mut up);
    let mut logged = wait_for(&out, "model ready", Duration::from_secs(300))?;
    let served = [
        (http_port, "/metrics"),
        (ports[1], "/metrics"),
        (ports[2], "/metrics"),
        (ports[3], "/metrics"),
        (ports[2], "/models"),
        (ports[0], "/"),
        (ports[0], "/api/dashboard"),
    ];
    for (port, path) in served {
        let (status, body) = runtime.block_on(http(addr(port).parse()?, "GET", path, None))?;
        ensure!(status == 200, "GET {path} on {port}: {status}");
        secrets.none_in(&format!("GET {path} on {port}"), &body)?;
    }
    let status = exit_within(&mut up, Duration::from_secs(300))?;
    logged.extend(out.try_iter());
    ensure!(status.success(), "`up` stopped with {status}");
    secrets.none_in("up's log", &logged.join("\n"))?;
    // The exports are protobuf, where strings are stored as they are.
    let spans =
        String::from_utf8_lossy(&spans.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    ensure!(
        spans.contains("driftline.requests") && spans.contains("first_offset"),
        "no spans reached the collector ({} bytes)",
        spans.len()
    );
    secrets.none_in("the exported spans", &spans)?;

    let codec = Codec::single_object();
    let requests = count_ids(
        &reader(&broker, topics::REQUESTS)?,
        &prefix,
        slice.rows + sent_slice.rows,
        |b| Ok(codec.decode::<PredictionRequest>(b)?.request_id),
    )?;
    exactly_once(
        "requests (send_data and up)",
        &requests,
        slice.rows + sent_slice.rows,
    )?;
    let predictions = count_ids(
        &reader(&broker, topics::PREDICTIONS)?,
        &prefix,
        requests.len(),
        |b| Ok(codec.decode::<PredictionLogged>(b)?.request_id),
    )?;
    exactly_once("predictions", &predictions, requests.len())?;
    let models = reader(&broker, topics::MODELS)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let trust = Trust::load(&TrustArgs {
        trusted_keys: vec![trusted],
    })?;
    let published = loop {
        use rdkafka::Message;
        if let Some(m) = models.poll(Duration::from_millis(200)) {
            let m = m?;
            let payload = m.payload().unwrap_or_default();
            let signer = trust
                .check_message(&m, payload)
                .map_err(|why| anyhow::anyhow!("the published version: {why}"))?;
            ensure!(signer.is_some(), "the published version is not checked");
            break codec.decode::<ModelPublished>(payload)?;
        }
        ensure!(
            Instant::now() < deadline,
            "no model version on {}",
            topics::MODELS
        );
    };
    ensure!(published.version >= 1);
    Ok(())
}

#[test]
fn a_wrong_password_is_one_clear_error_at_start_not_a_hang() -> Result<()> {
    let broker = SecureBroker::start()?;
    let wrong = "not-the-password-7c1e";
    let started = Instant::now();
    let runs: [(&str, Command); 3] = [
        ("topics apply", {
            let mut c = broker.command(&driftline(), wrong);
            c.args(["topics", "apply"]);
            c
        }),
        ("predictor", {
            let mut c = broker.command(&driftline(), wrong);
            c.args(["predictor", "--http-addr", "127.0.0.1:0"]);
            c.arg("--spec").arg(repo().join("data/flights.toml"));
            c.arg("--state-dir")
                .arg(broker.dir.path().join("predictor"));
            c
        }),
        ("send_data", {
            let mut c = broker.command(&send_data()?, wrong);
            c.arg("--spec")
                .arg(repo().join("data/flights.toml"))
                .args(["--rows", "10"]);
            c
        }),
    ];
    for (what, mut command) in runs {
        let t = Instant::now();
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // The connection timeout is 30 s; a failed login must not wait for it.
        let status = exit_within(&mut child, Duration::from_secs(20))
            .with_context(|| format!("{what} with a wrong password did not stop at once"))?;
        let out = child.wait_with_output()?;
        let shown = text(&out);
        ensure!(!status.success(), "{what} succeeded with a wrong password");
        ensure!(
            shown.contains("Authentication failed") || shown.contains("authentication"),
            "{what} does not say that the login failed:\n{shown}"
        );
        ensure!(!shown.contains("panicked"), "{what} panicked:\n{shown}");
        ensure!(
            !shown.contains(wrong),
            "{what} shows the password:\n{shown}"
        );
        eprintln!(
            "{what}: failed in {:?} with: {}",
            t.elapsed(),
            shown.lines().last().unwrap_or_default()
        );
    }
    eprintln!("all three in {:?}", started.elapsed());
    Ok(())
}

/// The name and password of a service's principal, as infra/acls.sh names it.
fn principal(service: &str) -> (String, String) {
    (
        format!("driftline-{service}"),
        format!("{service}-pw-41c7e"),
    )
}

/// A broker with Kafka's authorizer on: nothing is allowed that no ACL allows. The
/// broker's own listeners (plaintext for the start script's probe, and the controller's)
/// run as ANONYMOUS, which must therefore be a super user, like driftline-admin.
fn authorizing_broker(services: &[&str]) -> Result<SecureBroker> {
    let users: Vec<(String, String)> = ["admin"]
        .iter()
        .chain(services)
        .map(|s| principal(s))
        .collect();
    SecureBroker::start_with(
        &users,
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n\
         super.users=User:ANONYMOUS;User:driftline-admin\n",
    )
}

#[test]
fn each_service_runs_under_its_own_principal_and_only_the_trainer_may_publish_a_model() -> Result<()>
{
    const PRINCIPALS: [&str; 5] = ["send", "predictor", "joiner", "monitor", "trainer"];
    let broker = authorizing_broker(&PRINCIPALS)?;
    let work = tempfile::tempdir()?;
    let (admin, admin_password) = principal("admin");
    let out = broker
        .command_as(&driftline(), &admin, &admin_password)
        .args(["topics", "apply"])
        .output()?;
    ensure!(out.status.success(), "topics apply: {}", text(&out));

    // The ACLs, applied by the script an operator runs, over SASL_SSL as the admin.
    let admin_config = work.path().join("admin.properties");
    std::fs::write(
        &admin_config,
        format!(
            "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{admin}\" password=\"{admin_password}\";\n\
             ssl.truststore.type=PEM\nssl.truststore.location={}\n",
            broker.dir.path().join("ca.pem").display()
        ),
    )?;
    let out = Command::new("bash")
        .arg(repo().join("infra/acls.sh"))
        .arg(broker.bootstrap())
        .arg(&admin_config)
        .output()?;
    ensure!(out.status.success(), "infra/acls.sh: {}", text(&out));
    no_password("infra/acls.sh", &text(&out))?;

    // No principal but the trainer's may write the registry.
    let runtime = tokio::runtime::Runtime::new()?;
    for service in ["send", "predictor", "joiner", "monitor"] {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let (user, password) = principal(service);
        let producer: FutureProducer = broker
            .kafka_as(&user, &password)
            .producer_config()
            .create()?;
        let sent = runtime.block_on(
            producer.send(
                FutureRecord::to(topics::MODELS)
                    .key("flights/99")
                    .payload(b"forged".as_slice()),
                Duration::from_secs(20),
            ),
        );
        match sent {
            Err((e, _)) if e.to_string().contains("Topic authorization failed") => {
                eprintln!("{service}'s principal, writing {}: {e}", topics::MODELS);
            }
            other => anyhow::bail!(
                "{service}'s principal wrote to {}: {other:?}",
                topics::MODELS
            ),
        }
    }

    // The whole loop, each service under its own principal: the ACLs are enough for it.
    let prefix = format!("{}-", unique("acl"));
    let slice = write_data(work.path(), &prefix, "2013-01-22", "2013-01-23")?;
    let admin_kafka = broker.kafka_as(&admin, &admin_password);
    runtime.block_on(async {
        use driftline_tests::whole_loop::{Loop, lags};
        let mut the_loop = Loop::new(
            driftline(),
            &work.path().join("loop"),
            &admin_kafka,
            &[work.path().join("flights.toml")],
            "2013-01-22",
        )?;
        for p in &mut the_loop.procs {
            let (user, password) = principal(p.name);
            p.env.push((
                "DRIFTLINE_KAFKA_OPTIONS".into(),
                broker.options(&user, &password),
            ));
        }
        let (user, password) = principal("send");
        let sent = async {
            the_loop.wait_ready(Duration::from_secs(300)).await?;
            let out = broker
                .command_as(&send_data()?, &user, &password)
                .arg("--spec")
                .arg(work.path().join("flights.toml"))
                .args(["--from", "2013-01-22"])
                .output()?;
            ensure!(out.status.success(), "send_data: {}", text(&out));
            let deadline = Instant::now() + Duration::from_secs(300);
            loop {
                the_loop.supervise().await?;
                let lags = lags(&admin_kafka).await?;
                if lags.values().all(|l| *l == 0) {
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "the groups did not read everything: {lags:?}"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(())
        }
        .await;
        the_loop.stop().await;
        for p in &the_loop.procs {
            let log = std::fs::read_to_string(&p.log).unwrap_or_default();
            let denied: Vec<&str> = log
                .lines()
                .filter(|l| l.to_lowercase().contains("authoriz"))
                .take(3)
                .collect();
            ensure!(
                denied.is_empty(),
                "the {} was denied something:\n{}",
                p.name,
                denied.join("\n")
            );
            ensure!(p.exits.is_empty(), "the {} exited: {:?}", p.name, p.exits);
        }
        sent
    })?;

    let codec = Codec::single_object();
    let reader = |topic: &str| reader_on(&admin_kafka, topic);
    let predictions = count_ids(&reader(topics::PREDICTIONS)?, &prefix, slice.rows, |b| {
        Ok(codec.decode::<PredictionLogged>(b)?.request_id)
    })?;
    exactly_once("predictions", &predictions, slice.rows)?;
    let labelled = count_ids(
        &reader(topics::LABELLED)?,
        &prefix,
        slice.with_target,
        |b| Ok(codec.decode::<Labelled>(b)?.prediction.request_id),
    )?;
    exactly_once("labelled pairs", &labelled, slice.with_target)?;
    Ok(())
}
