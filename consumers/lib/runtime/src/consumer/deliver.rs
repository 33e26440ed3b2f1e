//! What a produce error means.
//!
//! A produce error is one of three kinds, and the loop acts on the kind
//! ([`super::transaction`]):
//! - **transient** (the broker is away, a leader moves, a topic is being created): the
//!   transaction is aborted and its batches processed again after a capped exponential
//!   backoff, as long as it takes; the service stays alive and reports not ready meanwhile.
//! - **poison** (this one message can never be written: too large, invalid): it goes to
//!   the dead-letter topic, bounded, with the broker's reason, and the batch goes on.
//! - **fatal** (no write can succeed: not authorised, a fenced or broken producer, a
//!   dead-letter topic or changelog that refuses a record): the loop ends with one clear
//!   error.

use std::time::Duration;

use driftline_schemas::events::DeadLetter;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::{BatchContext, Output};
use crate::{Result, now_ms};

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

/// The dead-letter kind of an output the broker refused.
pub(crate) const UNDELIVERABLE: &str = "undeliverable";

/// A dead letter for an output the broker refused, counted. It came from no one consumed
/// message, so its source is the topic it was meant for, at partition and offset -1.
pub(crate) fn undeliverable(output: Output, reason: &str, ctx: &BatchContext) -> Result<Output> {
    tracing::warn!(topic = %output.topic, reason, bytes = output.payload.len(),
        "the broker refuses an output; it goes to the dead-letter topic");
    ctx.metrics
        .dead_letters
        .with_label_values(&[&output.topic, UNDELIVERABLE])
        .inc();
    let letter = crate::dead_letter::bounded(DeadLetter {
        source_topic: output.topic,
        source_partition: -1,
        source_offset: -1,
        key: Some(output.key.into_bytes()),
        payload: Some(output.payload),
        error_kind: UNDELIVERABLE.to_string(),
        error: format!("the broker refused this output: {reason}"),
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
