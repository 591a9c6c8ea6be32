//! [`SharedFs`]: map output on a filesystem that every worker shares.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use mapreduce_core::scheduler::ReduceInput;

use super::ShuffleSource;
use crate::confine::{Files, Refused};

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
}
