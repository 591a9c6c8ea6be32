//! The most frequent words, in two jobs that pass typed records: [`CountWords`] counts
//! words into a record file of `(word, count)`, and [`TopWords`] reads those records (no
//! text parsed again) and orders them by count, most frequent first, keeping the first
//! `--top N`: lines `count<TAB>word`.

use std::cmp::Reverse;
use std::sync::atomic::{AtomicU64, Ordering};

use mapreduce::{BoxError, Emitter, Job, Mapper, Output, Record, Reducer};
use serde::{Deserialize, Serialize};

use crate::wordcount::WordCount;

/// Stage 1: word count whose output is typed `(word, count)` records.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct CountWords;

impl Mapper for CountWords {
    type Key = <WordCount as Mapper>::Key;
    type Value = u64;

    fn map(&self, line: &str, emit: &mut Emitter<'_, Self::Key, u64>) -> Result<(), BoxError> {
        WordCount.map(line, emit)
    }

    fn map_lines(&self, lines: &str, emit: &mut Emitter<'_, Self::Key, u64>) -> Result<(), BoxError> {
        WordCount.map_lines(lines, emit)
    }
}

impl Reducer for CountWords {
    fn reduce(
        &self,
        word: &Self::Key,
        counts: &mut dyn Iterator<Item = u64>,
        out: &mut Output<'_>,
    ) -> Result<(), BoxError> {
        out.record(&(word.as_str(), counts.sum::<u64>()))?;
        Ok(())
    }

    fn combine(&self, _: &Self::Key, acc: &mut u64, n: u64) -> Option<u64> {
        *acc += n;
        None
    }
}

impl Job for CountWords {
    const NAME: &'static str = "topwords-count";
}

/// Stage 2: reads `(word, count)` records and writes the `top` most frequent words, most
/// frequent first (ties in word order), with one reducer.
#[derive(Debug, Default, Serialize, Deserialize, clap::Args)]
pub struct TopWords {
    /// How many words to keep
    #[arg(long, default_value_t = 20)]
    pub top: u64,
    /// Words written so far by this task.
    #[serde(skip)]
    #[arg(skip)]
    written: AtomicU64,
}

impl TopWords {
    /// The `top` most frequent words.
    pub fn new(top: u64) -> Self {
        TopWords { top, written: AtomicU64::new(0) }
    }
}

impl Mapper for TopWords {
    type Key = (Reverse<u64>, String);
    type Value = ();

    fn map_record(&self, record: Record<'_>, emit: &mut Emitter<'_, Self::Key, ()>) -> Result<(), BoxError> {
        let (word, count): (String, u64) = record.decode()?;
        emit.emit((Reverse(count), word), ());
        Ok(())
    }
}

impl Reducer for TopWords {
    fn reduce(&self, key: &Self::Key, _: &mut dyn Iterator<Item = ()>, out: &mut Output<'_>) -> Result<(), BoxError> {
        if self.written.fetch_add(1, Ordering::Relaxed) < self.top {
            out.emit(key.0.0, &key.1)?;
        }
        Ok(())
    }
}

impl Job for TopWords {
    const NAME: &'static str = "topwords";
}
