//! Word count, the canonical MapReduce job: the job, its words, and the tokenizer it shares
//! with the tuned baseline ([`count_tuned`](crate::baseline::count_tuned)). Its corpus is
//! [`generate_corpus`](crate::corpus::generate_corpus), the count it must equal
//! [`count_sequential`](crate::reference::count_sequential).
//!
//! A word is a maximal run of characters for which [`char::is_alphabetic`] holds; case is
//! kept. Output lines are `word<TAB>count`.

use mapreduce::{BoxError, Emitter, Job, Mapper, Output, Reducer};
use serde::{Deserialize, Serialize};

mod split;
pub use split::for_each_word;

/// The word count job (no parameters: no flags of its own).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, clap::Args)]
pub struct WordCount;

/// The words of `text`: maximal runs of alphabetic characters.
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !is_alphabetic(c)).filter(|w| !w.is_empty())
}

/// [`char::is_alphabetic`], with answers for ASCII and the Latin and Cyrillic letters of
/// European text that skip the general Unicode table search.
#[inline]
pub fn is_alphabetic(c: char) -> bool {
    match c {
        'a'..='z' | 'A'..='Z' => true,
        '\0'..='\x7f' => false,
        // Latin-1 letters, Latin Extended-A and -B: all letters but × and ÷.
        '\u{c0}'..='\u{24f}' => c != '\u{d7}' && c != '\u{f7}',
        // Cyrillic: letters but for the signs and combining marks U+0482..U+0489.
        '\u{400}'..='\u{481}' | '\u{48a}'..='\u{52f}' => true,
        _ => c.is_alphabetic(),
    }
}

/// Words as keys: a string stored inline up to 24 bytes (nearly every word), so the map
/// side's table compares keys without following a pointer to the heap.
pub type Word = compact_str::CompactString;

impl Mapper for WordCount {
    type Key = Word;
    type Value = u64;

    fn map(&self, line: &str, emit: &mut Emitter<'_, Word, u64>) -> Result<(), BoxError> {
        for_each_word(line, |word| emit.emit_str(word, 1));
        Ok(())
    }

    /// Line ends separate words like any other separator: split the whole block.
    fn map_lines(&self, lines: &str, emit: &mut Emitter<'_, Word, u64>) -> Result<(), BoxError> {
        self.map(lines, emit)
    }
}

impl Reducer for WordCount {
    fn reduce(&self, word: &Word, counts: &mut dyn Iterator<Item = u64>, out: &mut Output<'_>) -> Result<(), BoxError> {
        // `word<TAB>count`, as `emit` would write it, through serde rather than the
        // formatting machinery: a string and an integer need none.
        out.record(&(word, counts.sum::<u64>()))?;
        Ok(())
    }

    fn combine(&self, _word: &Word, acc: &mut u64, count: u64) -> Option<u64> {
        *acc += count;
        None
    }
}

impl Job for WordCount {
    const NAME: &'static str = "wordcount";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_is_alphabetic_agrees_with_std_everywhere() {
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            assert_eq!(is_alphabetic(c), c.is_alphabetic(), "{c:?} U+{:04X}", c as u32);
        }
    }

    #[test]
    fn words_are_alphabetic_runs_with_case_kept() {
        let got: Vec<&str> = words("Hello, wörld! it's 42x ß-Straße\u{fffd}ok").collect();
        assert_eq!(got, vec!["Hello", "wörld", "it", "s", "x", "ß", "Straße", "ok"]);
    }
}
