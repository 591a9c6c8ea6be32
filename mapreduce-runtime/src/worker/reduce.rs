//! Running a reduce attempt: merge the partition's map output ranges, read through a
//! [`ShuffleSource`], into the user's reduce, and write the attempt's output file.

use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mapreduce_core::counters::{self, Counters, builtin};
use mapreduce_core::scheduler::ReduceInput;
use mapreduce_core::shuffle::ShuffleError;
use mapreduce_core::shuffle::record::FormatError;
use mapreduce_core::shuffle::reduce_side::{ReduceMerge, merge_passes};
use mapreduce_core::{BoxError, Compression, Job, OutputFormat};

use super::files::{AtomicFile, JobOutput, TempFiles, WorkDir};
use super::map::shuffle_error;
use crate::confine::Files;
use crate::error::{TaskError, panic_message};
use crate::shuffle::ShuffleSource;
use crate::storage;

/// A validated reduce request.
#[derive(Debug)]
pub(crate) struct ReduceTask {
    pub(crate) attempt: u64,
    pub(crate) partition: u32,
    pub(crate) inputs: Vec<ReduceInput>,
    pub(crate) work_dir: PathBuf,
    /// The work directory is the worker's own (it cannot see the master's): opened
    /// whatever the data roots.
    pub(crate) own_work_dir: bool,
    /// Most inputs merged at once.
    pub(crate) fanin: usize,
    /// How the runs of merge passes store their blocks.
    pub(crate) compression: Compression,
    /// Set when the master abandons the attempt: stop at the next key.
    pub(crate) cancelled: Arc<AtomicBool>,
    /// Where the attempt may write.
    pub(crate) files: Files,
    /// How the output is written.
    pub(crate) output_format: OutputFormat,
}

/// What a reduce attempt wrote.
#[derive(Debug)]
pub(crate) struct ReduceResult {
    pub(crate) path: String,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
    /// The attempt's counters, built-in and the user's.
    pub(crate) counters: Counters,
}

/// The values of one key, counted as the reduce reads them.
struct Counted<'a, 'b, V> {
    values: &'a mut (dyn Iterator<Item = V> + 'b),
    read: &'a mut u64,
}

impl<V> Iterator for Counted<'_, '_, V> {
    type Item = V;

    fn next(&mut self) -> Option<V> {
        let v = self.values.next()?;
        *self.read += 1;
        Some(v)
    }
}

/// Runs one reduce attempt: a streaming merge of the partition's map outputs (in passes
/// beyond the fan-in), grouped by key, through the user's reduce into a text file renamed
/// to its attempt-unique name.
pub(crate) fn run_reduce<J: Job>(
    job: &J,
    t: &ReduceTask,
    source: &dyn ShuffleSource,
) -> Result<ReduceResult, TaskError> {
    let name = format!("reduce-{:05}", t.partition);
    counters::start_task();
    let work = WorkDir::open(if t.own_work_dir { &Files::Unconfined } else { &t.files }, &t.work_dir)?;
    let writer = AtomicFile::create_public(&work, &storage::reduce_file_name(t.partition, t.attempt))?;
    let output_path = writer.path().to_path_buf();
    let mut writer = JobOutput::new(writer, t.output_format).map_err(super::files::write_error(&output_path))?;
    let shuffle_err = |e| match e {
        ShuffleError::Input { input, error } => input_error(source, &t.inputs[input], error),
        ShuffleError::Unsorted { input } => {
            input_error(source, &t.inputs[input], FormatError::Corrupt { offset: 0, what: "records not sorted by key" })
        }
        e => shuffle_error(e, &name, &output_path, &t.work_dir),
    };
    let mut open = |n: usize| -> std::io::Result<Box<dyn Read + Send>> { source.open(&t.inputs[n]) };
    let mut scratch = TempFiles(&work.dir);
    let level = merge_passes::<J::Key, J::Value, _, _>(
        t.inputs.len(),
        &mut open,
        t.fanin,
        t.compression,
        &mut scratch,
        &t.cancelled,
    )
    .map_err(shuffle_err)?;
    let mut merge = ReduceMerge::<J::Key, J::Value>::open(level, &mut open).map_err(shuffle_err)?;
    let mut out = writer.output();
    let (mut keys, mut values_read) = (0u64, 0u64);
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<Result<(), BoxError>, ShuffleError> {
        if let Err(e) = job.reduce_setup() {
            return Ok(Err(e));
        }
        let groups = merge.for_each_group_by(
            |a, b| job.group_eq(a, b),
            |key, values| {
                if t.cancelled.load(Ordering::Relaxed) {
                    return Err(BoxError::from(TaskError::Cancelled));
                }
                keys += 1;
                job.reduce(key, &mut Counted { values, read: &mut values_read }, &mut out)
            },
        )?;
        if groups.is_err() {
            return Ok(groups);
        }
        Ok(job.reduce_finish(&mut out))
    }));
    let at = || format!("{name}, key #{keys}");
    match result {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) if e.is::<TaskError>() => return Err(TaskError::Cancelled),
        Ok(Ok(Err(e))) => return Err(TaskError::User { at: at(), message: e.to_string() }),
        Ok(Err(e)) => return Err(shuffle_err(e)),
        Err(payload) => return Err(TaskError::Panic { at: at(), message: panic_message(&*payload) }),
    }
    let records = out.records();
    // Checked before the output is committed: an attempt past the limits leaves nothing.
    let mut counters = counters::end_task().map_err(|message| TaskError::User { at: name.clone(), message })?;
    let (mut writer, _) = writer.finish().map_err(super::files::write_error(&output_path))?;
    writer.flush().map_err(super::files::write_error(&output_path))?;
    let (path, bytes) = writer.persist()?;
    for (counter, n) in [
        (builtin::REDUCE_INPUT_GROUPS, keys),
        (builtin::REDUCE_INPUT_RECORDS, values_read),
        (builtin::REDUCE_SHUFFLE_BYTES, t.inputs.iter().map(|i| i.range.bytes).fold(0, u64::saturating_add)),
        (builtin::REDUCE_OUTPUT_RECORDS, records),
        (builtin::REDUCE_OUTPUT_BYTES, bytes),
    ] {
        counters.insert(counter.to_string(), n);
    }
    Ok(ReduceResult { path: path.to_string_lossy().into_owned(), records, bytes, counters })
}

/// A map output that could not be read (missing, short, corrupt): lost, so its map must
/// run again. Named by the source.
fn input_error(source: &dyn ShuffleSource, input: &ReduceInput, error: FormatError) -> TaskError {
    let path = PathBuf::from(source.describe(input));
    TaskError::MapOutputLost { map: input.range.map, attempt: input.range.attempt.0, path, error }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shuffle::SharedFs;
    use crate::worker::testing::{Count, whole};
    use mapreduce_core::shuffle::record::RecordWriter;
    use std::fs::File;

    fn task(dir: &std::path::Path, inputs: Vec<ReduceInput>, fanin: usize) -> ReduceTask {
        ReduceTask {
            attempt: 1,
            partition: 0,
            inputs,
            work_dir: dir.into(),
            own_work_dir: false,
            fanin,
            compression: Compression::Lz4,
            cancelled: Arc::default(),
            files: Files::Unconfined,
            output_format: OutputFormat::Text,
        }
    }

    #[test]
    fn a_reduce_over_more_inputs_than_its_fanin_merges_in_passes() {
        let dir = tempfile::tempdir().unwrap();
        let job = Count { combine: true };
        let mut inputs = Vec::new();
        for i in 0..9u64 {
            let path = dir.path().join(format!("m{i}"));
            let mut w = RecordWriter::new(File::create(&path).unwrap()).unwrap();
            for k in 0..50u64 {
                w.write(&format!("k{:03}", k * 9 + i % 3), &1u64).unwrap();
            }
            w.finish().unwrap();
            inputs.push(whole(&path));
        }
        let out = run_reduce(&job, &task(dir.path(), inputs, 2), &SharedFs::default()).unwrap();
        let text = std::fs::read_to_string(&out.path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(out.records, lines.len() as u64);
        assert!(lines.windows(2).all(|w| w[0] < w[1]), "sorted, one line per key");
        let total: u64 = lines.iter().map(|l| l.split('\t').nth(1).unwrap().parse::<u64>().unwrap()).sum();
        assert_eq!(total, 9 * 50);
    }

    #[test]
    fn a_corrupt_map_output_fails_the_reduce_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m-corrupt");
        let mut w = RecordWriter::new(File::create(&path).unwrap()).unwrap();
        w.write("key", &1u64).unwrap();
        w.finish().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        for fanin in [10, 2] {
            let inputs = vec![whole(&path), whole(&path), whole(&path)];
            let err = run_reduce(&Count { combine: true }, &task(dir.path(), inputs, fanin), &SharedFs::default())
                .unwrap_err();
            assert!(matches!(err, TaskError::MapOutputLost { map: 0, attempt: 0, .. }), "{err:?}");
            assert!(err.to_string().contains("m-corrupt"), "fan-in {fanin}: {err}");
        }
        // No attempt file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
