//! Dead letters that always fit a Kafka message.
//!
//! A dead letter carries the source message and the reason it was refused. Both come from
//! outside: a 900 KB message whose error names each of its 9,000 bad fields makes a
//! letter over the broker's 1 MB default, which the broker refuses; the consumer would
//! then stop on that message at every restart. So a letter keeps at most
//! [`MAX_PAYLOAD`] bytes of the payload (with the whole payload's size and SHA-256, so it
//! can still be found and matched), [`MAX_KEY`] bytes of the key and [`MAX_ERROR`] bytes
//! of the error text: about 270 KB in all, well inside any sane `message.max.bytes`.

use driftline_schemas::events::DeadLetter;
use sha2::{Digest, Sha256};

/// Most bytes of the source payload a dead letter keeps.
pub const MAX_PAYLOAD: usize = 256 * 1024;
/// Most bytes of the source key a dead letter keeps (it is also the letter's own key).
pub const MAX_KEY: usize = 1024;
/// Most bytes of the error text a dead letter keeps.
pub const MAX_ERROR: usize = 8 * 1024;

/// `letter`, cut to fit: a payload over [`MAX_PAYLOAD`] keeps its first bytes and gains
/// its whole size and SHA-256; a long key or error text keeps its start, and the error
/// says how long it was.
pub fn bounded(mut letter: DeadLetter) -> DeadLetter {
    if let Some(payload) = letter.payload.as_mut()
        && payload.len() > MAX_PAYLOAD
    {
        letter.payload_size = Some(payload.len() as i64);
        letter.payload_sha256 = Some(
            Sha256::digest(payload.as_slice())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        );
        payload.truncate(MAX_PAYLOAD);
    }
    if let Some(key) = letter.key.as_mut() {
        key.truncate(MAX_KEY);
    }
    if letter.error.len() > MAX_ERROR {
        let mut end = MAX_ERROR;
        while !letter.error.is_char_boundary(end) {
            end -= 1;
        }
        letter.error = format!(
            "{}… (cut: {} bytes in all)",
            &letter.error[..end],
            letter.error.len()
        );
    }
    letter
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftline_schemas::codec::Codec;

    fn letter(payload: usize, key: usize, error: &str) -> DeadLetter {
        DeadLetter {
            source_topic: "driftline.requests".into(),
            source_partition: 0,
            source_offset: 7,
            key: Some(vec![b'k'; key]),
            payload: Some((0..payload).map(|i| (i % 251) as u8).collect()),
            error_kind: "validation".into(),
            error: error.into(),
            consumer: "driftline-predictor".into(),
            failed_at: 1,
            payload_size: None,
            payload_sha256: None,
        }
    }

    #[test]
    fn a_letter_that_fits_is_kept_whole() {
        let l = letter(MAX_PAYLOAD, MAX_KEY, "unknown feature \"z\"");
        assert_eq!(bounded(l.clone()), l);
    }

    #[test]
    fn an_oversized_payload_keeps_its_start_its_size_and_its_sha256() {
        let l = bounded(letter(3 * MAX_PAYLOAD + 5, 10, "bad"));
        assert_eq!(l.payload.as_ref().map(Vec::len), Some(MAX_PAYLOAD));
        assert_eq!(l.payload_size, Some(3 * MAX_PAYLOAD as i64 + 5));
        // sha256sum of the same bytes (0, 1, ..., 250, 0, 1, ...), computed apart:
        // python3 -c "import hashlib;print(hashlib.sha256(bytes(i%251 for i in range(3*262144+5))).hexdigest())"
        assert_eq!(
            l.payload_sha256.as_deref(),
            Some("749cb960a158665d5f18ce21b881fed711828f8eede1e4b36acba99a3ce9945a")
        );
        // And the letter still encodes and decodes with the new fields.
        let codec = Codec::single_object();
        let back: DeadLetter = codec.decode(&codec.encode(&l).unwrap()).unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn a_long_error_and_key_are_cut_on_a_character_boundary_and_say_so() {
        // 'é' is two bytes: the cut must not split one.
        let error = format!("x{}", "é".repeat(MAX_ERROR));
        let l = bounded(letter(10, 5 * MAX_KEY, &error));
        assert_eq!(l.key.as_ref().map(Vec::len), Some(MAX_KEY));
        assert!(l.error.len() <= MAX_ERROR + 40, "{}", l.error.len());
        assert!(
            l.error
                .ends_with(&format!("… (cut: {} bytes in all)", error.len())),
            "{}",
            &l.error[l.error.len() - 60..]
        );
        assert_eq!(l.payload_size, None, "a small payload stays whole");
    }
}
