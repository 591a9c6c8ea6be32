//! A job and helpers for the worker's unit tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mapreduce_core::scheduler::{AttemptId, Location, MapOutputRange, ReduceInput};
use mapreduce_core::shard::Segment;
use mapreduce_core::shuffle::record::RecordReader;
use mapreduce_core::{BoxError, Compression, Emitter, Job, Mapper, Output, Reducer};
use serde::{Deserialize, Serialize};

use super::map::{MapTask, run_map};
use crate::confine::Files;
use crate::shuffle::{SharedFs, ShuffleSource};

/// Counts words; `combine` is switchable to test the no-combiner path.
#[derive(Serialize, Deserialize)]
pub(crate) struct Count {
    pub(crate) combine: bool,
}

impl Mapper for Count {
    type Key = String;
    type Value = u64;
    fn map(&self, line: &str, emit: &mut Emitter<'_, String, u64>) -> Result<(), BoxError> {
        line.split_whitespace().for_each(|w| emit.emit(w.to_string(), 1));
        Ok(())
    }
}

impl Reducer for Count {
    fn reduce(&self, k: &String, vs: &mut dyn Iterator<Item = u64>, out: &mut Output<'_>) -> Result<(), BoxError> {
        out.emit(k, vs.sum::<u64>())?;
        Ok(())
    }
    fn combine(&self, _: &String, acc: &mut u64, v: u64) -> Option<u64> {
        if self.combine {
            *acc += v;
            None
        } else {
            Some(v)
        }
    }
}

impl Job for Count {
    const NAME: &'static str = "count";
}

/// A file of `lines` lines of three words, 997 + 1 distinct (the `i % 13` words are
/// among the `i % 997` ones).
pub(crate) fn corpus(dir: &Path, lines: usize) -> PathBuf {
    let path = dir.join("in.txt");
    let text: String = (0..lines).map(|i| format!("w{} w{} common\n", i % 997, i % 13)).collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// Maps the whole of `input` as one attempt (numbered by its sort buffer, so that two
/// calls in one work directory do not collide).
pub(crate) fn map_all(
    job: &Count,
    input: &Path,
    work: &Path,
    sort_buffer: u64,
    reducers: u32,
    compression: Compression,
) -> Vec<ReduceInput> {
    let len = std::fs::metadata(input).unwrap().len();
    let seg = Segment { path: input.to_string_lossy().into(), start: 0, end: len };
    let t = MapTask {
        task: 0,
        attempt: sort_buffer,
        segments: vec![seg],
        work_dir: work.into(),
        own_work_dir: false,
        reducers,
        sort_buffer,
        compression,
        cancelled: Arc::default(),
        files: Files::Unconfined,
        max_line: 1 << 20,
        skip_long_lines: false,
        input_format: mapreduce_core::InputFormat::Text,
        invalid_utf8: mapreduce_core::InvalidUtf8::Replace,
        output_format: mapreduce_core::OutputFormat::Text,
        input: super::input::Input::Files(vec![len]),
    };
    let result = run_map(job, &t).unwrap();
    let location = Location::new(result.location);
    result
        .streams
        .into_iter()
        .map(|s| ReduceInput {
            location: location.clone(),
            range: MapOutputRange {
                map: 0,
                attempt: AttemptId(sort_buffer),
                partition: s.partition,
                offset: s.offset,
                bytes: s.bytes,
                records: s.records,
            },
        })
        .collect()
}

/// The records of one partition's range.
pub(crate) fn read(f: &ReduceInput) -> Vec<(String, u64)> {
    let reader = SharedFs::default().open(f).unwrap();
    RecordReader::new(std::io::BufReader::new(reader)).collect::<Result<_, _>>().unwrap()
}

/// A partition range covering the whole of a record file.
pub(crate) fn whole(path: &Path) -> ReduceInput {
    let bytes = std::fs::metadata(path).unwrap().len();
    let range = MapOutputRange { map: 0, attempt: AttemptId(0), partition: 0, offset: 0, bytes, records: 0 };
    ReduceInput { location: Location::new(path.to_string_lossy()), range }
}
