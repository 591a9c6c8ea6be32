//! **mapreduce-rs**: an embeddable, distributed MapReduce for Rust.
//!
//! Implement [`Mapper`] and [`Reducer`] on a serde type, name it with [`Job`], and run it
//! with [`Cluster::run`] on in-process workers ([`Cluster::local`]) or on worker processes
//! started with [`worker::serve`] ([`Cluster::connect`]). The master drives the workers
//! over gRPC with deadlines, retries and backup attempts; outputs are committed
//! atomically as `part-00000`... with a `_SUCCESS` marker.
//!
//! # A tutorial: word count
//!
//! 1. Define the job: a serde type (its fields are the job's parameters, shipped to the
//!    workers with every task), a map function, a reduce function, and, optionally, a
//!    combiner that folds values on the map side.
//! 2. Describe the run with a [`JobSpec`]: inputs (files or directories), an output
//!    directory that must not exist yet, the number of reducers.
//! 3. Run it on a cluster and read the report.
//!
//! String keys are best emitted with [`Emitter::emit_str`]: the map task's buffer looks
//! them up a batch at a time and makes a `String` only for a key it does not hold yet. A
//! map function that does not care where lines end can also override
//! [`Mapper::map_lines`] and take a whole block of lines at once (the word count of the
//! repository's `mapreduce-examples` crate does).
//!
//! ```
//! use mapreduce::{BoxError, Cluster, Emitter, Job, JobSpec, Mapper, Output, Reducer};
//! use serde::{Deserialize, Serialize};
//!
//! // 1. The job.
//! #[derive(Serialize, Deserialize)]
//! struct WordCount;
//!
//! impl Mapper for WordCount {
//!     type Key = String;
//!     type Value = u64;
//!     fn map(&self, line: &str, emit: &mut Emitter<'_, String, u64>) -> Result<(), BoxError> {
//!         for word in line.split(|c: char| !c.is_alphabetic()).filter(|w| !w.is_empty()) {
//!             emit.emit_str(word, 1); // allocates only for a word new to this task
//!         }
//!         Ok(())
//!     }
//! }
//!
//! impl Reducer for WordCount {
//!     fn reduce(&self, word: &String, counts: &mut dyn Iterator<Item = u64>, out: &mut Output<'_>) -> Result<(), BoxError> {
//!         out.emit(word, counts.sum::<u64>())?;
//!         Ok(())
//!     }
//!     fn combine(&self, _word: &String, acc: &mut u64, count: u64) -> Option<u64> {
//!         *acc += count; // counts add up on the map side already
//!         None
//!     }
//! }
//!
//! impl Job for WordCount {
//!     const NAME: &'static str = "tutorial-wordcount";
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("a.txt"), "the cat and the hat\n")?;
//! std::fs::write(dir.path().join("b.txt"), "The end")?;
//!
//! // 2. The run: every file of the directory, two reducers.
//! let spec = JobSpec::new(WordCount, [dir.path()], dir.path().join("out")).reducers(2);
//!
//! // 3. Two workers in this process, behind real gRPC.
//! let cluster = Cluster::local(2).await?;
//! let report = cluster.run(spec).await?;
//! assert_eq!(report.output_records, 6);
//!
//! let mut lines = Vec::new();
//! for part in ["part-00000", "part-00001"] {
//!     lines.extend(std::fs::read_to_string(dir.path().join("out").join(part))?.lines().map(String::from));
//! }
//! lines.sort();
//! assert_eq!(lines, ["The\t1", "and\t1", "cat\t1", "end\t1", "hat\t1", "the\t2"]);
//! assert!(dir.path().join("out/_SUCCESS").exists());
//! # Ok(()) }
//! ```
//!
//! # Beyond lines of text
//!
//! [`Emitter::position`] tells a map where its record lies (file, offset, line number);
//! [`JobSpec::input_format`] reads whole files ([`Mapper::map_file`]), compressed text
//! (`.gz`, `.zst`) or typed record files ([`Mapper::map_record`]) that an earlier job
//! wrote with [`OutputFormat::Records`] ([`Output::record`]); `reducers(0)` makes a
//! map-only job; [`Reducer::group_eq`] gives a secondary sort, and the `*_setup` and
//! `*_finish` hooks run once per task. The [`cli`] module turns a job type into a whole
//! program with `run`, `worker` and `master` commands.
//!
//! # Running workers as processes
//!
//! Workers hold a [`Registry`] of the job types they can run; the master sends the job's
//! name and fields with every task. All hosts must share a filesystem for the inputs and
//! the output; map output too, unless the cluster keeps it on the workers
//! ([`Cluster::with_worker_shuffle`]). A worker serves
//! only loopback until it is given a token (or client certificates) that its master
//! presents: see [`security`].
//!
//! ```no_run
//! # use mapreduce::{BoxError, Emitter, Job, Mapper, Output, Reducer};
//! # #[derive(serde::Serialize, serde::Deserialize)]
//! # struct WordCount;
//! # impl Mapper for WordCount {
//! #     type Key = String;
//! #     type Value = u64;
//! #     fn map(&self, _: &str, _: &mut Emitter<'_, String, u64>) -> Result<(), BoxError> { Ok(()) }
//! # }
//! # impl Reducer for WordCount {
//! #     fn reduce(&self, _: &String, _: &mut dyn Iterator<Item = u64>, _: &mut Output<'_>) -> Result<(), BoxError> { Ok(()) }
//! # }
//! # impl Job for WordCount { const NAME: &'static str = "wordcount"; }
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! // On each worker host:
//! mapreduce::worker::serve("127.0.0.1:7001".parse()?, mapreduce::Registry::new().register::<WordCount>()).await?;
//! // On the master:
//! let cluster = mapreduce::Cluster::connect(["127.0.0.1:7001"])?;
//! # Ok(()) }
//! ```

pub use mapreduce_core::scheduler::{
    AttemptCounts, JobError, JobReport, JobStatus, Phase, SchedulerConfig, WorkerReport,
};
pub use mapreduce_core::{
    BoxError, Compression, DEFAULT_SHARD_SIZE, DEFAULT_SORT_BUFFER, Emitter, InputFormat, InvalidUtf8, Job, JobSpec,
    Key, Mapper, Output, OutputFormat, Position, Record, Reducer, SpecError, Value, counters, stable_partition,
};
pub use mapreduce_runtime::{Cluster, ClusterError, Registry, RunError, ServeError};

#[cfg(feature = "cli")]
pub mod cli;

/// Who may use a worker: a shared [`Token`](security::Token) on every call, TLS, and the
/// protected mode that keeps an unauthenticated worker on loopback (see
/// [`Worker::with_security`](worker::Worker::with_security) and
/// [`Cluster::with_security`]).
pub mod security {
    pub use mapreduce_runtime::error::SecurityError;
    pub use mapreduce_runtime::security::{Security, Tls, Token};
}

/// Running workers: [`worker::serve`], or [`worker::Worker`] for more control.
pub mod worker {
    pub use mapreduce_runtime::worker::{
        DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_SORT_BUFFER, Registry, Worker, WorkerService, serve,
    };
}

/// Types that the API above carries but that few programs name: the error of an invalid
/// [`SchedulerConfig`], and what a [`JobError`] names (the task, its last failed attempt,
/// the worker that failed).
pub mod advanced {
    pub use mapreduce_core::scheduler::{
        AttemptFailure, AttemptId, ConfigError, Failure, TaskId, TaskKind, WorkerFailure, WorkerId,
    };
}
