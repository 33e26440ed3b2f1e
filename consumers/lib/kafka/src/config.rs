//! Kafka settings shared by every binary (flags and env vars), and the check every
//! service makes at start that the cluster answers with those settings.
//!
//! Secrets passed as `--kafka-option` (SASL passwords, key passwords, JAAS configs) are
//! never shown: `--help` hides the environment's values, `Debug` prints `***` for them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};

use crate::{Error, Result};

#[derive(Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (the embedded broker by default).
    #[arg(
        long,
        env = "DRIFTLINE_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap_servers: String,

    /// Extra librdkafka settings, KEY=VALUE, comma separated or repeated (e.g.
    /// security.protocol=SASL_SSL, sasl.mechanism=SCRAM-SHA-512, sasl.username=...,
    /// sasl.password=..., ssl.ca.location=ca.pem). Secret values are never printed.
    #[arg(
        long = "kafka-option",
        env = "DRIFTLINE_KAFKA_OPTIONS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub options: Vec<String>,

    /// Consumer group session timeout: how long a crashed member holds its partitions
    /// before the group gives them to the others.
    #[arg(long, env = "DRIFTLINE_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    pub session_timeout_ms: u32,

    #[arg(long, env = "DRIFTLINE_HEARTBEAT_INTERVAL_MS", default_value_t = 2000)]
    pub heartbeat_interval_ms: u32,

    /// How long a service waits at start for the cluster to answer before it gives up
    /// with the reason (a wrong password or certificate ends the wait at once).
    #[arg(long, env = "DRIFTLINE_CONNECT_TIMEOUT_MS", default_value_t = 30_000)]
    pub connect_timeout_ms: u64,
}

impl Default for KafkaArgs {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            options: Vec::new(),
            session_timeout_ms: 10_000,
            heartbeat_interval_ms: 2000,
            connect_timeout_ms: 30_000,
        }
    }
}

/// Whether a librdkafka setting holds a secret (its value is never printed).
pub fn is_secret(key: &str) -> bool {
    let k = key.trim().to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k.ends_with("jaas.config")
        || k.ends_with(".pem")
        || k == "sasl.oauthbearer.config"
}

/// `KEY=VALUE` with the value replaced by `***` when the key names a secret.
pub fn redact_option(option: &str) -> String {
    match option.split_once('=') {
        Some((k, _)) if is_secret(k) => format!("{k}=***"),
        _ => option.to_string(),
    }
}

impl std::fmt::Debug for KafkaArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options: Vec<String> = self.options.iter().map(|o| redact_option(o)).collect();
        f.debug_struct("KafkaArgs")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("options", &options)
            .field("session_timeout_ms", &self.session_timeout_ms)
            .field("heartbeat_interval_ms", &self.heartbeat_interval_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .finish()
    }
}

impl KafkaArgs {
    pub fn with_bootstrap(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            ..Self::default()
        }
    }

    /// Cross-field rules, checked at start-up.
    pub fn validate(&self) -> Result<()> {
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms {
            return Err(Error::Config(format!(
                "heartbeat interval ({} ms) must be at most a third of the session timeout ({} ms)",
                self.heartbeat_interval_ms, self.session_timeout_ms
            )));
        }
        for (i, o) in self.options.iter().enumerate() {
            if !o.contains('=') {
                // Echo it only when it cannot be a secret.
                let shown = if is_secret(o) {
                    format!("number {} (a secret setting)", i + 1)
                } else {
                    format!("{o:?}")
                };
                return Err(Error::Config(format!(
                    "--kafka-option {shown} is not KEY=VALUE"
                )));
            }
        }
        Ok(())
    }

    /// Settings common to producers, consumers and admin clients.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        for o in &self.options {
            if let Some((k, v)) = o.split_once('=') {
                c.set(k.trim(), v.trim());
            }
        }
        c
    }

    pub fn producer_config(&self) -> ClientConfig {
        let mut c = self.client_config();
        // Defaults that a `--kafka-option` overrides (e.g. a shorter message.timeout.ms).
        // Idempotent: a send the broker wrote but whose acknowledgement was lost is retried
        // without a second copy, and retries keep the partition's order. It needs acks=all
        // and at most 5 requests in flight (librdkafka's default with it on). A cluster
        // that denies the IDEMPOTENT_WRITE permission can turn it off with
        // `--kafka-option enable.idempotence=false`.
        // Keys go to partitions as the Java client and Kafka Streams send them (murmur2;
        // librdkafka's own default hashes with CRC32): a model's actuals from a Java app
        // and its predictions from here must share a partition number to be joined.
        for (key, value) in [
            ("partitioner", "murmur2_random"),
            ("acks", "all"),
            ("linger.ms", "2"),
            ("compression.type", "lz4"),
            ("message.timeout.ms", "30000"),
            ("enable.idempotence", "true"),
        ] {
            if c.get(key).is_none() {
                c.set(key, value);
            }
        }
        c
    }

    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut c = self.client_config();
        c.set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            // driftline's services write in Kafka transactions: a reader sees what
            // committed, once, and never what an aborted transaction wrote.
            .set("isolation.level", "read_committed")
            // Once its local queue is past queued.min.messages librdkafka waits this long
            // before it fetches again; at its default (1 s) a consumer that drains 100k
            // messages in 0.4 s then stood idle for 0.6 s.
            .set("fetch.queue.backoff.ms", "20")
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                self.heartbeat_interval_ms.to_string(),
            );
        c
    }

    /// Asks the cluster for its metadata with these settings, so that a wrong address,
    /// certificate or password is one clear error at start rather than a client retrying
    /// in the background for ever. Fails at once on an authentication error; otherwise
    /// retries until `connect_timeout_ms` and then reports the last error librdkafka gave.
    pub async fn check_connection(&self) -> Result<()> {
        let args = self.clone();
        tokio::task::spawn_blocking(move || args.check_connection_blocking())
            .await
            .map_err(|e| Error::Config(format!("connection check panicked: {e}")))?
    }

    fn check_connection_blocking(&self) -> Result<()> {
        let context = LastError::default();
        // A producer, because polling it serves the error callbacks without a group.
        let client: BaseProducer<LastError> =
            self.client_config().create_with_context(context.clone())?;
        let deadline = Instant::now() + Duration::from_millis(self.connect_timeout_ms);
        loop {
            let attempt = client
                .client()
                .fetch_metadata(None, Duration::from_millis(1000));
            client.poll(Duration::from_millis(100));
            let seen = context.get();
            match (attempt, seen) {
                (Ok(m), _) if !m.brokers().is_empty() => return Ok(()),
                (_, Some((code, reason))) if is_fatal(code) => {
                    return Err(Error::Connect {
                        bootstrap: self.bootstrap_servers.clone(),
                        reason,
                    });
                }
                (result, seen) if Instant::now() >= deadline => {
                    let reason = seen.map(|(_, r)| r).unwrap_or_else(|| match result {
                        Ok(_) => "the cluster lists no brokers".into(),
                        Err(e) => e.to_string(),
                    });
                    return Err(Error::Connect {
                        bootstrap: self.bootstrap_servers.clone(),
                        reason: format!(
                            "no answer in {} ms; last error: {reason}",
                            self.connect_timeout_ms
                        ),
                    });
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

/// Errors that waiting cannot fix.
fn is_fatal(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::InvalidArgument
            | RDKafkaErrorCode::UnsupportedSASLMechanism
            | RDKafkaErrorCode::IllegalSASLState
    )
}

/// A client context that keeps the error librdkafka reported (they arrive through the
/// error callback, not as results: a failed login is otherwise only a log line). A fatal
/// one is kept over those that follow it, and "all brokers are down", which follows a
/// failed login or a refused connection, never replaces the error that says why.
#[derive(Clone, Default)]
struct LastError(Arc<Mutex<Option<(RDKafkaErrorCode, String)>>>);

impl LastError {
    /// What it keeps, left in place: a later attempt may report only "brokers down".
    fn get(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ClientContext for LastError {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let says_less = code == RDKafkaErrorCode::AllBrokersDown && kept.is_some();
        if !says_less && !kept.as_ref().is_some_and(|(c, _)| is_fatal(*c)) {
            *kept = Some((code, reason.to_string()));
        }
    }
}

impl ProducerContext for LastError {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let mut k = KafkaArgs::with_bootstrap("b:9093");
        k.options = vec![
            "security.protocol=SASL_SSL".into(),
            "sasl.username=driftline".into(),
            "sasl.password=hunter2".into(),
            "ssl.key.password=k3y".into(),
            "sasl.jaas.config=x required password=\"p4ss\";".into(),
        ];
        let shown = format!("{k:?}");
        for secret in ["hunter2", "k3y", "p4ss"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("sasl.username=driftline"), "{shown}");
        assert!(shown.contains("sasl.password=***"), "{shown}");
    }

    #[test]
    fn a_malformed_option_is_reported_without_its_value() {
        let k = KafkaArgs {
            options: vec!["sasl.password:hunter2".into()],
            ..KafkaArgs::default()
        };
        let e = k.validate().unwrap_err().to_string();
        assert!(e.contains("number 1") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn producers_are_idempotent_unless_an_option_says_otherwise() {
        let mut k = KafkaArgs::with_bootstrap("b:9092");
        let idempotence = |k: &KafkaArgs| {
            k.producer_config()
                .get("enable.idempotence")
                .map(str::to_string)
        };
        assert_eq!(idempotence(&k).as_deref(), Some("true"));
        k.options = vec!["enable.idempotence=false".into()];
        assert_eq!(idempotence(&k).as_deref(), Some("false"));
    }

    #[test]
    fn a_kafka_option_overrides_a_producer_default() {
        let mut k = KafkaArgs::with_bootstrap("b:9092");
        let timeout = |k: &KafkaArgs| {
            k.producer_config()
                .get("message.timeout.ms")
                .map(str::to_string)
        };
        assert_eq!(timeout(&k).as_deref(), Some("30000"));
        k.options = vec!["message.timeout.ms=2000".into()];
        assert_eq!(timeout(&k).as_deref(), Some("2000"));
    }
}
