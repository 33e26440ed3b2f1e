//! A CSV tokenizer for the common case: text with no quote (`"`) and no carriage return.
//! Such text is lines of comma-separated cells, so a record is found by scanning eight
//! bytes at a time for `,` and `\n` instead of stepping a general CSV state machine byte by
//! byte (csv_core was a fifth of `driftline drift`'s time). [`crate::frame`] uses it while
//! the input allows and hands the rest to the `csv` crate at the first quote or `\r`; the
//! two give the same records (see the tests).

/// Whether `text` can be split by [`Lines`]: it holds no `"` and no `\r`.
pub fn is_plain(text: &[u8]) -> bool {
    memchr::memchr2(b'"', b'\r', text).is_none()
}

/// The records of plain CSV text. Empty lines are skipped, as the `csv` crate does.
pub struct Lines<'a> {
    text: &'a [u8],
    /// Where the next record starts.
    pos: usize,
    /// The 64-byte block being scanned and its separators not yet taken, one bit a byte.
    block: usize,
    mask: u64,
}

impl<'a> Lines<'a> {
    pub fn new(text: &'a [u8]) -> Self {
        Self {
            text,
            pos: 0,
            block: 0,
            mask: separators(text, 0),
        }
    }

    /// The index of the next `,` or `\n` (or the text's length after the last one).
    #[inline]
    fn next_separator(&mut self) -> usize {
        while self.mask == 0 {
            self.block += 64;
            if self.block >= self.text.len() {
                return self.text.len();
            }
            self.mask = separators(self.text, self.block);
        }
        let i = self.block + self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        i
    }

    /// The next record's cells into `cells` (cleared first); false at the end.
    pub fn next_record(&mut self, cells: &mut Vec<&'a [u8]>) -> bool {
        cells.clear();
        self.next_record_each(|_, cell| cells.push(cell)).is_some()
    }

    /// Calls `each(field index, cell)` for the next record's cells, in order, and returns
    /// how many there were; `None` at the end.
    #[inline]
    pub fn next_record_each(&mut self, mut each: impl FnMut(usize, &'a [u8])) -> Option<usize> {
        let text = self.text;
        loop {
            if self.pos >= text.len() {
                return None;
            }
            let (mut start, mut field) = (self.pos, 0);
            loop {
                let i = self.next_separator();
                if i < text.len() && text[i] == b',' {
                    each(field, &text[start..i]);
                    field += 1;
                    start = i + 1;
                    continue;
                }
                self.pos = i + 1;
                if field == 0 && i == start {
                    break; // an empty line
                }
                each(field, &text[start..i]);
                return Some(field + 1);
            }
        }
    }
}

/// One bit for each `,` or `\n` in the 64 bytes of `text` from `at` (fewer at the end).
#[inline]
fn separators(text: &[u8], at: usize) -> u64 {
    let rest = &text[at.min(text.len())..];
    match rest.first_chunk::<64>() {
        Some(block) => block_separators(block),
        None => {
            let mut block = [0u8; 64];
            block[..rest.len()].copy_from_slice(rest);
            block_separators(&block)
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// 0x80 in every byte of `w` that is zero, 0 elsewhere (exact: the high bit is handled
/// apart, so no carry crosses bytes).
#[inline]
fn zero_bytes(w: u64) -> u64 {
    !(((w & LOW7).wrapping_add(LOW7)) | w | LOW7)
}

/// Eight bytes at a time in a u64 (no unsafe code and no SIMD intrinsics; about 7 GB/s
/// here, four times what the compiler made of a byte loop).
#[inline]
fn block_separators(block: &[u8; 64]) -> u64 {
    let mut mask = 0u64;
    for (k, word) in block.chunks_exact(8).enumerate() {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        // One bit at the bottom of every byte that is `,` or `\n`...
        let hits = (zero_bytes(w ^ (ONES * u64::from(b',')))
            | zero_bytes(w ^ (ONES * u64::from(b'\n'))))
            >> 7;
        // ...gathered into the top byte: byte j's bit lands on bit 56 + j.
        mask |= (hits.wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * k);
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(text: &str) -> Vec<Vec<String>> {
        let mut lines = Lines::new(text.as_bytes());
        let mut cells = Vec::new();
        let mut out = Vec::new();
        while lines.next_record(&mut cells) {
            out.push(
                cells
                    .iter()
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect(),
            );
        }
        out
    }

    fn csv_crate(text: &str) -> Vec<Vec<String>> {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes())
            .records()
            .map(|r| r.unwrap().iter().map(str::to_string).collect())
            .collect()
    }

    #[test]
    fn splits_records_as_the_csv_crate_does() {
        for text in [
            "",
            "\n",
            "a",
            "a,b\n1,2\n",
            "a,b\n1,2",
            "a,b\n\n\n1,2\n\n",
            "a,,b,\n,,,\n",
            "long cell more than eight bytes,x,yy,zzzzzzzzzzzzzzzzzzzz\n1,2,3,4\n",
            " spaced , cells \n7 , 8\n",
            "é,ü\n😀,x\n",
            ",\n",
        ] {
            assert!(is_plain(text.as_bytes()));
            assert_eq!(ours(text), csv_crate(text), "{text:?}");
        }
    }

    #[test]
    fn finds_every_separator_at_every_offset() {
        // A separator at each position of a word, and words that straddle it.
        for n in 0..20 {
            let text = format!("{}{}", "x".repeat(n), ",y\nz");
            assert_eq!(
                ours(&text),
                vec![vec!["x".repeat(n), "y".into()], vec!["z".into()]]
            );
        }
        // Bytes that differ from ',' or '\n' by one bit, or have the high bit set.
        let text = "\u{2c}\u{2d}\u{0b}\u{ac}\u{8a}";
        assert_eq!(ours(text), csv_crate(text));
    }

    #[test]
    fn quotes_and_carriage_returns_are_not_plain() {
        assert!(!is_plain(b"a,\"b,c\"\n"));
        assert!(!is_plain(b"a,b\r\n"));
    }
}
