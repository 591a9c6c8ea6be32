//! The map output a worker keeps in its own work directory (worker shuffle).
//!
//! ```text
//! <work dir>/                          the worker's own (mode 0700)
//! <work dir>/<job id>/                 one job run's map output, removed by EndJob
//! <work dir>/<job id>/m00003-a17       map task 3, attempt 17 (as on the shared filesystem)
//! ```
//!
//! Nothing in a request names a path here: a map attempt's file is named by the job id
//! the master sent (32 hex digits, checked) and the task and attempt numbers, and a fetch
//! names the same ids. A worker's work directory is its own: at start, the job
//! directories found in it (left by a worker that was killed) are removed.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::{self, JobId};

/// Why a range of held map output cannot be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeldError {
    /// The job id is not one the master hands out.
    #[error("job id {0:?} is not 32 hex digits")]
    BadJobId(String),
    /// This worker holds nothing of the job (it has restarted since, or the job ended).
    #[error("this worker holds nothing of job {job} (it may have restarted since)")]
    JobUnknown {
        /// The job run.
        job: String,
    },
    /// This worker holds no output of that attempt.
    #[error("no output {name} of job {job} on this worker")]
    NotHeld {
        /// The job run.
        job: String,
        /// The output's file name (the task and its attempt).
        name: String,
    },
    /// The range ends past the output.
    #[error("range of {bytes} bytes at {offset} is past the end of map output {file} ({len} bytes)")]
    OutOfRange {
        /// The output's file name.
        file: String,
        /// The range.
        offset: u64,
        /// Its length.
        bytes: u64,
        /// The output's length.
        len: u64,
    },
    /// The output cannot be opened or read.
    #[error("cannot read map output {}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
}

impl From<HeldError> for tonic::Status {
    fn from(e: HeldError) -> Self {
        let msg = e.to_string();
        match e {
            HeldError::BadJobId(_) => tonic::Status::invalid_argument(msg),
            HeldError::NotHeld { .. } => tonic::Status::not_found(msg),
            HeldError::JobUnknown { .. } => tonic::Status::not_found(msg),
            HeldError::OutOfRange { .. } => tonic::Status::out_of_range(msg),
            HeldError::Io { .. } => tonic::Status::internal(msg),
        }
    }
}

/// A worker's work directory, where it keeps map output with worker shuffle.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    dir: Arc<Path>,
}

/// An open range of held map output: the file and the range within it.
#[derive(Debug)]
pub(crate) struct HeldRange {
    pub(crate) file: File,
    pub(crate) offset: u64,
    pub(crate) bytes: u64,
}

impl Store {
    /// The store in `dir`, made when first needed (mode 0700); job directories already in
    /// it are removed (a work directory belongs to one worker, which has just started).
    pub(crate) fn open(dir: &Path) -> io::Result<Store> {
        let dir = std::path::absolute(dir)?;
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Store { dir: dir.into() }),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let stale = entry.file_name().to_str().and_then(JobId::parse).is_some();
            if stale && entry.file_type()?.is_dir() {
                tracing::info!(path = %entry.path().display(), "removing map output of an earlier run");
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(Store { dir: dir.into() })
    }

    /// The work directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of `job`'s map output, made if missing (and the work directory).
    pub(crate) fn job_dir(&self, job: &JobId) -> io::Result<PathBuf> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&self.dir)?;
        let path = self.dir.join(job.as_str());
        match std::fs::create_dir(&path) {
            Ok(()) => Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(path),
            Err(e) => Err(e),
        }
    }

    /// Opens `[offset, offset + bytes)` of the output of `map`'s `attempt` in `job`, if
    /// this worker holds it.
    pub(crate) fn open_range(
        &self,
        job: &str,
        map: u32,
        attempt: u64,
        offset: u64,
        bytes: u64,
    ) -> Result<HeldRange, HeldError> {
        self.open_named(job, storage::map_file_name(map, attempt), offset, bytes)
    }

    /// Opens `[offset, offset + bytes)` of the output of reduce `partition`'s `attempt`
    /// in `job`, if this worker holds it (it could not write it where the master asked).
    pub(crate) fn open_reduce_range(
        &self,
        job: &str,
        partition: u32,
        attempt: u64,
        offset: u64,
        bytes: u64,
    ) -> Result<HeldRange, HeldError> {
        self.open_named(job, storage::reduce_file_name(partition, attempt), offset, bytes)
    }

    fn open_named(&self, job: &str, name: String, offset: u64, bytes: u64) -> Result<HeldRange, HeldError> {
        let id = JobId::parse(job).ok_or_else(|| HeldError::BadJobId(job.chars().take(40).collect()))?;
        let path = self.dir.join(id.as_str()).join(&name);
        let not_held = || HeldError::NotHeld { job: id.to_string(), name: name.clone() };
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !self.dir.join(id.as_str()).is_dir() => {
                return Err(HeldError::JobUnknown { job: id.to_string() });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_held()),
            Err(error) => return Err(HeldError::Io { path, error }),
        };
        let meta = file.metadata().map_err(|error| HeldError::Io { path: path.clone(), error })?;
        if !meta.is_file() {
            return Err(not_held());
        }
        let len = meta.len();
        if offset.checked_add(bytes).is_none_or(|end| end > len) {
            return Err(HeldError::OutOfRange { file: name, offset, bytes, len });
        }
        Ok(HeldRange { file, offset, bytes })
    }

    /// How many job runs' map output this worker holds now (their directories), for a
    /// worker that drains: it stops once it holds none. An unreadable directory counts as
    /// none (the worker cannot serve from it either).
    pub(crate) fn jobs_held(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return 0 };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_str().and_then(JobId::parse).is_some())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .count()
    }

    /// Removes `job`'s map output (nothing if there is none).
    pub(crate) fn end_job(&self, job: &JobId) -> io::Result<()> {
        match std::fs::remove_dir_all(self.dir.join(job.as_str())) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes the whole work directory (a default one, when the worker stops).
    pub(crate) fn remove(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.dir.display(), error = %e, "cannot remove work directory");
        }
    }
}

/// A new default work directory: `$TMPDIR/mapreduce-worker-<pid>-<random>`, not made yet.
pub(crate) fn default_work_dir() -> PathBuf {
    let random = &JobId::random().to_string()[..8];
    std::env::temp_dir().join(format!("mapreduce-worker-{}-{random}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_served_only_of_output_held_and_within_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("work")).unwrap();
        let job = JobId::random();
        let job_dir = store.job_dir(&job).unwrap();
        std::fs::write(job_dir.join(storage::map_file_name(3, 17)), vec![7u8; 100]).unwrap();
        let held = store.open_range(job.as_str(), 3, 17, 10, 90).unwrap();
        assert_eq!((held.offset, held.bytes, held.file.metadata().unwrap().len()), (10, 90, 100));
        for (map, attempt) in [(4, 17), (3, 16)] {
            let err = store.open_range(job.as_str(), map, attempt, 0, 1).unwrap_err();
            assert!(matches!(err, HeldError::NotHeld { .. }), "{err}");
            assert_eq!(tonic::Status::from(err).code(), tonic::Code::NotFound);
        }
        // A job it holds nothing of (a worker restarted since): said so.
        let err = store.open_range(JobId::random().as_str(), 3, 17, 0, 1).unwrap_err();
        assert!(matches!(err, HeldError::JobUnknown { .. }), "{err}");
        assert!(err.to_string().contains("may have restarted"), "{err}");
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::NotFound);
        for (offset, bytes) in [(0, 101), (100, 1), (u64::MAX, 2)] {
            let err = store.open_range(job.as_str(), 3, 17, offset, bytes).unwrap_err();
            assert!(matches!(err, HeldError::OutOfRange { len: 100, .. }), "{err}");
            assert_eq!(tonic::Status::from(err).code(), tonic::Code::OutOfRange);
        }
        for bad in ["../../etc", "", &"a".repeat(32).replace('a', "G")] {
            let err = store.open_range(bad, 3, 17, 0, 1).unwrap_err();
            assert!(matches!(err, HeldError::BadJobId(_)), "{err}");
        }
        std::fs::write(job_dir.join(storage::reduce_file_name(1, 18)), vec![8u8; 10]).unwrap();
        assert_eq!(store.open_reduce_range(job.as_str(), 1, 18, 0, 10).unwrap().bytes, 10);
        assert!(matches!(store.open_reduce_range(job.as_str(), 3, 17, 0, 1), Err(HeldError::NotHeld { .. })));
        assert_eq!(store.jobs_held(), 1);
        store.end_job(&job).unwrap();
        assert!(!job_dir.exists());
        assert_eq!(store.jobs_held(), 0);
        store.end_job(&job).unwrap();
    }

    #[test]
    fn job_directories_left_in_a_work_directory_are_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let store = Store::open(&work).unwrap();
        let old = store.job_dir(&JobId::random()).unwrap();
        std::fs::write(old.join("m00000-a0"), "x").unwrap();
        std::fs::write(work.join("keep.txt"), "not a job's").unwrap();
        Store::open(&work).unwrap();
        assert!(!old.exists());
        assert!(work.join("keep.txt").exists(), "only job directories are removed");
    }
}
