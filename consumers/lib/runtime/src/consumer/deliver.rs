//! Getting a batch's outputs to the broker, whatever the broker says.
//!
//! A produce error is one of three kinds, and the loop acts on the kind:
//! - **transient** (the broker is away, a leader moves, a topic is being created): the
//!   output is sent again after a capped exponential backoff, as long as it takes; the
//!   service stays alive and reports not ready meanwhile. The producer is idempotent, so
//!   sending again cannot write a message twice within a session; a re-sent output may
//!   land after later ones of its batch, which consumers tolerate (ids and event time).
//! - **poison** (this one message can never be written: too large, invalid): it goes to
//!   the dead-letter topic, bounded, with the broker's reason, and the batch goes on.
//! - **fatal** (no write can succeed: not authorised, a fenced or broken producer, a
//!   dead-letter topic that refuses a bounded letter): the loop ends with one clear error.

use std::collections::VecDeque;
use std::time::Duration;

use driftline_schemas::events::DeadLetter;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tracing::{info, warn};

use super::{BatchContext, Output, ready_now};
use crate::{Error, Result, now_ms};

/// What a produce error means for the output that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    Transient,
    Poison,
    Fatal,
}

/// The kind of a produce error (at enqueue or in the delivery report). Unknown errors
/// count as transient: retrying with backoff, visibly, is safer than ending the loop.
pub(crate) fn classify(e: &KafkaError) -> Fault {
    use RDKafkaErrorCode as C;
    let code = match e {
        KafkaError::MessageProduction(c) => *c,
        KafkaError::Canceled => return Fault::Fatal,
        _ => return Fault::Transient,
    };
    match code {
        C::MessageSizeTooLarge
        | C::InvalidMessageSize
        | C::MessageBatchTooLarge
        | C::InvalidMessage
        | C::InvalidRecord
        | C::InvalidTimestamp
        | C::PolicyViolation => Fault::Poison,
        C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication
        | C::Fatal
        | C::Fenced
        | C::InvalidProducerEpoch
        | C::ProducerFenced
        | C::UnsupportedVersion
        | C::InvalidArgument
        | C::InvalidTopic => Fault::Fatal,
        _ => Fault::Transient,
    }
}

/// The wait before round `attempt` (1, 2, ...) of sending a batch's failed outputs again:
/// doubling from half a second, at most 30 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(6));
    Duration::from_millis(ms.min(30_000))
}

/// One output on its way.
pub(crate) enum Delivery {
    /// Enqueued, awaiting its acknowledgement.
    Sent {
        topic: String,
        future: DeliveryFuture,
    },
    /// To be sent again at the batch's next retry round.
    Waiting(Output),
}

/// A batch's outputs until all are acknowledged.
#[derive(Default)]
pub(crate) struct Deliveries {
    queue: VecDeque<Delivery>,
    /// Retry rounds so far; the next waits [`backoff`] of it.
    attempt: u32,
    /// When the waiting outputs go again.
    retry_at: Option<tokio::time::Instant>,
}

impl Deliveries {
    /// Enqueues `outputs`, in order; one refused at enqueue is handled like a failed
    /// delivery.
    pub(crate) async fn send(
        &mut self,
        producer: &FutureProducer,
        outputs: Vec<Output>,
        ctx: &BatchContext,
    ) -> Result<()> {
        for o in outputs {
            let delivery = enqueue(producer, o, self, ctx).await?;
            self.queue.push_back(delivery);
        }
        Ok(())
    }

    /// Waits until every output is acknowledged, sending failed ones again or to the
    /// dead-letter topic. Cancel-safe: an output leaves the queue only once acknowledged.
    pub(crate) async fn acked(
        &mut self,
        producer: &FutureProducer,
        ctx: &BatchContext,
    ) -> Result<()> {
        while let Some(front) = self.queue.front_mut() {
            match front {
                Delivery::Sent { future, .. } => {
                    let result = future.await;
                    let Some(Delivery::Sent { topic, .. }) = self.queue.pop_front() else {
                        unreachable!("the front was a sent delivery")
                    };
                    if let Some(next) = self.settle(topic, result, ctx)? {
                        self.queue.push_front(next);
                    }
                }
                Delivery::Waiting(_) => {
                    // Outputs sent at the same time have usually failed at the same time:
                    // collect every failure already known, so one round sends them all.
                    self.sweep(ctx)?;
                    if let Some(at) = self.retry_at {
                        tokio::time::sleep_until(at).await;
                    }
                    self.retry_at = None;
                    let queue = std::mem::take(&mut self.queue);
                    for d in queue {
                        let d = match d {
                            Delivery::Waiting(o) => enqueue(producer, o, self, ctx).await?,
                            sent => sent,
                        };
                        self.queue.push_back(d);
                    }
                }
            }
        }
        if self.attempt > 0 {
            info!(rounds = self.attempt, "deliveries succeed again");
            ctx.health.problem(HEALTH_KEY, None);
            self.attempt = 0;
        }
        Ok(())
    }

    /// Settles every sent output whose acknowledgement has already come.
    fn sweep(&mut self, ctx: &BatchContext) -> Result<()> {
        let queue = std::mem::take(&mut self.queue);
        for d in queue {
            match d {
                Delivery::Sent { topic, mut future } => match ready_now(&mut future) {
                    Some(result) => {
                        if let Some(next) = self.settle(topic, result, ctx)? {
                            self.queue.push_back(next);
                        }
                    }
                    None => self.queue.push_back(Delivery::Sent { topic, future }),
                },
                waiting => self.queue.push_back(waiting),
            }
        }
        Ok(())
    }

    /// What an acknowledgement leaves to do: nothing, or the output to send again.
    fn settle(
        &mut self,
        topic: String,
        result: <DeliveryFuture as std::future::Future>::Output,
        ctx: &BatchContext,
    ) -> Result<Option<Delivery>> {
        let (e, output) = match result {
            Ok(Ok(_)) => return Ok(None),
            Ok(Err((e, message))) => (e, output_of(&message)),
            Err(_) => (KafkaError::Canceled, None),
        };
        let output = output.ok_or_else(|| Error::Delivery {
            topic,
            error: e.to_string(),
        })?;
        self.failed(e, output, ctx).map(Some)
    }

    /// What becomes of an output whose delivery failed with `e`.
    fn failed(&mut self, e: KafkaError, output: Output, ctx: &BatchContext) -> Result<Delivery> {
        match classify(&e) {
            Fault::Transient => {
                if self.retry_at.is_none() {
                    self.attempt += 1;
                    let wait = backoff(self.attempt);
                    self.retry_at = Some(tokio::time::Instant::now() + wait);
                    warn!(
                        topic = %output.topic,
                        error = %e,
                        round = self.attempt,
                        retry_in_ms = wait.as_millis() as u64,
                        "delivery failed; sending again after a backoff"
                    );
                }
                ctx.health.problem(
                    HEALTH_KEY,
                    Some(format!("deliveries to {} fail: {e}", output.topic)),
                );
                ctx.metrics
                    .delivery_retries
                    .with_label_values(&[&output.topic])
                    .inc();
                Ok(Delivery::Waiting(output))
            }
            Fault::Poison if output.topic != ctx.dlq_topic => {
                warn!(topic = %output.topic, error = %e, bytes = output.payload.len(),
                    "the broker refuses an output; it goes to the dead-letter topic");
                ctx.metrics
                    .dead_letters
                    .with_label_values(&[&output.topic, UNDELIVERABLE])
                    .inc();
                Ok(Delivery::Waiting(undeliverable(output, &e, ctx)?))
            }
            Fault::Poison | Fault::Fatal => Err(Error::Delivery {
                topic: output.topic,
                error: e.to_string(),
            }),
        }
    }
}

/// The health entry deliveries report under.
const HEALTH_KEY: &str = "kafka deliveries";

/// The dead-letter kind of an output the broker refused.
pub(crate) const UNDELIVERABLE: &str = "undeliverable";

/// Hands `output` to the producer, waiting while its local queue is full; a refusal is
/// handled like a failed delivery.
async fn enqueue(
    producer: &FutureProducer,
    output: Output,
    deliveries: &mut Deliveries,
    ctx: &BatchContext,
) -> Result<Delivery> {
    loop {
        let rec = FutureRecord::to(&output.topic)
            .key(&output.key)
            .payload(&output.payload);
        match producer.send_result(rec) {
            Ok(future) => {
                return Ok(Delivery::Sent {
                    topic: output.topic,
                    future,
                });
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return deliveries.failed(e, output, ctx),
        }
    }
}

/// The output a failed delivery carried.
fn output_of(m: &OwnedMessage) -> Option<Output> {
    Some(Output {
        topic: m.topic().to_string(),
        key: String::from_utf8_lossy(m.key()?).into_owned(),
        payload: m.payload().unwrap_or_default().to_vec(),
    })
}

/// A dead letter for an output the broker refused. It came from no one consumed message,
/// so its source is the topic it was meant for, at partition and offset -1.
fn undeliverable(output: Output, e: &KafkaError, ctx: &BatchContext) -> Result<Output> {
    let letter = crate::dead_letter::bounded(DeadLetter {
        source_topic: output.topic,
        source_partition: -1,
        source_offset: -1,
        key: Some(output.key.into_bytes()),
        payload: Some(output.payload),
        error_kind: UNDELIVERABLE.to_string(),
        error: format!("the broker refused this output: {e}"),
        consumer: ctx.group_id.clone(),
        failed_at: now_ms(),
        payload_size: None,
        payload_sha256: None,
    });
    Output::event(&ctx.codec, &ctx.dlq_topic, &letter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produce_errors_are_classified_by_what_retrying_can_change() {
        let kind = |c| classify(&KafkaError::MessageProduction(c));
        assert_eq!(kind(RDKafkaErrorCode::MessageTimedOut), Fault::Transient);
        assert_eq!(kind(RDKafkaErrorCode::AllBrokersDown), Fault::Transient);
        assert_eq!(kind(RDKafkaErrorCode::NotEnoughReplicas), Fault::Transient);
        assert_eq!(
            kind(RDKafkaErrorCode::UnknownTopicOrPartition),
            Fault::Transient
        );
        assert_eq!(kind(RDKafkaErrorCode::MessageSizeTooLarge), Fault::Poison);
        assert_eq!(
            kind(RDKafkaErrorCode::TopicAuthorizationFailed),
            Fault::Fatal
        );
        assert_eq!(classify(&KafkaError::Canceled), Fault::Fatal);
    }

    #[test]
    fn the_backoff_doubles_from_half_a_second_up_to_thirty() {
        let ms: Vec<u128> = (1..=9).map(|a| backoff(a).as_millis()).collect();
        assert_eq!(
            ms,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
    }
}
