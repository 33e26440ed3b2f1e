//! What every service starts the same way: the model registry follower.

use std::sync::{Arc, RwLock};

use driftline_schemas::codec::Codec;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::registry::{ProductionChange, Registry, SharedRegistry, follow};
use driftline_kafka::KafkaArgs;

use crate::Result;

/// A registry being followed: read it through `registry`; `loaded` fires once the models
/// topic has been read to its end.
pub struct Follower {
    pub registry: SharedRegistry,
    pub loaded: CancellationToken,
    pub task: JoinHandle<Result<()>>,
}

/// Follows the models topic from its start until `shutdown`.
pub fn follow_registry(
    kafka: &KafkaArgs,
    topic: &str,
    codec: &Codec,
    on_change: impl Fn(&ProductionChange, &Registry) + Send + 'static,
    shutdown: &CancellationToken,
) -> Follower {
    let registry: SharedRegistry = Arc::new(RwLock::new(Registry::default()));
    let loaded = CancellationToken::new();
    let task = tokio::spawn(follow(
        kafka.clone(),
        topic.to_string(),
        registry.clone(),
        codec.clone(),
        on_change,
        loaded.clone(),
        shutdown.clone(),
    ));
    Follower {
        registry,
        loaded,
        task,
    }
}
