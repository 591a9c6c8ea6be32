//! An inverted index: for each word, the number of distinct files it occurs in and those
//! files, sorted, named by their absolute paths: lines `word<TAB>N<TAB>file,file,...`.
//! Words are those of [`words`] (runs of letters, case kept).

use mapreduce::{BoxError, Emitter, Job, Mapper, Output, Reducer};
use serde::{Deserialize, Serialize};

use crate::wordcount::words;

/// The inverted index job (no parameters).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, clap::Args)]
pub struct InvertedIndex;

impl Mapper for InvertedIndex {
    type Key = String;
    /// The files a word was seen in, sorted, each once.
    type Value = Vec<String>;

    fn map(&self, line: &str, emit: &mut Emitter<'_, String, Vec<String>>) -> Result<(), BoxError> {
        let file = emit.position().path_str();
        for word in words(line) {
            emit.emit_str(word, vec![file.to_string()]);
        }
        Ok(())
    }
}

/// Merges the sorted, distinct `more` into the sorted, distinct `files`.
fn merge(files: &mut Vec<String>, more: Vec<String>) {
    if more.iter().all(|f| files.binary_search(f).is_ok()) {
        return; // the common case: a word seen again in a file it was seen in
    }
    files.extend(more);
    files.sort_unstable();
    files.dedup();
}

impl Reducer for InvertedIndex {
    fn reduce(
        &self,
        word: &String,
        lists: &mut dyn Iterator<Item = Vec<String>>,
        out: &mut Output<'_>,
    ) -> Result<(), BoxError> {
        let mut files = Vec::new();
        for list in lists {
            merge(&mut files, list);
        }
        out.write_line(&format!("{word}\t{}\t{}", files.len(), files.join(",")))?;
        Ok(())
    }

    fn combine(&self, _: &String, acc: &mut Vec<String>, more: Vec<String>) -> Option<Vec<String>> {
        merge(acc, more);
        None
    }
}

impl Job for InvertedIndex {
    const NAME: &'static str = "invertedindex";
}
