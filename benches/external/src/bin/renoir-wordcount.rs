//! Word count with renoir (2 local worker threads), in the style of renoir's own
//! `wordcount` example: read the file as lines, split them into words, `group_by_count`
//! by word (counted locally first, then shuffled), collect, sort, write.
//!
//! usage: renoir-wordcount INPUT_FILE OUTPUT_FILE    (writes `word<TAB>count` lines sorted by word)
//!
//! renoir's `FileSource` splits the file by byte range among the replicas but panics on
//! invalid UTF-8, so the source here does the same split with lossy reading.

use external_wordcount::{args, part_lines, words, write_sorted};
use renoir::prelude::*;

fn main() {
    let (input, output) = args("renoir-wordcount");
    let ctx = StreamContext::new(RuntimeConfig::local(2).expect("renoir config"));
    let path = input.clone();
    let counts = ctx
        .stream_par_iter(move |index, parts| {
            part_lines(&path, index as usize, parts as usize)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        })
        .batch_mode(BatchMode::fixed(1024))
        .flat_map(|line: String| words(&line).map(str::to_owned).collect::<Vec<_>>())
        .group_by_count(|word: &String| word.clone())
        .collect_vec();
    ctx.execute_blocking();
    let counts = counts.get().expect("the result of the job");
    let counts = counts.into_iter().map(|(word, n)| (word, n as u64)).collect();
    write_sorted(&output, counts).unwrap_or_else(|e| panic!("cannot write {}: {e}", output.display()));
}
