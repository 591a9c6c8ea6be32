//! Where a reduce reads map output from: the [`ShuffleSource`] seam.
//!
//! A reduce names each of its inputs by what it is (a map task's attempt, a partition, a
//! byte range) and where it lies (an opaque location the map attempt reported). A source
//! turns that into bytes. Today's source is [`SharedFs`]: every host sees the map
//! attempt's file at the same path. A source that fetches ranges from the worker that
//! wrote them, over gRPC, fits the same trait: `open` starts the fetch and returns a
//! reader fed by it (reduces run on blocking threads, so a reader may block).

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use mapreduce_core::scheduler::ReduceInput;

use crate::confine::{Files, Refused};

/// Opens the map output ranges a reduce reads.
pub trait ShuffleSource: Send + Sync + std::fmt::Debug {
    /// A reader of exactly the bytes of `input`'s range. Errors (and a short read) mean
    /// the map output is not to be had from here.
    fn open(&self, input: &ReduceInput) -> io::Result<Box<dyn Read + Send>>;

    /// How errors name `input`: its file, or its location.
    fn describe(&self, input: &ReduceInput) -> String;
}

/// Map output on a filesystem that every worker shares: the location is the attempt
/// file's path. A worker confined to data roots reads only beneath them, and only
/// regular files.
#[derive(Debug, Default, Clone)]
pub struct SharedFs {
    files: Files,
}

impl SharedFs {
    /// Map output read as `files` allow.
    pub(crate) fn new(files: Files) -> Self {
        SharedFs { files }
    }
}

impl ShuffleSource for SharedFs {
    fn open(&self, input: &ReduceInput) -> io::Result<Box<dyn Read + Send>> {
        let mut file = self.files.open_regular(Path::new(input.location.as_str())).map_err(|r| match r {
            Refused::Outside => io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("outside the worker's data roots ({})", self.files.describe_roots()),
            ),
            Refused::NotRegular(what) => {
                io::Error::new(io::ErrorKind::InvalidInput, format!("{what}, not a regular file"))
            }
            Refused::Io(e) => e,
        })?;
        file.seek(SeekFrom::Start(input.range.offset))?;
        Ok(Box::new(file.take(input.range.bytes)))
    }

    fn describe(&self, input: &ReduceInput) -> String {
        input.location.to_string()
    }
}
