//! Where a reduce writes ([`Output`]), what a map of record files reads ([`Record`]), and
//! the job's input and output formats.

use std::fmt::{self, Display};
use std::io::Write;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::BoxError;
#[cfg(doc)]
use super::{JobSpec, Mapper};

/// Where a reduce function writes its results (and a map-only job's map output goes):
/// lines of text, or typed records, in the task's output file, as the job's
/// [`OutputFormat`] says.
pub struct Output<'a> {
    sink: OutputSink<'a>,
    records: u64,
    /// The record being written: formatted or encoded here, then written at once (one
    /// call into the writer a record, and no allocation).
    line: Vec<u8>,
}

/// Where an [`Output`] writes.
enum OutputSink<'a> {
    Text(&'a mut dyn Write),
    Records(&'a mut dyn RecordSink),
}

/// The record file an [`Output`] of [`OutputFormat::Records`] writes: one postcard value
/// per record.
pub trait RecordSink {
    /// Appends one record, already encoded with postcard.
    fn write_encoded(&mut self, record: &[u8]) -> std::io::Result<()>;
}

impl<'a> Output<'a> {
    /// An output that writes text lines into `writer` ([`OutputFormat::Text`]).
    pub fn new(writer: &'a mut dyn Write) -> Self {
        Output { sink: OutputSink::Text(writer), records: 0, line: Vec::new() }
    }

    /// An output that writes typed records into `sink` ([`OutputFormat::Records`]).
    pub fn records_into(sink: &'a mut dyn RecordSink) -> Self {
        Output { sink: OutputSink::Records(sink), records: 0, line: Vec::new() }
    }

    fn text(&mut self) -> std::io::Result<&mut dyn Write> {
        match &mut self.sink {
            OutputSink::Text(w) => Ok(&mut **w),
            OutputSink::Records(_) => Err(not_text()),
        }
    }

    /// Writes one record as the line `key<TAB>value` (text output).
    pub fn emit(&mut self, key: impl Display, value: impl Display) -> std::io::Result<()> {
        self.line.clear();
        if fmt::Write::write_fmt(&mut Line(&mut self.line), format_args!("{key}\t{value}\n")).is_err() {
            return Err(std::io::Error::other("a Display implementation returned an error"));
        }
        let OutputSink::Text(w) = &mut self.sink else { return Err(not_text()) };
        w.write_all(&self.line)?;
        self.records += 1;
        Ok(())
    }

    /// Writes one record as the given line; a newline is appended (text output).
    pub fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        let w = self.text()?;
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")?;
        self.records += 1;
        Ok(())
    }

    /// Writes one typed record, to be read by a next job with [`InputFormat::Records`]
    /// and [`Record::decode`]; with text output, writes it as a line of tab-separated
    /// text ([`crate::text`]).
    pub fn record<T: Serialize + ?Sized>(&mut self, record: &T) -> std::io::Result<()> {
        let bad = |e: &dyn Display| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string());
        self.line.clear();
        match &mut self.sink {
            OutputSink::Records(sink) => {
                self.line = postcard::to_extend(record, std::mem::take(&mut self.line)).map_err(|e| bad(&e))?;
                sink.write_encoded(&self.line)?;
            }
            OutputSink::Text(w) => {
                crate::text::write_text(record, &mut self.line).map_err(|e| bad(&e))?;
                self.line.push(b'\n');
                w.write_all(&self.line)?;
            }
        }
        self.records += 1;
        Ok(())
    }

    /// The number of records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Adds `n` to the counter `name` of this task (see [`crate::counters`]): the job's
    /// report sums it over the accepted attempt of every task, whatever the retries.
    pub fn count(&mut self, name: &str, n: u64) {
        crate::counters::add(name, n);
    }
}

/// A text write to an output of typed records.
fn not_text() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "this job writes typed records (OutputFormat::Records): write them with Output::record",
    )
}

/// The line buffer as a `fmt::Write`, for `Display` to write into.
struct Line<'a>(&'a mut Vec<u8>);

impl fmt::Write for Line<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl fmt::Debug for Output<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Output").field("records", &self.records).finish()
    }
}

/// One record of a typed record file, as [`Mapper::map_record`] gets it: decode it into
/// the type that was written.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    bytes: &'a [u8],
}

impl<'a> Record<'a> {
    /// A record of the postcard bytes `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Record { bytes }
    }

    /// Decodes the record as a `T`: the type the earlier job wrote (`(K, V)` for a pair).
    /// A record of another type is an error, never a wrong value, unless the two types
    /// encode alike.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, BoxError> {
        postcard::from_bytes(self.bytes)
            .map_err(|e| format!("record does not decode as {}: {e}", std::any::type_name::<T>()).into())
    }

    /// The record's postcard bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// How a job reads its inputs: [`JobSpec::input_format`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum InputFormat {
    /// Lines of text, to [`Mapper::map`] (the default). Files ending in `.gz` or `.zst`
    /// are decompressed (gzip, zstd) and never split: one task reads each.
    #[default]
    Text,
    /// Typed record files written by a job with [`OutputFormat::Records`], each record to
    /// [`Mapper::map_record`]. Files are not split.
    Records,
    /// Each file whole, its path and bytes to [`Mapper::map_file`] (Hadoop's
    /// `WholeFileInputFormat`): at most [`JobSpec::max_line_bytes`] bytes a file, since a
    /// task holds it in memory.
    WholeFiles,
}

/// How a job writes its output: [`JobSpec::output_format`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum OutputFormat {
    /// Lines of text (the default): [`Output::emit`]'s `key<TAB>value`, or any line.
    #[default]
    Text,
    /// Typed record files ([`Output::record`]) that a next job reads with
    /// [`InputFormat::Records`], with no text round trip.
    Records,
}

/// What a map does with input bytes that are not UTF-8: [`JobSpec::invalid_utf8`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum InvalidUtf8 {
    /// Replace them with U+FFFD (the default, like `String::from_utf8_lossy`).
    #[default]
    Replace,
    /// Fail the task, naming the line as `path:line`.
    Fail,
    /// Skip the line and count it (`map_skipped_records`).
    Skip,
}
