//! The files of a worker's attempts: the atomic output file every attempt writes, and the
//! scratch files of spills and merge passes.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use mapreduce_core::shuffle::Scratch;
use tempfile::NamedTempFile;

use crate::error::TaskError;

/// Buffer of every file an attempt writes.
pub(crate) const WRITE_BUFFER: usize = 256 << 10;

/// An attempt's output while it is written: a temporary file in the work directory
/// (`.tmp-*`), renamed to its attempt-unique name by [`AtomicFile::persist`], so that the
/// name always holds a complete file. Dropped unpersisted, it is removed.
#[derive(Debug)]
pub(crate) struct AtomicFile {
    /// The name it will have.
    path: PathBuf,
    out: BufWriter<NamedTempFile>,
}

impl AtomicFile {
    /// A new temporary file in `dir`, to become `dir/name`.
    pub(crate) fn create(dir: &Path, name: &str) -> Result<AtomicFile, TaskError> {
        let path = dir.join(name);
        let tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir).map_err(write_error(&path))?;
        Ok(AtomicFile { path, out: BufWriter::with_capacity(WRITE_BUFFER, tmp) })
    }

    /// The name it will have.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes the file and renames it into place (never over an existing file); returns
    /// its size.
    pub(crate) fn persist(self) -> Result<(PathBuf, u64), TaskError> {
        let AtomicFile { path, out } = self;
        let bytes = {
            let werr = write_error(&path);
            let tmp = out.into_inner().map_err(|e| werr(e.into_error()))?;
            let bytes = tmp.as_file().metadata().map_err(&werr)?.len();
            tmp.persist_noclobber(&path).map_err(|e| werr(e.error))?;
            bytes
        };
        Ok((path, bytes))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Scratch files of an attempt: anonymous temporary files in its work directory, gone
/// when dropped (or when the process dies).
pub(crate) struct TempFiles<'a>(pub(crate) &'a Path);

impl Scratch for TempFiles<'_> {
    type File = File;

    fn create(&mut self) -> io::Result<File> {
        tempfile::tempfile_in(self.0)
    }
}

/// The error of writing `path`.
pub(crate) fn write_error(path: &Path) -> impl Fn(io::Error) -> TaskError + '_ {
    move |source| TaskError::Write { path: path.to_path_buf(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_file_appears_whole_under_its_name_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = AtomicFile::create(dir.path(), "out").unwrap();
        f.write_all(b"hello").unwrap();
        assert!(!dir.path().join("out").exists(), "not under its name while written");
        let (path, bytes) = f.persist().unwrap();
        assert_eq!((std::fs::read(&path).unwrap(), bytes), (b"hello".to_vec(), 5));

        let mut again = AtomicFile::create(dir.path(), "out").unwrap();
        again.write_all(b"other").unwrap();
        let err = again.persist().unwrap_err();
        assert!(err.to_string().contains("out"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"hello", "never replaces a file");

        drop(AtomicFile::create(dir.path(), "dropped").unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "a dropped file leaves nothing");
    }
}
