//! The master: [`Cluster`], and the driver that adapts the pure scheduler to workers.
//!
//! - `cluster`: [`Cluster`] (its workers, `local` and `connect`) and [`Cluster::run`]:
//!   list inputs, plan shards, claim the output directory, drive, commit.
//! - `driver`: the loop that owns the `Scheduler`, with a deadline on every call.
//! - `transport`: how the driver reaches workers (gRPC in production, a fake in tests).
//! - `replies`: what a worker's answer means: a status as a `Failure`, a reply checked.
//! - `join`: the `Join` service of a master that listens, and the workers it was offered.

mod cluster;
mod driver;
mod join;
pub(crate) mod replies;
pub(crate) mod transport;

pub use cluster::Cluster;
