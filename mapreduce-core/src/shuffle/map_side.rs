//! The map side of one attempt: the combining buffer, when it spills, and the layout of
//! the attempt's output.
//!
//! An attempt's output is one byte stream (one file) of *runs*, each run one sorted
//! record stream per partition in partition order, back to back (as Hadoop writes map
//! output). Its shape depends on what the buffer did:
//!
//! - it never filled: one run, the drained buffer;
//! - it filled and combined something: each fill is *spilled* to a scratch file, and at
//!   the end the spills are merged partition by partition, combining equal keys again,
//!   into one run;
//! - it filled without combining anything (a sort, say): each fill is written straight
//!   into the output as one more run, and the reduce side merges the runs; merging them
//!   here would read and write every record once more for nothing.

use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::sync::atomic::AtomicBool;

use super::buffer::{Drained, MapBuffer};
use super::merge::{Merge, MergeError};
use super::record::{Compression, FormatError, RecordReader, RecordWriter};
use super::{Scratch, ShuffleError, ensure_not_cancelled};
use crate::job::{BoxError, Emitter, Mapper, Position, Record, Reducer};

/// Buffer of a reader of one spill's range while spills are merged.
const SPILL_READ_BUFFER: usize = 64 << 10;

/// What shapes a map attempt's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSettings {
    /// Partitions (reduce tasks) of the job.
    pub reducers: u32,
    /// The buffer spills once its estimate passes this many bytes.
    pub sort_buffer: u64,
    /// How the output and the spills store their blocks.
    pub compression: Compression,
}

/// One partition's sorted record stream in an attempt's output: `bytes` bytes at
/// `offset`, holding `records` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRange {
    /// The partition it feeds.
    pub partition: u32,
    /// Where it starts in the output.
    pub offset: u64,
    /// Its size.
    pub bytes: u64,
    /// Records in it.
    pub records: u64,
}

/// One spill of the buffer: a scratch file of one record stream per partition, back to
/// back, and each stream's `(offset, bytes)`. One file per spill, not per partition, so
/// the open files do not grow with the reducers.
struct Spill<F> {
    file: F,
    ranges: Vec<(u64, u64)>,
}

/// What the attempt did with a full buffer so far.
enum Spilled<F> {
    /// Nothing yet: the buffer never filled.
    Nothing,
    /// Spills to merge (combining) at the end.
    Spills(Vec<Spill<F>>),
    /// Runs written straight into the output (the buffer combined nothing).
    Runs,
}

/// The map side of one attempt: map blocks of input into it with [`MapSide::map_block`],
/// call [`MapSide::after_block`] after each, then [`MapSide::finish`] for the output.
pub struct MapSide<J: Mapper, S: Scratch, W: Write> {
    buffer: MapBuffer<J::Key, J::Value>,
    settings: MapSettings,
    scratch: S,
    output: Runs<W>,
    spilled: Spilled<S::File>,
    /// Records written to spill files so far.
    spill_records: u64,
}

impl<J: Reducer, S: Scratch, W: Write> MapSide<J, S, W> {
    /// A map side writing the attempt's output into `output`, spilling into `scratch`.
    pub fn new(settings: MapSettings, scratch: S, output: W) -> Self {
        MapSide {
            buffer: MapBuffer::with_budget(settings.sort_buffer),
            settings,
            scratch,
            output: Runs { out: output, ranges: Vec::new(), offset: 0 },
            spilled: Spilled::Nothing,
            spill_records: 0,
        }
    }

    /// Runs the job's [`Mapper::map_lines`] on `text` (whole lines, the first at
    /// `position`), into the buffer. This is user code: the caller guards it against
    /// panics.
    pub fn map_block(&mut self, job: &J, text: &str, position: Position<'_>) -> Result<(), BoxError> {
        let combine = |k: &J::Key, acc: &mut J::Value, v| job.combine(k, acc, v);
        // The job's combiner called directly for each record of a batch of string keys.
        let flush = |b: &mut MapBuffer<J::Key, J::Value>| b.flush(combine);
        job.map_lines(text, &mut Emitter::buffered_in(&mut self.buffer, &combine, &flush, text, position))
    }

    /// Runs the job's [`Mapper::map_record`] on one typed record at `position`, into the
    /// buffer. User code, like [`MapSide::map_block`].
    pub fn map_record(&mut self, job: &J, record: Record<'_>, position: Position<'_>) -> Result<(), BoxError> {
        let combine = |k: &J::Key, acc: &mut J::Value, v| job.combine(k, acc, v);
        let flush = |b: &mut MapBuffer<J::Key, J::Value>| b.flush(combine);
        job.map_record(record, &mut Emitter::buffered_in(&mut self.buffer, &combine, &flush, "", position))
    }

    /// Runs the job's [`Mapper::map_file`] on one whole file at `position`. User code.
    pub fn map_file(&mut self, job: &J, bytes: &[u8], position: Position<'_>) -> Result<(), BoxError> {
        let combine = |k: &J::Key, acc: &mut J::Value, v| job.combine(k, acc, v);
        let flush = |b: &mut MapBuffer<J::Key, J::Value>| b.flush(combine);
        let mut emit = Emitter::buffered_in(&mut self.buffer, &combine, &flush, "", position);
        job.map_file(position.path(), bytes, &mut emit)
    }

    /// Runs the job's [`Mapper::map_finish`] after the last record. User code.
    pub fn map_finish(&mut self, job: &J) -> Result<(), BoxError> {
        let combine = |k: &J::Key, acc: &mut J::Value, v| job.combine(k, acc, v);
        let flush = |b: &mut MapBuffer<J::Key, J::Value>| b.flush(combine);
        job.map_finish(&mut Emitter::buffered_in(&mut self.buffer, &combine, &flush, "", Position::new("", 0, None)))
    }

    /// Spills the buffer, or writes it as a run of the output, once it has passed its
    /// budget.
    pub fn after_block(&mut self, job: &J, cancelled: &AtomicBool) -> Result<(), ShuffleError> {
        if self.buffer.bytes() < self.settings.sort_buffer {
            return Ok(());
        }
        match &mut self.spilled {
            Spilled::Runs => self.write_run(job, cancelled),
            Spilled::Nothing if !self.buffer.combines() => {
                self.spilled = Spilled::Runs;
                self.write_run(job, cancelled)
            }
            Spilled::Nothing => {
                let spill = self.spill(job, cancelled)?;
                self.spilled = Spilled::Spills(vec![spill]);
                Ok(())
            }
            Spilled::Spills(_) => {
                let spill = self.spill(job, cancelled)?;
                if let Spilled::Spills(spills) = &mut self.spilled {
                    spills.push(spill);
                }
                Ok(())
            }
        }
    }

    /// Writes what is left and returns the output with its streams: runs of one range per
    /// partition, in partition order.
    pub fn finish(mut self, job: &J, cancelled: &AtomicBool) -> Result<(W, Vec<StreamRange>), ShuffleError> {
        match std::mem::replace(&mut self.spilled, Spilled::Nothing) {
            Spilled::Nothing => self.write_run(job, cancelled)?,
            Spilled::Runs => {
                if !self.buffer.is_empty() {
                    self.write_run(job, cancelled)?;
                }
            }
            Spilled::Spills(mut spills) => {
                if !self.buffer.is_empty() {
                    spills.push(self.spill(job, cancelled)?);
                }
                self.merge_spills(job, spills, cancelled)?;
            }
        }
        Ok((self.output.out, self.output.ranges))
    }

    /// Records mapped so far that the buffer took in.
    pub fn records_in(&self) -> u64 {
        self.buffer.records_in()
    }

    /// Records written to spill files so far (not counting the output's own).
    pub fn spill_records(&self) -> u64 {
        self.spill_records
    }

    /// Drains the buffer as one more run of the output.
    fn write_run(&mut self, job: &J, cancelled: &AtomicBool) -> Result<(), ShuffleError> {
        let started = std::time::Instant::now();
        let sorted = drain(job, &mut self.buffer, self.settings.reducers)?;
        let (records, drained) = (sorted.len(), started.elapsed());
        let mut sorted = sorted.peekable();
        self.output.append(self.settings, cancelled, |p, w| {
            while let Some((_, k, v)) = sorted.next_if(|r| r.0 == p) {
                w.write(&k, &v).map_err(ShuffleError::Output)?;
            }
            Ok(())
        })?;
        tracing::debug!(
            runs = self.output.ranges.len() / self.settings.reducers as usize,
            records,
            drain_ms = drained.as_millis() as u64,
            write_ms = (started.elapsed() - drained).as_millis() as u64,
            "wrote a run of the sort buffer"
        );
        Ok(())
    }

    /// Drains the buffer into a new scratch file.
    fn spill(&mut self, job: &J, cancelled: &AtomicBool) -> Result<Spill<S::File>, ShuffleError> {
        let mut records = drain(job, &mut self.buffer, self.settings.reducers)?.peekable();
        let scratch_err = |e| ShuffleError::Scratch(FormatError::Io(e));
        let mut file = std::io::BufWriter::with_capacity(256 << 10, self.scratch.create().map_err(scratch_err)?);
        let ranges = write_partitions(&mut file, self.settings, cancelled, ShuffleError::Scratch, |p, w| {
            while let Some((_, k, v)) = records.next_if(|r| r.0 == p) {
                w.write(&k, &v).map_err(ShuffleError::Scratch)?;
            }
            Ok(())
        })?;
        let file = file.into_inner().map_err(|e| scratch_err(e.into_error()))?;
        self.spill_records += ranges.iter().map(|r| r.2).sum::<u64>();
        tracing::debug!(spill_bytes = ranges.iter().map(|r| r.1).sum::<u64>(), "spilled sort buffer");
        Ok(Spill { file, ranges: ranges.into_iter().map(|(offset, bytes, _)| (offset, bytes)).collect() })
    }

    /// Merges the spills partition by partition, combining equal keys, into one run.
    fn merge_spills(
        &mut self,
        job: &J,
        mut spills: Vec<Spill<S::File>>,
        cancelled: &AtomicBool,
    ) -> Result<(), ShuffleError> {
        let spill_err = |e: MergeError<FormatError>| match e {
            MergeError::Source { error, .. } => ShuffleError::Scratch(error),
            MergeError::Unsorted { .. } => {
                ShuffleError::Scratch(FormatError::Corrupt { offset: 0, what: "spill not sorted" })
            }
        };
        self.output.append(self.settings, cancelled, |p, w| {
            let mut readers: Vec<RecordReader<_, J::Key, J::Value>> = Vec::with_capacity(spills.len());
            for s in &mut spills {
                let (offset, bytes) = s.ranges[p as usize];
                s.file.seek(SeekFrom::Start(offset)).map_err(|e| ShuffleError::Scratch(FormatError::Io(e)))?;
                readers.push(RecordReader::new(BufReader::with_capacity(SPILL_READ_BUFFER, (&mut s.file).take(bytes))));
            }
            let mut merge = Merge::new(readers).map_err(spill_err)?;
            let mut current: Option<(J::Key, J::Value)> = None;
            while let Some((k, v)) = merge.next().map_err(spill_err)? {
                match &mut current {
                    Some((ck, acc)) if *ck == k => {
                        if let Some(v) = job.combine(ck, acc, v) {
                            w.write(ck, acc).map_err(ShuffleError::Output)?;
                            *acc = v;
                        }
                    }
                    _ => {
                        if let Some((ck, acc)) = current.replace((k, v)) {
                            w.write(&ck, &acc).map_err(ShuffleError::Output)?;
                        }
                    }
                }
            }
            if let Some((ck, acc)) = current {
                w.write(&ck, &acc).map_err(ShuffleError::Output)?;
            }
            Ok(())
        })
    }
}

/// The attempt's output while it is written: the streams so far, run after run.
struct Runs<W> {
    out: W,
    ranges: Vec<StreamRange>,
    /// Bytes written so far.
    offset: u64,
}

impl<W: Write> Runs<W> {
    /// Appends one run: `each` fills partition `p`'s stream, for every partition in order.
    fn append(
        &mut self,
        settings: MapSettings,
        cancelled: &AtomicBool,
        each: impl FnMut(u32, &mut RecordWriter<&mut W>) -> Result<(), ShuffleError>,
    ) -> Result<(), ShuffleError> {
        let streams = write_partitions(&mut self.out, settings, cancelled, ShuffleError::Output, each)?;
        for (p, (offset, bytes, records)) in streams.into_iter().enumerate() {
            let offset = self.offset + offset;
            self.ranges.push(StreamRange { partition: p as u32, offset, bytes, records });
        }
        self.offset = self.ranges.last().map_or(0, |r| r.offset + r.bytes);
        Ok(())
    }
}

/// Writes one record stream per partition, back to back, into `out`; `each` fills
/// partition `p`'s stream. Returns each stream's `(offset, bytes, records)` from where
/// `out` stood.
fn write_partitions<W: Write>(
    out: &mut W,
    settings: MapSettings,
    cancelled: &AtomicBool,
    err: fn(FormatError) -> ShuffleError,
    mut each: impl FnMut(u32, &mut RecordWriter<&mut W>) -> Result<(), ShuffleError>,
) -> Result<Vec<(u64, u64, u64)>, ShuffleError> {
    let mut ranges = Vec::with_capacity(settings.reducers as usize);
    let mut offset = 0;
    for p in 0..settings.reducers {
        ensure_not_cancelled(cancelled)?;
        let mut w = RecordWriter::with_compression(&mut *out, settings.compression).map_err(|e| err(e.into()))?;
        each(p, &mut w)?;
        let (_, records, bytes) = w.finish().map_err(|e| err(e.into()))?;
        ranges.push((offset, bytes, records));
        offset += bytes;
    }
    Ok(ranges)
}

/// Empties the buffer sorted by (partition, key), checking the partitioner's answers.
fn drain<'b, J: Reducer>(
    job: &J,
    buffer: &'b mut MapBuffer<J::Key, J::Value>,
    reducers: u32,
) -> Result<Drained<'b, J::Key, J::Value>, ShuffleError> {
    let mut bad = None;
    let combine = |k: &J::Key, acc: &mut J::Value, v| job.combine(k, acc, v);
    let sorted = buffer.drain_sorted_iter(combine, |k| {
        let p = job.partition(k, reducers);
        if p >= reducers {
            bad = Some(p);
        }
        p
    });
    match bad {
        Some(partition) => Err(ShuffleError::BadPartition { partition, reducers }),
        None => Ok(sorted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Output;
    use crate::shuffle::MemScratch;
    use std::io::Cursor;

    /// Counts words; `combine` switches the combiner off (a job whose buffer declines).
    struct Count {
        combine: bool,
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
        fn reduce(&self, _: &String, _: &mut dyn Iterator<Item = u64>, _: &mut Output<'_>) -> Result<(), BoxError> {
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

    fn map(job: &Count, text: &str, sort_buffer: u64, compression: Compression) -> (Vec<u8>, Vec<StreamRange>) {
        let settings = MapSettings { reducers: 3, sort_buffer, compression };
        let mut side = MapSide::<Count, _, _>::new(settings, MemScratch, Vec::new());
        let no = AtomicBool::new(false);
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        for block in lines.chunks(200) {
            side.map_block(job, &block.concat(), Position::new("", 0, None)).unwrap();
            side.after_block(job, &no).unwrap();
        }
        side.finish(job, &no).unwrap()
    }

    fn read(out: &[u8], r: &StreamRange) -> Vec<(String, u64)> {
        let bytes = &out[r.offset as usize..(r.offset + r.bytes) as usize];
        RecordReader::new(Cursor::new(bytes)).collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn spilled_output_equals_the_in_memory_output_in_every_shape() {
        let text: String = (0..20_000).map(|i| format!("w{:03} x{:03} common z\n", i % 997, i % 13)).collect();
        for (combine, compression) in [(true, Compression::None), (true, Compression::Lz4), (false, Compression::Lz4)] {
            let job = Count { combine };
            let (big_out, big) = map(&job, &text, 1 << 30, compression);
            let (small_out, small) = map(&job, &text, 64 << 10, compression);
            assert_eq!(big.len(), 3, "one run when the buffer never fills");
            match combine {
                true => assert_eq!(small.len(), 3, "combining spills are merged into one run"),
                false => assert!(small.len() > 3 && small.len() % 3 == 0, "{} ranges: one run per fill", small.len()),
            }
            for ranges in [&big, &small] {
                assert!(ranges.iter().enumerate().all(|(i, r)| r.partition as usize == i % 3));
                assert!(ranges.windows(2).all(|w| w[1].offset == w[0].offset + w[0].bytes), "back to back");
            }
            assert_eq!(small.last().map(|r| r.offset + r.bytes), Some(small_out.len() as u64));
            for (p, whole) in big.iter().enumerate() {
                let mut want = read(&big_out, whole);
                assert!(want.windows(2).all(|w| w[0].0 <= w[1].0), "sorted");
                assert_eq!(want.len() as u64, whole.records);
                let runs: Vec<_> =
                    small.iter().filter(|r| r.partition == p as u32).map(|r| read(&small_out, r)).collect();
                assert!(runs.iter().all(|r| r.windows(2).all(|w| w[0].0 <= w[1].0)), "every run sorted");
                let mut got = runs.concat();
                if combine {
                    assert_eq!(got, want, "combined spills merge to the same records");
                } else {
                    got.sort();
                    want.sort();
                    assert_eq!(got, want);
                }
            }
            let keys: u64 = big.iter().map(|r| r.records).sum();
            assert_eq!(keys, if combine { 997 + 13 + 2 } else { 80_000 });
        }
    }

    #[test]
    fn a_cancelled_attempt_stops_at_its_next_stream() {
        let job = Count { combine: true };
        let settings = MapSettings { reducers: 2, sort_buffer: 1 << 20, compression: Compression::None };
        let mut side = MapSide::<Count, _, _>::new(settings, MemScratch, Vec::new());
        side.map_block(&job, "a b c\n", Position::new("", 0, None)).unwrap();
        let err = side.finish(&job, &AtomicBool::new(true)).expect_err("cancelled");
        assert!(matches!(err, ShuffleError::Cancelled), "{err}");
    }

    #[test]
    fn a_partition_out_of_range_is_an_error_naming_it() {
        struct Bad;
        impl Mapper for Bad {
            type Key = String;
            type Value = u64;
            fn map(&self, line: &str, emit: &mut Emitter<'_, String, u64>) -> Result<(), BoxError> {
                emit.emit(line.to_string(), 1);
                Ok(())
            }
        }
        impl Reducer for Bad {
            fn reduce(&self, _: &String, _: &mut dyn Iterator<Item = u64>, _: &mut Output<'_>) -> Result<(), BoxError> {
                Ok(())
            }
            fn partition(&self, _: &String, reducers: u32) -> u32 {
                reducers
            }
        }
        let settings = MapSettings { reducers: 2, sort_buffer: 1 << 20, compression: Compression::None };
        let mut side = MapSide::<Bad, _, _>::new(settings, MemScratch, Vec::new());
        side.map_block(&Bad, "x\n", Position::new("", 0, None)).unwrap();
        let err = side.finish(&Bad, &AtomicBool::new(false)).expect_err("refused");
        assert_eq!(err.to_string(), "partitioner returned partition 2 for 2 reducers");
    }
}
