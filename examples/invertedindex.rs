//! An inverted index: `invertedindex run --input PATH... --output DIR [--workers N]
//! [--reducers R]`. Output lines are `word<TAB>N<TAB>file,file,...`: the number of
//! distinct files the word occurs in, and those files, sorted, by their absolute paths.

use std::process::ExitCode;

use mapreduce::cli::Runner;
use mapreduce_examples::invertedindex::InvertedIndex;

fn main() -> ExitCode {
    Runner::<InvertedIndex>::new("invertedindex").about("Lists the files each word occurs in").main()
}
