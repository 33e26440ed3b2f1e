//! One way to start a service: check the cluster, make the producer, follow the model
//! registry, serve the HTTP API, say when it is ready, consume, and stop in order. A
//! service (predictor, monitor, trainer) is its own settings and processor plus this.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use driftline_kafka::KafkaArgs;
use driftline_schemas::codec::Codec;
use rdkafka::producer::FutureProducer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use crate::health::Health;
use crate::metrics::Metrics;
use crate::registry::{Registry, RegistrySync, ServingChange, SharedRegistry, follow};
use crate::signing::{Trust, TrustArgs};
use crate::{Error, Processor, Result, RunOptions, Store};

/// A registry being followed: read it through `registry`; `loaded` fires once the models
/// topic has been read to its end.
pub struct Follower {
    pub registry: SharedRegistry,
    pub loaded: CancellationToken,
    pub sync: RegistrySync,
    pub task: JoinHandle<Result<()>>,
}

/// Follows the models topic from its start until `shutdown`, applying the records `trust`
/// accepts; `metrics` count the versions the registry keeps without their bytes and the
/// records it refuses.
pub fn follow_registry(
    kafka: &KafkaArgs,
    topic: &str,
    codec: &Codec,
    trust: Trust,
    on_change: impl Fn(&ServingChange, &Registry) + Send + 'static,
    metrics: Option<crate::registry::FollowerMetrics>,
    shutdown: &CancellationToken,
) -> Follower {
    let registry: SharedRegistry = Arc::new(RwLock::new(Registry::default()));
    let loaded = CancellationToken::new();
    let (sync, requests) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(follow(
        kafka.clone(),
        topic.to_string(),
        registry.clone(),
        codec.clone(),
        trust,
        on_change,
        metrics,
        loaded.clone(),
        requests,
        shutdown.clone(),
    ));
    Follower {
        registry,
        loaded,
        sync: RegistrySync::new(sync),
        task,
    }
}

/// A started service's shared parts.
pub struct Service {
    pub kafka: KafkaArgs,
    pub codec: Codec,
    pub metrics: Metrics,
    pub producer: FutureProducer,
    pub registry: SharedRegistry,
    /// Catches the registry up with the models topic.
    pub registry_sync: RegistrySync,
    /// Whose model records the registry applies.
    pub trust: Trust,
    pub shutdown: CancellationToken,
    pub health: Health,
    models_topic: String,
    loaded: CancellationToken,
    follower: Option<JoinHandle<Result<()>>>,
    http: Vec<JoinHandle<std::io::Result<()>>>,
}

impl Service {
    /// Checks the settings and that the cluster answers, makes the producer and starts
    /// following the registry on `models_topic`, applying the records signed by a key of
    /// `trust` (`on_change` sees each new production version). `metrics` holds the
    /// service's own collectors too.
    pub async fn start(
        metrics: Metrics,
        kafka: &KafkaArgs,
        models_topic: &str,
        trust: &TrustArgs,
        on_change: impl Fn(&ServingChange, &Registry) + Send + 'static,
        shutdown: CancellationToken,
        health: Health,
    ) -> Result<Self> {
        kafka.validate()?;
        let trust = Trust::load(trust)?;
        kafka.check_connection().await?;
        let codec = Codec::single_object();
        let producer: FutureProducer = kafka.producer_config().create()?;
        let follower = follow_registry(
            kafka,
            models_topic,
            &codec,
            trust.clone(),
            on_change,
            Some(metrics.model_registry.clone()),
            &shutdown,
        );
        Ok(Self {
            kafka: kafka.clone(),
            codec,
            metrics,
            producer,
            registry: follower.registry,
            registry_sync: follower.sync,
            trust,
            shutdown,
            health,
            models_topic: models_topic.to_string(),
            loaded: follower.loaded,
            follower: Some(follower.task),
            http: Vec::new(),
        })
    }

    /// [`Service::start`] for a service that needs no model registry (the joiner): its
    /// registry stays empty and counts as loaded.
    pub async fn start_without_registry(
        metrics: Metrics,
        kafka: &KafkaArgs,
        shutdown: CancellationToken,
        health: Health,
    ) -> Result<Self> {
        kafka.validate()?;
        kafka.check_connection().await?;
        let loaded = CancellationToken::new();
        loaded.cancel();
        Ok(Self {
            kafka: kafka.clone(),
            codec: Codec::single_object(),
            metrics,
            producer: kafka.producer_config().create()?,
            registry: Arc::new(RwLock::new(Registry::default())),
            registry_sync: RegistrySync::none(),
            trust: Trust::none(),
            shutdown,
            health,
            models_topic: String::new(),
            loaded,
            follower: None,
            http: Vec::new(),
        })
    }

    /// Serves `app` on `addr` within `limits` until shutdown, with `/health/live` and
    /// `/health/ready`; returns the bound address.
    pub async fn serve(
        &mut self,
        what: &str,
        addr: SocketAddr,
        app: axum::Router,
        limits: driftline_process::http::Limits,
    ) -> Result<SocketAddr> {
        let app = app.merge(crate::health::router(self.health.clone()));
        let (bound, task) =
            driftline_process::http::serve(what, addr, app, limits, &self.shutdown).await?;
        self.http.push(task);
        Ok(bound)
    }

    /// Waits until the registry has been read to its end: false when shutdown came first,
    /// an error when `patience` ran out.
    pub async fn registry_loaded(&self, patience: Option<Duration>) -> Result<bool> {
        let timeout = async {
            match patience {
                Some(p) => tokio::time::sleep(p).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.shutdown.cancelled() => Ok(false),
            _ = self.loaded.cancelled() => Ok(true),
            _ = timeout => Err(Error::Config(format!(
                "the model registry ({}) did not load within {} s",
                self.models_topic,
                patience.unwrap_or_default().as_secs()
            ))),
        }
    }

    /// Runs `processor` on `opts`' topics until shutdown (or the end of the input with
    /// `exit_on_eof`), ready while it does.
    pub async fn consume<P: Processor + 'static>(
        &self,
        opts: &RunOptions,
        store: Arc<Store>,
        processor: P,
    ) -> Result<u64> {
        self.health.set(true);
        let opts = RunOptions {
            health: self.health.clone(),
            ..opts.clone()
        };
        let result = crate::run(
            &self.kafka,
            &opts,
            store,
            processor,
            self.codec.clone(),
            self.metrics.clone(),
            self.shutdown.clone(),
        )
        .await;
        self.health.set(false);
        result
    }

    /// Stops the HTTP servers and the registry follower and waits for them.
    pub async fn stop(self) {
        self.health.set(false);
        self.shutdown.cancel();
        for task in self.http {
            let _ = task.await;
        }
        if let Some(follower) = self.follower {
            let _ = follower.await;
        }
    }
}
