//! The pure heart of mapreduce-rs: everything that needs no I/O of its own and no async.
//!
//! - [`job`]: the user API: [`Mapper`], [`Reducer`] (with its optional combiner and its
//!   partitioner), [`Job`] and the [`JobSpec`] that says what to run it on.
//! - [`shard`]: cutting input files into shards at line boundaries, and the line reader.
//! - [`shuffle`]: the data path from map output to reduce input: the combining sort
//!   buffer, spills and the layout of map output, the checksummed record format, and the
//!   k-way merge with its merge passes.
//! - [`scheduler`]: the sans-IO scheduler: task states, attempts, deadlines, retries and
//!   speculation, driven with an explicit clock.
//! - [`text`]: any serde key and value as a line of tab-separated text, for map-only output.
//!
//! It is not the runtime: it opens no file and no socket (readers and writers are passed
//! in), spawns nothing, and never reads the clock. `mapreduce-runtime` drives it.
//!
//! ```
//! use mapreduce_core::{Emitter, Mapper, Output, Reducer, BoxError};
//!
//! struct WordCount;
//!
//! impl Mapper for WordCount {
//!     type Key = String;
//!     type Value = u64;
//!     fn map(&self, line: &str, emit: &mut Emitter<'_, String, u64>) -> Result<(), BoxError> {
//!         for word in line.split_whitespace() {
//!             emit.emit(word.to_string(), 1);
//!         }
//!         Ok(())
//!     }
//! }
//!
//! impl Reducer for WordCount {
//!     fn reduce(&self, key: &String, values: &mut dyn Iterator<Item = u64>, out: &mut Output<'_>) -> Result<(), BoxError> {
//!         out.emit(key, values.sum::<u64>())?;
//!         Ok(())
//!     }
//! }
//!
//! // Map one line by hand and reduce what it emitted.
//! let mut pairs = Vec::new();
//! WordCount.map("to be or not to be", &mut Emitter::new(&mut |k, v| pairs.push((k, v))))?;
//! pairs.sort();
//! let mut text = Vec::new();
//! let mut out = Output::new(&mut text);
//! WordCount.reduce(&"to".to_string(), &mut pairs.iter().filter(|p| p.0 == "to").map(|p| p.1), &mut out)?;
//! assert_eq!(String::from_utf8(text)?, "to\t2\n");
//! # Ok::<(), BoxError>(())
//! ```

pub mod counters;
pub mod job;
pub mod scheduler;
pub mod shard;
pub mod shuffle;
pub mod text;

pub use counters::Counters;
pub use job::{
    BoxError, DEFAULT_SHARD_SIZE, DEFAULT_SORT_BUFFER, Emitter, InputFormat, InvalidUtf8, Job, JobSpec, Key, Mapper,
    Output, OutputFormat, Position, Record, RecordSink, Reducer, SpecError, Value, stable_hash, stable_partition,
};
pub use scheduler::{JobError, JobReport, Scheduler, SchedulerConfig};
pub use shuffle::record::Compression;
