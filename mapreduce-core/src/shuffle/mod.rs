//! The data path of a job, from what a map function emits to what a reduce function reads.
//!
//! ```text
//!  map side                                              reduce side
//!  Emitter -> buffer (combine on insert)                 reduce_side::merge_passes (fan-in)
//!          -> map_side::MapSide (spill policy)           reduce_side::ReduceMerge (k-way merge,
//!               spill -> scratch file   \                    grouped by key) -> Reducer::reduce
//!               run   -> attempt output  > record format  ^
//!               merge_spills (combine)  /   (checksummed  |
//!                                            blocks) ----+  one range per partition per run
//! ```
//!
//! - [`buffer`]: the combining sort buffer of a map attempt.
//! - [`map_side`]: when the buffer spills, how spills are merged (combining again) or kept
//!   as runs, and the layout of an attempt's output: runs of one sorted record stream per
//!   partition, back to back.
//! - [`record`]: the checksummed, optionally compressed record format of every
//!   intermediate byte.
//! - [`merge`] and [`reduce_side`]: the streaming k-way merge, and the merge passes that
//!   bound how many inputs a reduce reads at once.
//!
//! Everything here is written against `Read`, `Write` and [`Scratch`], which makes
//! scratch files; the runtime supplies files (and, for a reduce, the readers of its
//! inputs, wherever they lie), the unit tests supply memory.

pub mod buffer;
pub mod map_side;
pub mod merge;
pub mod record;
pub mod reduce_side;

use std::io::{self, Read, Seek, Write};

use record::FormatError;

/// Makes the scratch files of a task: spills of its sort buffer, runs of merge passes.
/// A scratch file is deleted when it is dropped (an anonymous temporary file, say).
pub trait Scratch {
    /// A scratch file, written once, then read from its start.
    type File: Read + Write + Seek + 'static;
    /// A new, empty scratch file.
    fn create(&mut self) -> io::Result<Self::File>;
}

/// Why a step of the data path failed. The runtime names the file behind each case.
#[derive(Debug, thiserror::Error)]
pub enum ShuffleError {
    /// Writing the attempt's output failed (an I/O error, or a record that does not encode).
    #[error("{0}")]
    Output(FormatError),
    /// Writing or reading a scratch file (a spill, a merge pass's run) failed.
    #[error("scratch file: {0}")]
    Scratch(FormatError),
    /// Opening or reading input number `input` of a reduce failed.
    #[error("input {input}: {error}")]
    Input {
        /// Its index in the reduce's inputs.
        input: usize,
        /// What went wrong.
        error: FormatError,
    },
    /// Input number `input` of a reduce is not sorted by key.
    #[error("input {input} is not sorted by key")]
    Unsorted {
        /// Its index in the reduce's inputs.
        input: usize,
    },
    /// The job's partitioner returned a partition out of range.
    #[error("partitioner returned partition {partition} for {reducers} reducers")]
    BadPartition {
        /// What it returned.
        partition: u32,
        /// The job's reducers.
        reducers: u32,
    },
    /// The attempt was cancelled (its flag was set) and stopped.
    #[error("cancelled")]
    Cancelled,
}

/// Fails with [`ShuffleError::Cancelled`] once `cancelled` is set.
pub(crate) fn ensure_not_cancelled(cancelled: &std::sync::atomic::AtomicBool) -> Result<(), ShuffleError> {
    if cancelled.load(std::sync::atomic::Ordering::Relaxed) { Err(ShuffleError::Cancelled) } else { Ok(()) }
}

/// Scratch files in memory, for tests.
#[cfg(test)]
pub(crate) struct MemScratch;

#[cfg(test)]
impl Scratch for MemScratch {
    type File = io::Cursor<Vec<u8>>;
    fn create(&mut self) -> io::Result<Self::File> {
        Ok(io::Cursor::new(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::merge::MergeError;
    use super::*;

    /// Every cause is in the message and none is a `source()`: a printer that walks the
    /// chain (`anyhow`'s `{:#}`) prints each once.
    #[test]
    fn data_path_errors_print_each_cause_once() {
        let io = || io::Error::new(io::ErrorKind::PermissionDenied, "denied");
        let format = FormatError::from(io());
        let errors: Vec<Box<dyn Error>> = vec![
            Box::new(FormatError::from(io())),
            Box::new(MergeError::Source { input: 2, error: FormatError::from(io()) }),
            Box::new(ShuffleError::Input { input: 1, error: format }),
            Box::new(ShuffleError::Output(FormatError::from(io()))),
        ];
        for e in errors {
            assert!(e.source().is_none(), "{e} has a source too");
            assert_eq!(e.to_string().matches("denied").count(), 1, "{e}");
        }
    }
}
