//! The tokio and tonic runtime of mapreduce-rs: the workers and the master.
//!
//! - [`worker::serve`] runs a worker: a gRPC server that runs map and reduce attempts for
//!   the job types in its [`Registry`].
//! - [`Cluster`] is the master: [`Cluster::local`] starts in-process workers behind the
//!   real gRPC transport, [`Cluster::connect`] uses remote ones, and [`Cluster::run`]
//!   drives a job through the pure scheduler of `mapreduce-core`.
//!
//! All hosts must share one filesystem: inputs, intermediate files and outputs are named
//! by absolute paths.
//!
//! ```
//! use mapreduce_core::{BoxError, Emitter, Job, JobSpec, Mapper, Output, Reducer};
//! use mapreduce_runtime::Cluster;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct LineLengths;
//!
//! impl Mapper for LineLengths {
//!     type Key = u64;
//!     type Value = u64;
//!     fn map(&self, line: &str, emit: &mut Emitter<'_, u64, u64>) -> Result<(), BoxError> {
//!         emit.emit(line.len() as u64, 1);
//!         Ok(())
//!     }
//! }
//!
//! impl Reducer for LineLengths {
//!     fn reduce(&self, len: &u64, counts: &mut dyn Iterator<Item = u64>, out: &mut Output<'_>) -> Result<(), BoxError> {
//!         out.emit(len, counts.sum::<u64>())?;
//!         Ok(())
//!     }
//! }
//!
//! impl Job for LineLengths {
//!     const NAME: &'static str = "line-lengths";
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("in.txt"), "ab\ncd\nxyz\n")?;
//! let cluster = Cluster::local(2).await?;
//! let spec = JobSpec::new(LineLengths, [dir.path().join("in.txt")], dir.path().join("out"));
//! let report = cluster.run(spec).await?;
//! assert_eq!(std::fs::read_to_string(dir.path().join("out/part-00000"))?, "2\t2\n3\t1\n");
//! assert_eq!(report.output_records, 2);
//! # Ok(()) }
//! ```

mod confine;
mod convert;
pub mod error;
pub mod master;
pub mod security;
pub mod shuffle;
pub mod storage;
pub mod worker;

pub use error::{ClusterError, RunError, SecurityError, ServeError, TaskError};
pub use master::Cluster;
pub use security::{Security, Tls, Token};
pub use worker::{Registry, Worker, serve};
