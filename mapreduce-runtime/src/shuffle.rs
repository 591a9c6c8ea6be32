//! Where a reduce reads map output from: the [`ShuffleSource`] seam.
//!
//! A reduce names each of its inputs by what it is (a map task's attempt, a partition, a
//! byte range) and where it lies (an opaque location the map attempt reported). A source
//! turns that into bytes. Today's source is [`SharedFs`]: every host sees the map
//! attempt's file at the same path. A source that fetches ranges from the worker that
//! wrote them, over gRPC, fits the same trait: `open` starts the fetch and returns a
//! reader fed by it (reduces run on blocking threads, so a reader may block).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use mapreduce_core::scheduler::ReduceInput;

/// Opens the map output ranges a reduce reads.
pub trait ShuffleSource: Send + Sync + std::fmt::Debug {
    /// A reader of exactly the bytes of `input`'s range. Errors (and a short read) mean
    /// the map output is not to be had from here.
    fn open(&self, input: &ReduceInput) -> io::Result<Box<dyn Read + Send>>;

    /// How errors name `input`: its file, or its location.
    fn describe(&self, input: &ReduceInput) -> String;
}

/// Map output on a filesystem that every worker shares: the location is the attempt
/// file's path.
#[derive(Debug, Default, Clone, Copy)]
pub struct SharedFs;

impl ShuffleSource for SharedFs {
    fn open(&self, input: &ReduceInput) -> io::Result<Box<dyn Read + Send>> {
        let mut file = File::open(input.location.as_str())?;
        file.seek(SeekFrom::Start(input.range.offset))?;
        Ok(Box::new(file.take(input.range.bytes)))
    }

    fn describe(&self, input: &ReduceInput) -> String {
        input.location.to_string()
    }
}
