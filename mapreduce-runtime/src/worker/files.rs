//! The files of a worker's attempts: the atomic output file every attempt writes, and the
//! scratch files of spills and merge passes, all created inside the attempt's work
//! directory opened as a directory handle (`cap_std::fs::Dir`), so nothing an attempt
//! writes can land outside it.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cap_std::fs::{Dir, OpenOptions};
use mapreduce_core::shuffle::Scratch;
use mapreduce_core::shuffle::record::{FormatError, RecordWriter};
use mapreduce_core::{Compression, Output, OutputFormat, RecordSink, text};
use serde::Serialize;

use crate::confine::Files;
use crate::error::TaskError;

/// Buffer of every file an attempt writes.
pub(crate) const WRITE_BUFFER: usize = 256 << 10;

/// A work directory: its handle, and its path for messages and replies.
#[derive(Debug)]
pub(crate) struct WorkDir {
    pub(crate) dir: Dir,
    pub(crate) path: PathBuf,
}

impl WorkDir {
    /// Opens the work directory `path` as `files` allow.
    pub(crate) fn open(files: &Files, path: &Path) -> Result<WorkDir, TaskError> {
        let dir = files.open_dir(path).map_err(|r| r.into_task_error(path, files, write_error(path)))?;
        Ok(WorkDir { dir, path: path.to_path_buf() })
    }
}

/// An attempt's output while it is written: a temporary file in the work directory
/// (`.tmp-*`), linked to its attempt-unique name by [`AtomicFile::persist`] (a hard link
/// fails if the name exists, so it never replaces a file) and unlinked, so that the name
/// always holds a complete file. Dropped unpersisted, it is removed.
#[derive(Debug)]
pub(crate) struct AtomicFile {
    dir: Dir,
    /// The name it will have, and its full path.
    name: String,
    path: PathBuf,
    /// Its name while written.
    tmp: String,
    out: Option<BufWriter<File>>,
}

/// Makes temporary names unique within the process (the pid and clock, across processes).
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

impl AtomicFile {
    /// A new temporary file in `dir`, to become `dir/name`: private to the worker's user
    /// (mode 0600), as intermediate data is.
    pub(crate) fn create(dir: &WorkDir, name: &str) -> Result<AtomicFile, TaskError> {
        Self::create_with_mode(dir, name, 0o600)
    }

    /// [`AtomicFile::create`] for a file of the job's output: mode 0666 less the umask,
    /// like any file the user creates.
    pub(crate) fn create_public(dir: &WorkDir, name: &str) -> Result<AtomicFile, TaskError> {
        Self::create_with_mode(dir, name, 0o666)
    }

    fn create_with_mode(dir: &WorkDir, name: &str, mode: u32) -> Result<AtomicFile, TaskError> {
        let path = dir.path.join(name);
        let werr = |e| write_error(&path)(e);
        let handle = dir.dir.try_clone().map_err(werr)?;
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        cap_std::fs::OpenOptionsExt::mode(&mut options, mode);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        for _ in 0..16 {
            let n = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
            let tmp = format!(".tmp-{}-{nanos:x}-{n}", std::process::id());
            match handle.open_with(&tmp, &options) {
                Ok(file) => {
                    let out = Some(BufWriter::with_capacity(WRITE_BUFFER, file.into_std()));
                    let path = dir.path.join(name);
                    return Ok(AtomicFile { dir: handle, name: name.to_string(), path, tmp, out });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(werr(e)),
            }
        }
        Err(werr(io::Error::new(io::ErrorKind::AlreadyExists, "no free temporary name")))
    }

    /// The name it will have.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes the file and gives it its name (never over an existing file); returns
    /// its path and size.
    pub(crate) fn persist(mut self) -> Result<(PathBuf, u64), TaskError> {
        let werr = write_error(&self.path);
        let out = self.out.take().expect("persisted once");
        let file = out.into_inner().map_err(|e| werr(e.into_error()))?;
        let bytes = file.metadata().map_err(&werr)?.len();
        drop(file);
        self.dir.hard_link(&self.tmp, &self.dir, &self.name).map_err(&werr)?;
        drop(werr);
        // The temporary name goes when `self` drops.
        Ok((std::mem::take(&mut self.path), bytes))
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        let _ = self.dir.remove_file(&self.tmp);
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.as_mut().expect("not persisted").write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.as_mut().expect("not persisted").write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.as_mut().expect("not persisted").flush()
    }
}

/// A file of the job's output as its format writes it: text lines, or a record file.
pub(crate) enum JobOutput {
    Text(AtomicFile, u64, Vec<u8>),
    Records(RecordWriter<AtomicFile>),
}

impl JobOutput {
    /// Starts `file` in `format`.
    pub(crate) fn new(file: AtomicFile, format: OutputFormat) -> io::Result<Self> {
        Ok(match format {
            OutputFormat::Text => JobOutput::Text(file, 0, Vec::with_capacity(256)),
            OutputFormat::Records => JobOutput::Records(RecordWriter::with_compression(file, Compression::Lz4)?),
        })
    }

    /// Writes one pair: a line of text (`mapreduce_core::text`), or the record `(key, value)`.
    pub(crate) fn pair<K: Serialize, V: Serialize>(&mut self, key: &K, value: &V) -> io::Result<()> {
        match self {
            JobOutput::Text(file, records, line) => {
                line.clear();
                text::write_pair(key, value, line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                file.write_all(line)?;
                *records += 1;
                Ok(())
            }
            JobOutput::Records(w) => w.write(key, value).map_err(format_to_io),
        }
    }

    /// An [`Output`] for user code to write into.
    pub(crate) fn output(&mut self) -> Output<'_> {
        if matches!(self, JobOutput::Records(_)) {
            return Output::records_into(self);
        }
        match self {
            JobOutput::Text(file, ..) => Output::new(file),
            JobOutput::Records(_) => unreachable!("handled above"),
        }
    }

    /// Ends the file (a record file's trailer): the file, to persist, and its records.
    pub(crate) fn finish(self) -> io::Result<(AtomicFile, u64)> {
        match self {
            JobOutput::Text(file, records, _) => Ok((file, records)),
            JobOutput::Records(w) => {
                let (file, records, _) = w.finish()?;
                Ok((file, records))
            }
        }
    }
}

impl RecordSink for JobOutput {
    fn write_encoded(&mut self, record: &[u8]) -> io::Result<()> {
        match self {
            JobOutput::Records(w) => w.write_encoded(record).map_err(format_to_io),
            JobOutput::Text(..) => Err(io::Error::other("a text output takes no records")),
        }
    }
}

/// A record format error as the I/O error of a write.
fn format_to_io(e: FormatError) -> io::Error {
    match e {
        FormatError::Io(e) => e,
        e => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
    }
}

/// Scratch files of an attempt: anonymous temporary files in its work directory
/// (`O_TMPFILE` where the filesystem has it), gone when dropped (or when the process dies).
pub(crate) struct TempFiles<'a>(pub(crate) &'a Dir);

impl Scratch for TempFiles<'_> {
    type File = File;

    fn create(&mut self) -> io::Result<File> {
        Ok(cap_tempfile::TempFile::new_anonymous(self.0)?.into_std())
    }
}

/// The error of writing `path`.
pub(crate) fn write_error(path: &Path) -> impl Fn(io::Error) -> TaskError + '_ {
    move |source| TaskError::Write { path: path.to_path_buf(), error: source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work_dir(path: &Path) -> WorkDir {
        WorkDir::open(&Files::Unconfined, path).unwrap()
    }

    #[test]
    fn an_atomic_file_appears_whole_under_its_name_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let work = work_dir(dir.path());
        let mut f = AtomicFile::create(&work, "out").unwrap();
        f.write_all(b"hello").unwrap();
        assert!(!dir.path().join("out").exists(), "not under its name while written");
        let (path, bytes) = f.persist().unwrap();
        assert_eq!((std::fs::read(&path).unwrap(), bytes), (b"hello".to_vec(), 5));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "the temporary name is gone");

        let mut again = AtomicFile::create(&work, "out").unwrap();
        again.write_all(b"other").unwrap();
        let err = again.persist().unwrap_err();
        assert!(err.to_string().contains("out"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"hello", "never replaces a file");

        drop(AtomicFile::create(&work, "dropped").unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "a dropped file leaves nothing");

        let mut scratch = TempFiles(&work.dir);
        let mut s = scratch.create().unwrap();
        s.write_all(b"scratch").unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "scratch files have no name");
    }
}
