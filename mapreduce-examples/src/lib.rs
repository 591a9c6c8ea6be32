//! The example jobs of mapreduce-rs, with what their example binary, tests and benchmarks
//! share. Not published: it is the framework's own test bed, written against the public
//! `mapreduce` API as any user's jobs are.
//!
//! - [`wordcount`]: the word count job ([`WordCount`](wordcount::WordCount)) and its
//!   64-bytes-at-a-time tokenizer ([`for_each_word`](wordcount::for_each_word)).
//! - [`sort`]: a range-partitioned sort of 100-byte records ([`Sort`](sort::Sort)).
//! - [`grep`]: a map-only grep whose lines are `path:line:text` ([`Grep`](grep::Grep)).
//! - [`invertedindex`]: each word's files ([`InvertedIndex`](invertedindex::InvertedIndex)).
//! - [`topwords`]: a two-job pipeline that passes typed records: count, then rank.
//! - [`corpus`]: the deterministic inputs of both, from one seeded generator
//!   ([`SplitMix64`](corpus::SplitMix64)).
//! - [`reference`](mod@reference): the sequential results the jobs must equal, and the readers of their
//!   output directories.
//! - [`baseline`]: the tuned single-threaded word count the benchmarks measure the
//!   framework against.
//!
//! It is not part of the framework: nothing in `mapreduce` depends on it.
//!
//! ```
//! use mapreduce::{Cluster, JobSpec};
//! use mapreduce_examples::baseline::count_tuned;
//! use mapreduce_examples::corpus::generate_corpus;
//! use mapreduce_examples::reference::{count_sequential, read_output};
//! use mapreduce_examples::wordcount::WordCount;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let input = dir.path().join("corpus.txt");
//! generate_corpus(&input, 64 << 10, 1000, 7)?; // 64 KiB of Zipf-distributed words
//!
//! let spec = JobSpec::new(WordCount, [&input], dir.path().join("out")).reducers(2);
//! Cluster::local(2).await?.run(spec).await?;
//!
//! let counts = read_output(&dir.path().join("out"))?;
//! assert_eq!(counts, count_sequential(&[input.clone()])?);
//! let mut tuned = count_tuned(&[input])?;
//! tuned.sort();
//! assert!(tuned.into_iter().eq(counts));
//! # Ok(()) }
//! ```

pub mod baseline;
pub mod corpus;
pub mod grep;
pub mod invertedindex;
pub mod reference;
pub mod sort;
pub mod topwords;
pub mod wordcount;
