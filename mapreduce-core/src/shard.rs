//! Input sharding and the line reader.
//!
//! The inputs are seen as one concatenation of files, cut every `shard_size` bytes into
//! [`Shard`]s; a shard may span files. Cuts fall anywhere, and lines are given to shards by
//! where they *start*: a line belongs to the shard holding its first byte, and the reader of
//! that shard reads it to its end even past the cut. So every line is read exactly once,
//! whatever the cut points (this is Hadoop's `LineRecordReader` rule).

use std::borrow::Cow;
use std::io::{self, BufRead};

use serde::{Deserialize, Serialize};

/// One input file and its length in bytes, as listed when the job starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// The file's path (absolute, so that every worker resolves it the same way).
    pub path: String,
    /// Its length when listed.
    pub len: u64,
}

/// A byte range `[start, end)` of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The file's path.
    pub path: String,
    /// First byte of the range.
    pub start: u64,
    /// One past the last byte of the range.
    pub end: u64,
}

/// The input of one map task: consecutive segments, about `shard_size` bytes in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// The ranges, in input order.
    pub segments: Vec<Segment>,
}

impl Shard {
    /// Total bytes of the shard's ranges.
    pub fn len(&self) -> u64 {
        self.segments.iter().map(|s| s.end - s.start).sum()
    }

    /// Whether the shard covers no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}[{}..{})", s.path, s.start, s.end)?;
        }
        Ok(())
    }
}

/// Cuts `files` into shards of `shard_size` bytes of the concatenated input (the last may be
/// shorter). Empty files contribute nothing; no shard is empty. Panics if `shard_size` is 0
/// (a validated `JobSpec` never has it).
pub fn plan_shards(files: &[InputFile], shard_size: u64) -> Vec<Shard> {
    assert!(shard_size > 0, "shard size must be positive");
    let mut shards = Vec::new();
    let mut current = Vec::new();
    let mut room = shard_size;
    for file in files {
        let mut pos = 0;
        while pos < file.len {
            let take = room.min(file.len - pos);
            current.push(Segment { path: file.path.clone(), start: pos, end: pos + take });
            pos += take;
            room -= take;
            if room == 0 {
                shards.push(Shard { segments: std::mem::take(&mut current) });
                room = shard_size;
            }
        }
    }
    if !current.is_empty() {
        shards.push(Shard { segments: current });
    }
    shards
}

/// Reads the lines that start inside one segment.
///
/// Build it over a reader positioned at `start - 1` when `start > 0` (and at 0 otherwise)
/// with [`LineReader::new`]: the byte before the segment tells whether the segment starts
/// a line. The reader strips `\n` and `\r\n`, and decodes bytes that are not UTF-8
/// lossily. It reuses one buffer, so a line that is valid UTF-8 costs no allocation.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    /// Offset in the file of the next byte `inner` yields.
    pos: u64,
    /// Lines starting at or after this offset belong to the next segment.
    end: u64,
    buf: Vec<u8>,
    started: bool,
    line_start: u64,
}

impl<R: BufRead> LineReader<R> {
    /// A reader for `[start, end)` over `inner`, which must be positioned at
    /// `start.saturating_sub(1)`.
    pub fn new(inner: R, start: u64, end: u64) -> Self {
        LineReader {
            inner,
            pos: start.saturating_sub(1),
            end,
            buf: Vec::with_capacity(256),
            started: start == 0,
            line_start: start,
        }
    }

    /// Offset in the file of the line last returned by [`Self::next_line`]: where to point
    /// a user at a record that failed.
    pub fn line_start(&self) -> u64 {
        self.line_start
    }

    /// The next line of the segment, or `None` at its end.
    #[allow(clippy::should_implement_trait)] // lends from self; cannot be an Iterator
    pub fn next_line(&mut self) -> io::Result<Option<Cow<'_, str>>> {
        if !self.started {
            // Skip the rest of the line that the byte before `start` belongs to: if that
            // byte is a newline, this consumes exactly it and the segment starts a line.
            self.started = true;
            self.buf.clear();
            let n = self.inner.read_until(b'\n', &mut self.buf)?;
            self.pos += n as u64;
        }
        if self.pos >= self.end {
            return Ok(None);
        }
        self.buf.clear();
        self.line_start = self.pos;
        let n = self.inner.read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None); // the file is shorter than when it was listed
        }
        self.pos += n as u64;
        let mut line = &self.buf[..];
        if let Some(rest) = line.strip_suffix(b"\n") {
            line = rest.strip_suffix(b"\r").unwrap_or(rest);
        }
        Ok(Some(String::from_utf8_lossy(line)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::{Cursor, Seek, SeekFrom};

    fn file(path: &str, len: u64) -> InputFile {
        InputFile { path: path.into(), len }
    }

    #[test]
    fn shards_cut_the_concatenation() {
        let shards = plan_shards(&[file("a", 10), file("empty", 0), file("b", 5)], 6);
        let seg = |p: &str, s, e| Segment { path: p.into(), start: s, end: e };
        assert_eq!(
            shards,
            vec![
                Shard { segments: vec![seg("a", 0, 6)] },
                Shard { segments: vec![seg("a", 6, 10), seg("b", 0, 2)] },
                Shard { segments: vec![seg("b", 2, 5)] },
            ]
        );
        assert_eq!(shards[1].len(), 6);
        assert!(plan_shards(&[file("e", 0)], 4).is_empty());
    }

    fn read_segment(data: &[u8], start: u64, end: u64) -> Vec<String> {
        let mut cur = Cursor::new(data);
        cur.seek(SeekFrom::Start(start.saturating_sub(1))).unwrap();
        let mut r = LineReader::new(cur, start, end);
        let mut out = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            out.push(l.into_owned());
        }
        out
    }

    #[test]
    fn crlf_missing_final_newline_and_bad_utf8() {
        let data = b"one\r\ntwo\n\xffthree";
        assert_eq!(read_segment(data, 0, data.len() as u64), vec!["one", "two", "\u{fffd}three"]);
    }

    #[test]
    fn a_line_belongs_to_the_segment_where_it_starts() {
        let data = b"aa\nbb\ncc\n";
        assert_eq!(read_segment(data, 0, 1), vec!["aa"]);
        assert_eq!(read_segment(data, 1, 3), Vec::<String>::new());
        assert_eq!(read_segment(data, 3, 4), vec!["bb"]);
        assert_eq!(read_segment(data, 2, 6), vec!["bb"]);
        assert_eq!(read_segment(data, 6, 9), vec!["cc"]);
        // An empty line is a line.
        assert_eq!(read_segment(b"\n\nx", 0, 3), vec!["", "", "x"]);
    }

    proptest! {
        /// Whatever the cut points, the segments' lines concatenate to the file's lines.
        #[test]
        fn every_line_read_exactly_once(
            lines in proptest::collection::vec("[a-c\r]{0,6}", 0..20),
            final_newline in any::<bool>(),
            shard in 1u64..12,
        ) {
            let mut data = lines.join("\n");
            if final_newline && !data.is_empty() {
                data.push('\n');
            }
            let data = data.into_bytes();
            let expected = read_segment(&data, 0, data.len() as u64);
            let shards = plan_shards(&[file("f", data.len() as u64)], shard);
            let mut got = Vec::new();
            for s in &shards {
                for seg in &s.segments {
                    got.extend(read_segment(&data, seg.start, seg.end));
                }
            }
            prop_assert_eq!(got, expected);
        }
    }
}
