//! The declarative topic spec (`infra/topics.toml`) and applying it to a cluster.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{BaseProducer, Producer};
use serde::Deserialize;
use tracing::info;

use crate::{Error, KafkaArgs, Result};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    #[serde(rename = "topic")]
    pub topics: Vec<TopicDef>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopicDef {
    pub name: String,
    pub partitions: i32,
    /// Copies of each partition; -1 (the default) takes the cluster's
    /// `default.replication.factor`: 1 on the embedded broker, 3 on infra/cluster.sh.
    #[serde(default = "broker_default")]
    pub replication: i32,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// Kafka's "use the broker's default" (KIP-464).
pub const BROKER_DEFAULT_REPLICATION: i32 = -1;

fn broker_default() -> i32 {
    BROKER_DEFAULT_REPLICATION
}

impl TopicSpec {
    pub fn from_toml(text: &str) -> Result<Self> {
        let spec: Self =
            toml::from_str(text).map_err(|e| Error::Config(format!("topic spec: {e}")))?;
        for t in &spec.topics {
            if t.partitions < 1 {
                return Err(Error::Config(format!(
                    "topic {}: partitions must be >= 1",
                    t.name
                )));
            }
        }
        Ok(spec)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text)
    }

    /// The same spec with every topic renamed (tests use random names).
    pub fn renamed(&self, f: impl Fn(&str) -> String) -> Self {
        let mut s = self.clone();
        for t in &mut s.topics {
            t.name = f(&t.name);
        }
        s
    }
}

/// Creates every topic of the spec that does not exist yet; existing ones are left alone.
/// Returns the names it created.
pub async fn apply(kafka: &KafkaArgs, spec: &TopicSpec) -> Result<Vec<String>> {
    kafka.check_connection().await?;
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().create()?;
    let new: Vec<NewTopic<'_>> = spec
        .topics
        .iter()
        .map(|t| {
            let mut n = NewTopic::new(
                &t.name,
                t.partitions,
                TopicReplication::Fixed(t.replication),
            );
            for (k, v) in &t.config {
                n = n.set(k, v);
            }
            n
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let mut created = Vec::new();
    for result in admin.create_topics(&new, &opts).await? {
        match result {
            Ok(name) => {
                info!(topic = %name, "created topic");
                created.push(name);
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::Config(format!("cannot create topic {name}: {code}")));
            }
        }
    }
    wait_visible(kafka, spec).await?;
    Ok(created)
}

/// Waits until every topic of `spec` shows in metadata. On a cluster a topic the controller
/// has just created (here or by another instance) reaches the other brokers a moment
/// later, and a metadata request answered by one of them would not list it yet.
async fn wait_visible(kafka: &KafkaArgs, spec: &TopicSpec) -> Result<()> {
    let names: Vec<String> = spec.topics.iter().map(|t| t.name.clone()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let late = missing(kafka, &names).await?;
        if late.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Config(format!(
                "topic(s) {} were created but the cluster's metadata does not show them after 30 s",
                late.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Which of `topics` the cluster does not have, so that a service can refuse to start with
/// one clear line rather than fail on its first message for them.
pub async fn missing(kafka: &KafkaArgs, topics: &[String]) -> Result<Vec<String>> {
    let known = partition_counts(kafka, topics).await?;
    Ok(topics
        .iter()
        .filter(|t| !known.contains_key(*t))
        .cloned()
        .collect())
}

/// The partition count of each of `topics` that exists.
pub async fn partition_counts(
    kafka: &KafkaArgs,
    topics: &[String],
) -> Result<BTreeMap<String, i32>> {
    let (kafka, topics) = (kafka.clone(), topics.to_vec());
    tokio::task::spawn_blocking(move || {
        let client: BaseProducer = kafka.client_config().create()?;
        let metadata = client
            .client()
            .fetch_metadata(None, Duration::from_millis(kafka.connect_timeout_ms))?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && topics.iter().any(|n| n == t.name()))
            .map(|t| (t.name().to_string(), t.partitions().len() as i32))
            .collect())
    })
    .await
    .map_err(|e| Error::Config(format!("topic check panicked: {e}")))?
}

/// A compacted topic of `partitions`, for a service's changelog: the latest value of every
/// key is kept for ever.
pub fn changelog(name: &str, partitions: i32) -> TopicSpec {
    TopicSpec {
        topics: vec![TopicDef {
            name: name.to_string(),
            partitions,
            replication: BROKER_DEFAULT_REPLICATION,
            config: BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_topic_spec_names_every_topic_once() {
        let text = include_str!("../../../../infra/topics.toml");
        let spec = TopicSpec::from_toml(text).unwrap();
        let mut names: Vec<_> = spec.topics.iter().map(|t| t.name.as_str()).collect();
        names.sort();
        let mut expected = driftline_schemas::topics::ALL.to_vec();
        expected.sort();
        assert_eq!(names, expected);
        let models = spec
            .topics
            .iter()
            .find(|t| t.name == "driftline.models")
            .unwrap();
        assert_eq!(
            models.config.get("cleanup.policy").map(String::as_str),
            Some("compact")
        );
        // Co-partitioning: the joiner pairs predictions and actuals locally, the monitor
        // reads predictions beside labelled, the trainer labelled beside retrain.
        let parts = |n: &str| spec.topics.iter().find(|t| t.name == n).unwrap().partitions;
        for n in [
            "driftline.actuals",
            "driftline.labelled",
            "driftline.retrain",
        ] {
            assert_eq!(parts("driftline.predictions"), parts(n), "{n}");
        }
    }
}
