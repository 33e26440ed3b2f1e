//! Where a replay's events go: the broker ([`KafkaSink`]) or Avro files
//! ([`crate::avro_file::AvroFileSink`]).

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use driftline_kafka::KafkaArgs;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::source::Message;
use crate::{Error, Result};

/// Which of the two streams a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Requests,
    Actuals,
}

/// What a sink has delivered so far (acknowledged by the broker, or written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    pub requests: u64,
    pub actuals: u64,
    pub failed: u64,
    /// The first few distinct delivery errors.
    pub errors: Vec<String>,
}

const MAX_ERRORS: usize = 5;

impl Delivered {
    pub(crate) fn ok(&mut self, topic: Topic) {
        match topic {
            Topic::Requests => self.requests += 1,
            Topic::Actuals => self.actuals += 1,
        }
    }

    fn fail(&mut self, error: String) {
        self.failed += 1;
        if self.errors.len() < MAX_ERRORS && !self.errors.contains(&error) {
            tracing::warn!(%error, "delivery failed");
            self.errors.push(error);
        }
    }
}

/// A destination for a replay. `send` hands a message over and may wait while the sink is
/// full, but does not wait for it to be delivered; `flush` waits for everything.
pub trait Sink {
    fn send(&mut self, topic: Topic, message: &Message) -> impl Future<Output = Result<()>> + Send;
    fn flush(&mut self) -> impl Future<Output = Result<Delivered>> + Send;
}

/// Deliveries awaited at most this far behind the newest send: bounds memory, and stays
/// below librdkafka's queue (`queue.buffering.max.messages`) so a full queue is rare.
const MAX_IN_FLIGHT: usize = 100_000;

/// The producer settings send_data uses (the benchmark's plain producer uses them too, so
/// the comparison measures send_data, not tuning).
pub fn producer_config(kafka: &KafkaArgs) -> ClientConfig {
    let mut c = kafka.producer_config();
    // Idempotent like every driftline producer (KafkaArgs::producer_config): retries keep
    // each partition in order and free of duplicates; it cost send_data about 4%
    // (BENCHMARKS.md).
    c.set("queue.buffering.max.messages", "200000")
        // Fuller batches than the default: a replay is a bulk load, not latency-sensitive.
        .set("linger.ms", "20");
    // The user's --kafka-option settings have the last word.
    for (k, v) in kafka.options.iter().filter_map(|o| o.split_once('=')) {
        c.set(k.trim(), v.trim());
    }
    c
}

/// Produces to two topics with one rdkafka producer; deliveries are awaited in bulk.
pub struct KafkaSink {
    producer: FutureProducer,
    topics: [String; 2],
    in_flight: VecDeque<(Topic, DeliveryFuture)>,
    delivered: Delivered,
}

impl KafkaSink {
    /// Connects and checks both topics exist: a broker without auto-creation would
    /// otherwise fail every message, one timeout at a time.
    pub async fn new(kafka: &KafkaArgs, requests_topic: &str, actuals_topic: &str) -> Result<Self> {
        kafka
            .validate()
            .map_err(|e| Error::Options(e.to_string()))?;
        kafka
            .check_connection()
            .await
            .map_err(|e| Error::Options(e.to_string()))?;
        let producer: FutureProducer = producer_config(kafka).create()?;
        let topics = [requests_topic.to_string(), actuals_topic.to_string()];
        let (p, t) = (producer.clone(), topics.clone());
        tokio::task::spawn_blocking(move || check_topics(&p, &t))
            .await
            .map_err(|e| Error::Options(format!("topic check panicked: {e}")))??;
        Ok(Self {
            producer,
            topics,
            in_flight: VecDeque::new(),
            delivered: Delivered::default(),
        })
    }
}

fn check_topics(producer: &FutureProducer, topics: &[String]) -> Result<()> {
    for topic in topics {
        let metadata = producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let exists = metadata
            .topics()
            .iter()
            .any(|t| t.error().is_none() && !t.partitions().is_empty());
        if !exists {
            return Err(Error::MissingTopic(topic.clone()));
        }
    }
    Ok(())
}

impl Sink for KafkaSink {
    async fn send(&mut self, topic: Topic, message: &Message) -> Result<()> {
        let Self {
            producer,
            topics,
            in_flight,
            delivered,
        } = self;
        let name = match topic {
            Topic::Requests => &topics[0],
            Topic::Actuals => &topics[1],
        };
        let mut record = FutureRecord::to(name)
            .key(&message.key)
            .payload(&message.payload);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.push_back((topic, delivery));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // librdkafka's queue is full: the oldest delivery completing makes room.
                    record = back;
                    match in_flight.pop_front() {
                        Some((t, d)) => settle(delivered, t, d.await),
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                Err((e, _)) => {
                    delivered.fail(e.to_string());
                    break;
                }
            }
        }
        while in_flight.len() > MAX_IN_FLIGHT {
            if let Some((t, d)) = in_flight.pop_front() {
                settle(delivered, t, d.await);
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<Delivered> {
        while let Some((t, d)) = self.in_flight.pop_front() {
            settle(&mut self.delivered, t, d.await);
        }
        Ok(self.delivered.clone())
    }
}

fn settle(delivered: &mut Delivered, topic: Topic, result: <DeliveryFuture as Future>::Output) {
    match result {
        Ok(Ok(_)) => delivered.ok(topic),
        Ok(Err((e, _))) => delivered.fail(e.to_string()),
        Err(_) => delivered.fail("producer dropped the delivery report".to_string()),
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        // Whatever was handed over but not flushed (an error path): give it a moment.
        if !self.in_flight.is_empty() {
            let _ = self.producer.flush(Duration::from_secs(5));
        }
    }
}
