//! Where a reduce reads map output from: the [`ShuffleSource`] seam.
//!
//! A reduce names each of its inputs by what it is (a map task's attempt, a partition, a
//! byte range) and where it lies (an opaque location the map attempt reported). A source
//! turns that into bytes. Two sources, chosen per input by its location:
//!
//! - `shared_fs`: [`SharedFs`], every host sees the map attempt's file at the same path
//!   (the default mode);
//! - `grpc`: [`GrpcShuffle`], with worker shuffle (`Cluster::with_worker_shuffle`) map
//!   output stays on the worker that wrote it (`store`) and a reduce fetches each range
//!   from it with the `Fetch` call, or reads it from disk when it holds it itself. The
//!   location is a [`WorkerLocation`], `grpc://host:port/<job id>/<map>/<attempt>`.
//!
//! Reduces run on blocking threads, so a reader may block: `GrpcShuffle::open` starts the
//! fetch and returns a reader fed by it.

mod grpc;
mod shared_fs;
pub(crate) mod store;

use std::io::{self, Read};

use mapreduce_core::scheduler::ReduceInput;

pub(crate) use grpc::serve_range;
pub use grpc::{FETCH_CHUNK, GrpcShuffle, WorkerLocation};
pub use shared_fs::SharedFs;

/// Opens the map output ranges a reduce reads.
pub trait ShuffleSource: Send + Sync + std::fmt::Debug {
    /// A reader of exactly the bytes of `input`'s range. Errors (and a short read) mean
    /// the map output is not to be had from here.
    fn open(&self, input: &ReduceInput) -> io::Result<Box<dyn Read + Send>>;

    /// How errors name `input`: its file, or its location.
    fn describe(&self, input: &ReduceInput) -> String {
        input.location.to_string()
    }
}

/// A worker's sources: a location that is a [`WorkerLocation`] is fetched by
/// [`GrpcShuffle`], any other is a path read by [`SharedFs`].
#[derive(Debug)]
pub(crate) struct Shuffles {
    pub(crate) shared: SharedFs,
    pub(crate) grpc: GrpcShuffle,
}

impl ShuffleSource for Shuffles {
    fn open(&self, input: &ReduceInput) -> io::Result<Box<dyn Read + Send>> {
        if WorkerLocation::is_one(input.location.as_str()) { self.grpc.open(input) } else { self.shared.open(input) }
    }
}
