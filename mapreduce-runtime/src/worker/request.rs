//! Checking the parts every request shares: the job (its type in the registry, its
//! sizes, formats and id) and the paths it names (beneath the data roots).

use std::path::{Path, PathBuf};

use mapreduce_core::job::{MAX_MAX_LINE_BYTES, MAX_REDUCERS, MAX_SORT_BUFFER, MIN_MAX_LINE_BYTES};
use mapreduce_core::shard::MAX_PATH_BYTES;
use mapreduce_core::{Compression, InputFormat, InvalidUtf8, OutputFormat};
use mapreduce_rpc::pb;

use super::WorkerService;
use super::registry::PendingJob;
use crate::confine::Files;
use crate::convert;
use crate::error::TaskError;
use crate::storage::JobId;

/// The job part of a request, checked.
pub(super) struct JobParts {
    pub(super) job: PendingJob,
    pub(super) reducers: u32,
    pub(super) sort_buffer: u64,
    pub(super) compression: Compression,
    pub(super) max_line: usize,
    pub(super) skip_long_lines: bool,
    /// The job run's id, if the master sent one.
    pub(super) job_id: Option<JobId>,
    pub(super) input_format: InputFormat,
    pub(super) output_format: OutputFormat,
    pub(super) invalid_utf8: InvalidUtf8,
}

impl WorkerService {
    /// Checks the job part of a request and finds its type; the fields are decoded later,
    /// off the async threads (a user's `Deserialize` may be slow or panic).
    pub(super) fn job(&self, spec: Option<pb::Job>) -> Result<JobParts, TaskError> {
        let spec = spec.ok_or_else(|| TaskError::InvalidRequest("missing job".into()))?;
        if spec.reducers > MAX_REDUCERS {
            return Err(TaskError::InvalidRequest(format!(
                "reducers must be in 0..={MAX_REDUCERS}, got {}",
                spec.reducers
            )));
        }
        if !(mapreduce_core::job::MIN_SORT_BUFFER..=MAX_SORT_BUFFER).contains(&spec.sort_buffer_bytes) {
            return Err(TaskError::InvalidRequest(format!(
                "sort buffer of {} bytes is out of range",
                spec.sort_buffer_bytes
            )));
        }
        let decoder = {
            let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
            registry.jobs.get(spec.name.as_str()).copied()
        };
        let decoder = decoder.ok_or_else(|| TaskError::UnknownJob(spec.name.clone()))?;
        if spec.sort_buffer_bytes > self.max_sort_buffer {
            return Err(TaskError::OverLimit {
                what: "sort buffer",
                asked: spec.sort_buffer_bytes,
                limit: self.max_sort_buffer,
                knob: "Worker::with_max_sort_buffer",
            });
        }
        let compression = convert::compression_from_pb(spec.compression)
            .ok_or_else(|| TaskError::InvalidRequest(format!("unknown compression {}", spec.compression)))?;
        if !(MIN_MAX_LINE_BYTES..=MAX_MAX_LINE_BYTES).contains(&spec.max_line_bytes) {
            return Err(TaskError::InvalidRequest(format!(
                "max line of {} bytes is outside {MIN_MAX_LINE_BYTES}..={MAX_MAX_LINE_BYTES}",
                spec.max_line_bytes
            )));
        }
        let input_format = convert::input_format_from_pb(spec.input_format)
            .ok_or_else(|| TaskError::InvalidRequest(format!("unknown input format {}", spec.input_format)))?;
        let output_format = convert::output_format_from_pb(spec.output_format)
            .ok_or_else(|| TaskError::InvalidRequest(format!("unknown output format {}", spec.output_format)))?;
        let invalid_utf8 = convert::invalid_utf8_from_pb(spec.invalid_utf8)
            .ok_or_else(|| TaskError::InvalidRequest(format!("unknown invalid_utf8 policy {}", spec.invalid_utf8)))?;
        let job_id = match spec.job_id.as_str() {
            "" => None,
            id => Some(
                JobId::parse(id)
                    .ok_or_else(|| TaskError::InvalidRequest(format!("job id {id:?} is not 32 hex digits")))?,
            ),
        };
        Ok(JobParts {
            job_id,
            job: PendingJob { decoder, name: spec.name, payload: spec.payload },
            reducers: spec.reducers,
            sort_buffer: spec.sort_buffer_bytes,
            compression,
            max_line: spec.max_line_bytes as usize,
            skip_long_lines: spec.skip_long_lines,
            input_format,
            output_format,
            invalid_utf8,
        })
    }

    /// Checks that `path` is absolute, not too long, has no `..`, and lies under a data
    /// root (by name: opening it resolves it beneath the root, symlinks included).
    pub(super) fn path(&self, path: &str) -> Result<PathBuf, TaskError> {
        if path.len() > MAX_PATH_BYTES {
            let start: String = path.chars().take(100).collect();
            return Err(TaskError::InvalidRequest(format!(
                "path {start:?}... of {} bytes is longer than the limit of {MAX_PATH_BYTES}",
                path.len()
            )));
        }
        let p = Path::new(path);
        if Files::Unconfined.admits(p) && !self.files.admits(p) {
            return Err(TaskError::OutsideRoots { path: path.to_string(), roots: self.files.describe_roots() });
        }
        if !self.files.admits(p) {
            return Err(TaskError::InvalidRequest(format!("path {path:?} must be absolute without '..'")));
        }
        Ok(p.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::{Registry, Worker};
    use mapreduce_core::{BoxError, Emitter, Job, Mapper, Output, Reducer};

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Nop;

    impl Mapper for Nop {
        type Key = String;
        type Value = u64;
        fn map(&self, _: &str, _: &mut Emitter<'_, String, u64>) -> Result<(), BoxError> {
            Ok(())
        }
    }

    impl Reducer for Nop {
        fn reduce(&self, _: &String, _: &mut dyn Iterator<Item = u64>, _: &mut Output<'_>) -> Result<(), BoxError> {
            Ok(())
        }
    }

    impl Job for Nop {
        const NAME: &'static str = "nop";
    }

    #[test]
    fn the_job_part_of_a_request_is_checked_and_names_what_is_wrong() {
        let service = Worker::new(Registry::new().register::<Nop>()).into_service().unwrap();
        let spec = |compression| pb::Job {
            name: "nop".into(),
            payload: Vec::new(),
            reducers: 2,
            sort_buffer_bytes: 1 << 20,
            compression,
            max_line_bytes: 1 << 20,
            skip_long_lines: false,
            job_id: String::new(),
            input_format: 1,
            output_format: 1,
            invalid_utf8: 1,
        };
        let parts = service.job(Some(spec(pb::Compression::Lz4 as i32))).unwrap();
        assert_eq!((parts.reducers, parts.sort_buffer, parts.compression), (2, 1 << 20, Compression::Lz4));
        for unknown in [0, 7] {
            let err = service.job(Some(spec(unknown))).err().expect("an unset or unknown compression is refused");
            assert!(
                matches!(&err, TaskError::InvalidRequest(m) if *m == format!("unknown compression {unknown}")),
                "{err}"
            );
        }
        let err = service.job(Some(pb::Job { name: "other".into(), ..spec(1) })).err().unwrap();
        assert!(matches!(&err, TaskError::UnknownJob(name) if name == "other"), "{err}");
        for max_line_bytes in [0, 1023, MAX_MAX_LINE_BYTES + 1] {
            let err = service.job(Some(pb::Job { max_line_bytes, ..spec(1) })).err().expect("refused");
            assert!(err.to_string().contains(&format!("max line of {max_line_bytes} bytes")), "{err}");
        }
    }
}
