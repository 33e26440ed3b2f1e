//! What both predictor benchmarks set up the same way: their own topics, a v1 model
//! published to them, and the predictor's arguments. Each example includes this file with
//! `#[path]`, since examples share no crate of their own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use driftline_kafka::KafkaArgs;
use driftline_kafka::topics::{TopicDef, TopicSpec, apply};
use driftline_model::TrainedModel;
use driftline_predictor::service::PredictorArgs;
use driftline_schemas::codec::Codec;
use driftline_schemas::events::{Event, ModelPublished, ModelStatus, TrainingWindow};
use driftline_schemas::spec::FeatureSpec;
use rdkafka::producer::{FutureProducer, FutureRecord};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One benchmark run's topics, named `<prefix>-<name>-<pid>`.
pub struct Bench {
    pub kafka: KafkaArgs,
    prefix: String,
}

impl Bench {
    pub fn new(prefix: &str) -> Self {
        let kafka = KafkaArgs::with_bootstrap(
            std::env::var("DRIFTLINE_BOOTSTRAP_SERVERS")
                .unwrap_or_else(|_| "127.0.0.1:9092".into()),
        );
        Self {
            kafka,
            prefix: prefix.to_string(),
        }
    }

    pub fn topic(&self, name: &str) -> String {
        format!("{}-{name}-{}", self.prefix, std::process::id())
    }

    /// Creates the named topics, one partition each.
    pub async fn create_topics(&self, names: &[&str]) -> Result<(), BoxError> {
        let spec = TopicSpec {
            topics: names
                .iter()
                .map(|n| TopicDef {
                    name: self.topic(n),
                    partitions: 1,
                    replication: 1,
                    config: BTreeMap::new(),
                })
                .collect(),
        };
        apply(&self.kafka, &spec).await?;
        Ok(())
    }

    /// Publishes `trained` as version 1 in production on this run's models topic.
    pub async fn publish_v1(
        &self,
        spec: &FeatureSpec,
        trained: &TrainedModel,
    ) -> Result<(), BoxError> {
        let record = ModelPublished {
            model: spec.model.name.clone(),
            version: 1,
            algorithm: spec.model.algorithm.clone(),
            hyper_parameters: BTreeMap::new(),
            metrics: BTreeMap::new(),
            incumbent_metrics: BTreeMap::new(),
            parent_version: None,
            trigger: "bench".into(),
            training_window: TrainingWindow::default(),
            reference_profile: vec![],
            model_format: driftline_model::FORMAT.into(),
            model_bytes: trained.to_bytes(),
            status: ModelStatus::Production,
            published_at: 1,
            traffic_share: 0.0,
            error_sub_windows: Vec::new(),
            feature_importance: Default::default(),
            multivariate: None,
            performance_estimator: None,
            error_estimator: None,
            effective_from: None,
        };
        let producer: FutureProducer = self.kafka.producer_config().create()?;
        producer
            .send(
                FutureRecord::to(&self.topic("models"))
                    .key(&record.key())
                    .payload(&Codec::single_object().encode(&record)?),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
        Ok(())
    }

    /// The predictor on this run's topics.
    pub fn predictor_args(
        &self,
        spec_path: PathBuf,
        http_addr: SocketAddr,
        state_dir: PathBuf,
        concurrency: usize,
    ) -> PredictorArgs {
        PredictorArgs {
            kafka: self.kafka.clone(),
            specs: vec![spec_path],
            http_addr,
            state_dir,
            group: self.topic("group"),
            requests_topic: self.topic("requests"),
            predictions_topic: self.topic("predictions"),
            models_topic: self.topic("models"),
            max_swap_wait: None,
            progress_topic: self.topic("progress"),
            trust: Default::default(),
            dlq_topic: self.topic("dlq"),
            body_limit: 1 << 20,
            concurrency,
            timeout_ms: 10_000,
            max_rows: 10_000,
        }
    }
}
