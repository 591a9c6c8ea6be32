//! Reading a map attempt's shard: from files or the master's stream, as lines of text
//! (decompressed by extension), typed records or whole files, piece by piece with each
//! piece's position.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use mapreduce_core::counters::{Counters, builtin};
use mapreduce_core::shard::{BadUtf8, Block, Codec, LineReader, LineTooLong, Segment};
use mapreduce_core::shuffle::map_side::StreamRange;
use mapreduce_core::shuffle::record::RecordReader;
use mapreduce_core::{InputFormat, Position, Record};
use mapreduce_rpc::pb;
use tokio::sync::mpsc;

use super::map::{MAP_BLOCK, MapResult, MapTask, ensure_not_cancelled};
use crate::confine::Refused;
use crate::error::TaskError;

/// Where a map attempt reads its shard.
#[derive(Debug)]
pub(crate) enum Input {
    /// Each segment's file, beneath the data roots; per segment, the file's length as the
    /// master listed it (0: not said). A file absent, outside the roots or of another
    /// length is [`TaskError::InputUnseen`].
    Files(Vec<u64>),
    /// The bytes the master sends (`MapStream`).
    Streamed(std::sync::Mutex<Streamed>),
}

/// A shard's bytes as the master sends them: chunks of each segment in order, as many
/// bytes of each as the request said.
#[derive(Debug)]
pub(crate) struct Streamed {
    chunks: mpsc::Receiver<io::Result<pb::InputChunk>>,
    /// Per segment, the bytes to come.
    sizes: Vec<u64>,
    /// The chunk being read, and how much of it was.
    chunk: Vec<u8>,
    at: usize,
}

impl Streamed {
    pub(crate) fn new(chunks: mpsc::Receiver<io::Result<pb::InputChunk>>, sizes: Vec<u64>) -> Self {
        Streamed { chunks, sizes, chunk: Vec::new(), at: 0 }
    }

    /// Checks that nothing follows the last segment's bytes.
    fn finish(&mut self) -> io::Result<()> {
        if self.at < self.chunk.len() || self.chunks.blocking_recv().is_some() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the master sent more bytes than it said"));
        }
        Ok(())
    }
}

/// The reader of segment `segment` of a [`Streamed`] shard.
struct SegmentReader<'a> {
    input: &'a mut Streamed,
    segment: u32,
    left: u64,
}

impl Read for SegmentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let input = &mut *self.input;
        while input.at == input.chunk.len() {
            let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
            match input.chunks.blocking_recv() {
                None => {
                    let what =
                        format!("the master's stream ended {} bytes short of segment {}", self.left, self.segment);
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, what));
                }
                Some(Err(e)) => return Err(e),
                Some(Ok(chunk)) if chunk.segment != self.segment => {
                    return Err(bad(format!(
                        "bytes of segment {} while reading segment {}",
                        chunk.segment, self.segment
                    )));
                }
                Some(Ok(chunk)) if chunk.data.len() as u64 > self.left => {
                    return Err(bad(format!("more bytes of segment {} than the master said", self.segment)));
                }
                Some(Ok(chunk)) => (input.chunk, input.at) = (chunk.data, 0),
            }
        }
        let n = buf.len().min(input.chunk.len() - input.at).min(usize::try_from(self.left).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&input.chunk[input.at..input.at + n]);
        input.at += n;
        self.left -= n as u64;
        Ok(n)
    }
}

/// What a map reads next: a block of whole lines, or one typed record, and where it lies.
pub(super) enum Piece<'a> {
    Lines(&'a Block<'a>, Position<'a>),
    Record(Record<'a>, Position<'a>),
    File(&'a [u8], Position<'a>),
}

/// What an attempt read.
pub(super) struct ReadStats {
    pub(super) records: u64,
    /// Lines skipped for their length.
    skipped: u64,
    /// Lines skipped for bytes that are not UTF-8.
    skipped_utf8: u64,
}

impl ReadStats {
    /// The attempt's result: its output at `path` with `streams`, what it read, and
    /// `counters` with the input's built-in ones added.
    pub(super) fn result(
        &self,
        t: &MapTask,
        path: &Path,
        streams: Vec<StreamRange>,
        mut counters: Counters,
    ) -> MapResult {
        self.count(t, &mut counters);
        MapResult {
            location: path.to_string_lossy().into_owned(),
            streams,
            input_records: self.records,
            skipped_records: self.skipped + self.skipped_utf8,
            counters,
        }
    }

    /// Puts the input's built-in counters in `counters`.
    fn count(&self, t: &MapTask, counters: &mut Counters) {
        let bytes = t.segments.iter().map(|s| s.end.saturating_sub(s.start)).fold(0, u64::saturating_add);
        counters.insert(builtin::MAP_INPUT_RECORDS.to_string(), self.records);
        counters.insert(builtin::MAP_INPUT_BYTES.to_string(), bytes);
        if self.skipped + self.skipped_utf8 > 0 {
            counters.insert(builtin::MAP_SKIPPED_RECORDS.to_string(), self.skipped + self.skipped_utf8);
        }
    }
}

/// Reads the attempt's shard, piece by piece, into `f`: lines of text (decompressed when
/// the file's name says so), or the records of record files, each with its position.
pub(super) fn read_input(
    t: &MapTask,
    f: &mut dyn FnMut(Piece<'_>) -> Result<(), TaskError>,
) -> Result<ReadStats, TaskError> {
    let mut stats = ReadStats { records: 0, skipped: 0, skipped_utf8: 0 };
    let mut streamed = match &t.input {
        Input::Streamed(s) => Some(s.lock().unwrap_or_else(|e| e.into_inner())),
        Input::Files(_) => None,
    };
    for (i, seg) in t.segments.iter().enumerate() {
        let path = Path::new(&seg.path);
        let input_err = |source| TaskError::Input { path: path.to_path_buf(), error: source };
        let source: Box<dyn Read + '_> = match (&t.input, streamed.as_deref_mut()) {
            (_, Some(streamed)) => {
                let left = streamed.sizes.get(i).copied().unwrap_or(0);
                Box::new(SegmentReader { input: streamed, segment: i as u32, left })
            }
            (Input::Files(listed), None) => {
                let unseen = |why: String| TaskError::InputUnseen { path: seg.path.clone(), why };
                let mut file = match t.files.open_regular(path) {
                    Ok(file) => file,
                    Err(Refused::Io(e)) if e.kind() == io::ErrorKind::NotFound => return Err(unseen("absent".into())),
                    Err(Refused::Outside) => return Err(unseen(format!("outside {}", t.files.describe_roots()))),
                    Err(r) => return Err(r.into_task_error(path, &t.files, input_err)),
                };
                let len = file.metadata().map_err(input_err)?.len();
                let listed = listed.get(i).copied().unwrap_or(0);
                if listed != 0 && len != listed {
                    return Err(unseen(format!("{len} bytes here, {listed} as the master listed it")));
                }
                if seg.end > len {
                    return Err(TaskError::InputShrank {
                        path: path.to_path_buf(),
                        len,
                        start: seg.start,
                        end: seg.end,
                    });
                }
                file.seek(SeekFrom::Start(seg.start.saturating_sub(1))).map_err(input_err)?;
                Box::new(file)
            }
            (Input::Streamed(_), None) => unreachable!("a streamed input is locked above"),
        };
        let whole = || {
            if seg.start != 0 {
                return Err(TaskError::InvalidRequest(format!(
                    "{} cannot be split, but the segment starts at byte {}",
                    seg.path, seg.start
                )));
            }
            Ok(())
        };
        if t.input_format == InputFormat::Records {
            whole()?;
            read_records(t, &seg.path, source, &mut stats, f)?;
            continue;
        }
        if t.input_format == InputFormat::WholeFiles {
            whole()?;
            let mut bytes = Vec::new();
            source.take(t.max_line as u64 + 1).read_to_end(&mut bytes).map_err(input_err)?;
            if bytes.len() > t.max_line {
                return Err(TaskError::LineTooLong { at: format!("{} (a whole file)", seg.path), limit: t.max_line });
            }
            ensure_not_cancelled(&t.cancelled)?;
            f(Piece::File(&bytes, Position::new(&seg.path, 0, Some(1))))?;
            stats.records += 1;
            continue;
        }
        let codec = Codec::of(&seg.path);
        let source: Box<dyn Read + '_> = match codec {
            None => source,
            Some(codec) => {
                whole()?;
                let source = io::BufReader::with_capacity(256 << 10, source.take(seg.end));
                match codec {
                    Codec::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(source)),
                    Codec::Zstd => Box::new(
                        ruzstd::decoding::StreamingDecoder::new(source)
                            .map_err(|e| input_err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?,
                    ),
                }
            }
        };
        // A compressed file is read whole: its segment is all of its decompressed bytes.
        read_lines(t, seg, source, codec.is_some(), &mut stats, f)?;
    }
    if let Some(streamed) = streamed.as_deref_mut() {
        let path = t.segments.last().map_or_else(Default::default, |s| PathBuf::from(&s.path));
        streamed.finish().map_err(|error| TaskError::Input { path, error })?;
    }
    Ok(stats)
}

/// The lines of one segment, a block at a time (all of a compressed file's lines).
fn read_lines(
    t: &MapTask,
    seg: &Segment,
    source: Box<dyn Read + '_>,
    compressed: bool,
    stats: &mut ReadStats,
    f: &mut dyn FnMut(Piece<'_>) -> Result<(), TaskError>,
) -> Result<(), TaskError> {
    let (start, end) = if compressed { (0, u64::MAX) } else { (seg.start, seg.end) };
    let mut reader = LineReader::with_block_size(source, start, end, MAP_BLOCK)
        .with_max_line(t.max_line, t.skip_long_lines)
        .with_invalid_utf8(t.invalid_utf8);
    // Line numbers are known when the segment starts its file.
    let known = start == 0;
    let mut lines = 0u64;
    loop {
        let block = match reader.next_block() {
            Ok(Some(block)) => block,
            Ok(None) => break,
            Err(e) => return Err(read_error(&seg.path, &e, known.then(|| 1 + lines + reader.skipped_all()))),
        };
        ensure_not_cancelled(&t.cancelled)?;
        let n = line_count(block.text());
        let at = Position::new(&seg.path, block.offset(), known.then(|| 1 + lines + block.skipped_before()));
        f(Piece::Lines(&block, at))?;
        lines += n;
    }
    stats.records += lines;
    stats.skipped += reader.skipped();
    stats.skipped_utf8 += reader.skipped_utf8();
    Ok(())
}

/// The records of one record file.
fn read_records(
    t: &MapTask,
    path: &str,
    source: Box<dyn Read + '_>,
    stats: &mut ReadStats,
    f: &mut dyn FnMut(Piece<'_>) -> Result<(), TaskError>,
) -> Result<(), TaskError> {
    let bad = |error| TaskError::RecordInput { path: PathBuf::from(path), error };
    let mut reader = RecordReader::<_, (), ()>::new(io::BufReader::with_capacity(256 << 10, source));
    let mut n = 0u64;
    loop {
        if n.is_multiple_of(1024) {
            ensure_not_cancelled(&t.cancelled)?;
        }
        let Some(frame) = reader.next_frame().map_err(bad)? else { break };
        // A record's position: its index in the file, as its "line".
        f(Piece::Record(Record::new(frame), Position::new(path, n, Some(n + 1))))?;
        n += 1;
    }
    stats.records += n;
    Ok(())
}

/// An error reading `path`'s lines, naming the line (`line`, when known).
fn read_error(path: &str, e: &io::Error, line: Option<u64>) -> TaskError {
    if let Some(&LineTooLong { offset, limit }) = LineTooLong::find(e) {
        return TaskError::LineTooLong { at: Position::new(path, offset, line).to_string(), limit };
    }
    if let Some(&BadUtf8 { offset }) = BadUtf8::find(e) {
        return TaskError::InvalidUtf8 { at: Position::new(path, offset, line).to_string() };
    }
    TaskError::Input { path: PathBuf::from(path), error: io::Error::new(e.kind(), e.to_string()) }
}

/// The lines of a block of whole lines.
pub(super) fn line_count(text: &str) -> u64 {
    // Sums of at most 255 bytes' worth fit a `u8`, and LLVM turns such a sum of compares
    // into vector compares and adds, 64 bytes a round: chunks of a multiple of that leave
    // no bytes for the scalar loop after it (chunks of 255 left it 63 bytes each).
    let newlines: u64 =
        text.as_bytes().chunks(192).map(|c| u64::from(c.iter().fold(0u8, |n, &b| n + u8::from(b == b'\n')))).sum();
    newlines + u64::from(!text.is_empty() && !text.ends_with('\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_count_counts_lines_with_and_without_a_final_newline() {
        let plain = |t: &str| t.split_inclusive('\n').count() as u64;
        for text in ["", "a", "\n", "a\n", "a\nb", "\n\n\n", "\u{10a}\n\u{a0a}\n\n", "x\n\x0b\x09\u{8a}\n"] {
            assert_eq!(line_count(text), plain(text), "{text:?}");
        }
        let long: String = (0..1000).map(|i| if i % 7 == 0 { '\n' } else { 'é' }).collect();
        assert_eq!(line_count(&long), plain(&long));
    }
}
