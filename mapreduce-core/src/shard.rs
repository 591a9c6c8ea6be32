//! Input sharding and the line reader.
//!
//! The inputs are seen as one concatenation of files, cut every `shard_size` bytes into
//! [`Shard`]s; a shard may span files. Cuts fall anywhere, and lines are given to shards by
//! where they *start*: a line belongs to the shard holding its first byte, and the reader of
//! that shard reads it to its end even past the cut. So every line is read exactly once,
//! whatever the cut points (this is Hadoop's `LineRecordReader` rule).

use std::borrow::Cow;
use std::io::{self, Read};

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
    /// Total bytes of the shard's ranges (a backwards range counts 0, a total past
    /// `u64::MAX` is `u64::MAX`: a hostile plan is refused elsewhere, never a panic here).
    pub fn len(&self) -> u64 {
        self.segments.iter().fold(0u64, |n, s| n.saturating_add(s.end.saturating_sub(s.start)))
    }

    /// Whether the shard covers no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for Shard {
    /// The first segment and the shard's size, never every segment: a shard may hold
    /// [`MAX_SHARD_SEGMENTS`] files, and errors that name it stay short.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.segments.as_slice() {
            [] => f.write_str("an empty shard"),
            [s] => write!(f, "{}[{}..{})", s.path, s.start, s.end),
            [s, rest @ ..] => {
                write!(f, "{}[{}..{}) and {} more segments, {} bytes", s.path, s.start, s.end, rest.len(), self.len())
            }
        }
    }
}

/// The most segments (so files) in one shard: [`plan_shards`] starts a new shard past it,
/// so that a map request stays small whatever the files' sizes. With paths of at most
/// [`MAX_PATH_BYTES`], a shard's segments take at most 4096 × (4096 + 30) bytes, about
/// 16 MiB, a quarter of a 64 MiB message.
pub const MAX_SHARD_SEGMENTS: usize = 4096;

/// The longest input path in bytes (Linux's `PATH_MAX`): longer ones are refused when
/// inputs are listed, and by workers.
pub const MAX_PATH_BYTES: usize = 4096;

/// How much longer than `shard_size` the last shard may be, in tenths: a remainder of up
/// to 10% of a shard joins the shard before it instead of making a task of its own
/// (Hadoop's `SPLIT_SLOP`).
const SLOP_TENTHS: u128 = 11;

/// Cuts `files` into shards of `shard_size` bytes of the concatenated input. The last
/// shard may be shorter, or up to 10% longer, so that no task gets a sliver of input
/// (the rule of Hadoop's `FileInputFormat`); a shard of [`MAX_SHARD_SEGMENTS`] files ends
/// there, however short. Empty files contribute nothing; no shard is empty. Panics if
/// `shard_size` is 0 (a validated `JobSpec` never has it).
pub fn plan_shards(files: &[InputFile], shard_size: u64) -> Vec<Shard> {
    assert!(shard_size > 0, "shard size must be positive");
    // Bytes of the input not yet in a shard (u128: the lengths' sum may pass u64).
    let mut left: u128 = files.iter().map(|f| u128::from(f.len)).sum();
    let room_for = |left: u128| match left * 10 <= u128::from(shard_size) * SLOP_TENTHS {
        true => u64::try_from(left).unwrap_or(u64::MAX),
        false => shard_size,
    };
    let mut shards = Vec::new();
    let mut current = Vec::new();
    let mut room = room_for(left);
    for file in files {
        let mut pos = 0;
        while pos < file.len {
            let take = room.min(file.len - pos);
            current.push(Segment { path: file.path.clone(), start: pos, end: pos + take });
            pos += take;
            room -= take;
            left -= u128::from(take);
            if room == 0 || current.len() == MAX_SHARD_SEGMENTS {
                shards.push(Shard { segments: std::mem::take(&mut current) });
                room = room_for(left);
            }
        }
    }
    if !current.is_empty() {
        shards.push(Shard { segments: current });
    }
    shards
}

/// Default of the longest line a map reads ([`crate::JobSpec::max_line_bytes`]): 64 MiB.
pub const DEFAULT_MAX_LINE: usize = 64 << 20;

/// A line longer than the reader's limit ([`LineReader::with_max_line`]). The reader
/// returns it inside an [`io::Error`] of kind `InvalidData`; find it with
/// [`LineTooLong::find`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line at byte {offset} is longer than the limit of {limit} bytes")]
pub struct LineTooLong {
    /// Where the line starts in the file.
    pub offset: u64,
    /// The limit.
    pub limit: usize,
}

impl LineTooLong {
    /// The `LineTooLong` inside `error`, if that is what it is.
    pub fn find(error: &io::Error) -> Option<&LineTooLong> {
        error.get_ref().and_then(|e| e.downcast_ref::<LineTooLong>())
    }
}

/// Reads the lines that start inside one segment, a block of whole lines at a time.
///
/// Build it over a reader positioned at `start - 1` when `start > 0` (and at 0 otherwise)
/// with [`LineReader::new`]: the byte before the segment tells whether the segment starts
/// a line. Each [`Block`] holds up to about the block size of whole lines, validated as
/// UTF-8 at once (with SIMD) rather than line by line; bytes that are not UTF-8 are
/// decoded lossily. Lines lose their `\n` or `\r\n`. The reader reuses one buffer, so
/// valid text costs no allocation.
///
/// The buffer never grows past the block size or the line limit (plus one byte),
/// whichever is larger: a line longer than the limit (its bytes before the `\n`) is an
/// error ([`LineTooLong`]), or, with skipping on, is read past without being buffered and
/// counted ([`LineReader::skipped`]).
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    /// `buf[..filled]` holds bytes read; `buf[cursor..filled]` are not handed out yet.
    buf: Vec<u8>,
    cursor: usize,
    filled: usize,
    /// Offset in the file of `buf[cursor]`.
    pos: u64,
    /// Lines starting at or after this offset belong to the next segment.
    end: u64,
    started: bool,
    eof: bool,
    /// The longest line, in bytes before its `\n`.
    max_line: usize,
    /// Skip longer lines instead of failing.
    skip_long: bool,
    /// Lines skipped for their length.
    skipped: u64,
}

/// Default size of the blocks a [`LineReader`] hands out.
pub const LINE_BLOCK: usize = 1 << 20;

/// Index of the first `\n` in `bytes`.
fn newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

impl<R: Read> LineReader<R> {
    /// A reader for `[start, end)` over `inner`, which must be positioned at
    /// `start.saturating_sub(1)`.
    pub fn new(inner: R, start: u64, end: u64) -> Self {
        Self::with_block_size(inner, start, end, LINE_BLOCK)
    }

    /// [`Self::new`] with blocks of about `block` bytes (a line longer than that makes its
    /// block longer), and lines of at most [`DEFAULT_MAX_LINE`] bytes.
    pub fn with_block_size(inner: R, start: u64, end: u64, block: usize) -> Self {
        LineReader {
            inner,
            buf: vec![0; block.max(1)],
            cursor: 0,
            filled: 0,
            pos: start.saturating_sub(1),
            end,
            started: start == 0,
            eof: false,
            max_line: DEFAULT_MAX_LINE,
            skip_long: false,
            skipped: 0,
        }
    }

    /// Sets the longest line, in bytes before its `\n` (at least 1), and whether a longer
    /// line is skipped (and counted) rather than an error.
    pub fn with_max_line(mut self, max_line: usize, skip: bool) -> Self {
        self.max_line = max_line.max(1);
        self.skip_long = skip;
        self
    }

    /// Lines skipped so far for being longer than the limit.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Reads more bytes after the unread ones (moved to the front), growing the buffer if
    /// they fill it, up to room for one line of the limit. Returns whether any byte came.
    fn fill(&mut self) -> io::Result<bool> {
        if self.cursor > 0 {
            self.buf.copy_within(self.cursor..self.filled, 0);
            self.filled -= self.cursor;
            self.cursor = 0;
        }
        if self.filled == self.buf.len() {
            let most = self.max_line.saturating_add(1).max(self.buf.len());
            self.buf.resize(self.buf.len().saturating_mul(2).min(most), 0);
        }
        if self.filled == self.buf.len() {
            return Ok(true); // full: the caller has room for a line of the limit
        }
        loop {
            match self.inner.read(&mut self.buf[self.filled..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.filled += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Index in `buf` just past the `\n` ending the line at `cursor`, reading more as
    /// needed (`filled` if the file ends first); `None` if the line is longer than the
    /// limit.
    fn first_line_end(&mut self) -> io::Result<Option<usize>> {
        let mut from = 0; // relative to `cursor`, which `fill` moves
        loop {
            // The line's `\n` may be at most `max_line` bytes after its start.
            let limit = self.max_line.saturating_add(1);
            let upto = (self.filled - self.cursor).min(limit);
            if let Some(i) = newline(&self.buf[self.cursor + from..self.cursor + upto]) {
                return Ok(Some(self.cursor + from + i + 1));
            }
            if upto == limit {
                return Ok(None);
            }
            from = upto;
            if self.eof || !self.fill()? {
                return Ok(Some(self.filled));
            }
        }
    }

    /// Reads past the line at `cursor` through its `\n` without keeping it, or until the
    /// segment's end (no later line then starts in the segment), or the file's.
    fn skip_line(&mut self) -> io::Result<()> {
        loop {
            if let Some(i) = newline(&self.buf[self.cursor..self.filled]) {
                self.pos += (i + 1) as u64;
                self.cursor += i + 1;
                return Ok(());
            }
            self.pos += (self.filled - self.cursor) as u64;
            self.cursor = self.filled;
            if self.pos >= self.end || self.eof || !self.fill()? {
                return Ok(());
            }
        }
    }

    /// The next block of whole lines of the segment, or `None` at its end.
    pub fn next_block(&mut self) -> io::Result<Option<Block<'_>>> {
        if !self.started {
            // Skip the rest of the line that the byte before `start` belongs to: if that
            // byte is a newline, this consumes exactly it and the segment starts a line.
            self.started = true;
            self.skip_line()?;
        }
        let first = loop {
            if self.pos >= self.end {
                return Ok(None);
            }
            if self.cursor == self.filled && (self.eof || !self.fill()?) {
                return Ok(None); // the file is shorter than when it was listed
            }
            match self.first_line_end()? {
                Some(first) => break first,
                None if self.skip_long => {
                    self.skipped += 1;
                    self.skip_line()?;
                }
                None => {
                    let error = LineTooLong { offset: self.pos, limit: self.max_line };
                    return Err(io::Error::new(io::ErrorKind::InvalidData, error));
                }
            }
        };
        // Whole lines that start before `end`: `within` bytes from the cursor.
        let within = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let cut = if self.filled - self.cursor <= self.max_line {
            // No whole line here can be too long: up to the last newline read, or up to
            // the end of the line holding byte `end - 1`.
            let last = self.buf[first..self.filled].iter().rposition(|&b| b == b'\n').map_or(first, |i| first + i + 1);
            if last - self.cursor <= within {
                last
            } else if first - self.cursor >= within {
                first
            } else {
                let at = self.cursor + within - 1;
                at + newline(&self.buf[at..last]).expect("the lines up to `last` are whole") + 1
            }
        } else {
            // A long buffer: line by line, stopping before one longer than the limit.
            let mut cut = first;
            while cut - self.cursor < within {
                match newline(&self.buf[cut..self.filled]) {
                    Some(i) if i <= self.max_line => cut += i + 1,
                    _ => break,
                }
            }
            cut
        };
        let (start, offset) = (self.cursor, self.pos);
        self.cursor = cut;
        self.pos += (cut - start) as u64;
        let bytes = &self.buf[start..cut];
        let text = match simdutf8::basic::from_utf8(bytes) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(bytes),
        };
        Ok(Some(Block { text, offset }))
    }
}

/// Whole lines of a segment, as [`LineReader::next_block`] hands them out.
#[derive(Debug)]
pub struct Block<'a> {
    text: Cow<'a, str>,
    offset: u64,
}

impl Block<'_> {
    /// The block's text: whole lines, with their terminators.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The block's lines, each with the offset in the file where it starts, without its
    /// line terminator.
    pub fn lines(&self) -> impl Iterator<Item = (u64, &str)> {
        let mut offset = self.offset;
        // After lossy decoding, offsets past a replaced byte are those of the decoded
        // text; they stay exact for valid UTF-8, the case that matters for errors.
        self.text.split_inclusive('\n').map(move |raw| {
            let at = offset;
            offset += raw.len() as u64;
            let line = raw.strip_suffix('\n').map_or(raw, |l| l.strip_suffix('\r').unwrap_or(l));
            (at, line)
        })
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

    #[test]
    fn a_remainder_within_a_tenth_of_a_shard_joins_the_last_shard() {
        let lens = |files: &[InputFile], shard| plan_shards(files, shard).iter().map(Shard::len).collect::<Vec<_>>();
        // 10% of 100 is 10: a remainder of 10 joins, one of 11 is a shard of its own.
        assert_eq!(lens(&[file("a", 210)], 100), vec![100, 110]);
        assert_eq!(lens(&[file("a", 211)], 100), vec![100, 100, 11]);
        assert_eq!(lens(&[file("a", 105)], 100), vec![105]);
        // Across files: the slop counts the whole input left, not the file's.
        assert_eq!(lens(&[file("a", 150), file("b", 55)], 100), vec![100, 105]);
        let last = plan_shards(&[file("a", 150), file("b", 55)], 100).pop().unwrap();
        assert_eq!(last.segments.len(), 2);
        // Huge sizes do not overflow the comparison.
        assert_eq!(lens(&[file("a", u64::MAX)], u64::MAX / 2), vec![u64::MAX / 2, u64::MAX / 2 + 1]);
        assert_eq!(lens(&[file("a", u64::MAX), file("b", 4)], u64::MAX), vec![u64::MAX, 4]);
    }

    fn read_segment(data: &[u8], start: u64, end: u64) -> Vec<String> {
        read_segment_in_blocks(data, start, end, LINE_BLOCK).into_iter().map(|(_, l)| l).collect()
    }

    /// The lines with their offsets, read in blocks of about `block` bytes.
    fn read_segment_in_blocks(data: &[u8], start: u64, end: u64, block: usize) -> Vec<(u64, String)> {
        let mut cur = Cursor::new(data);
        cur.seek(SeekFrom::Start(start.saturating_sub(1))).unwrap();
        let mut r = LineReader::with_block_size(cur, start, end, block);
        let mut out = Vec::new();
        while let Some(b) = r.next_block().unwrap() {
            out.extend(b.lines().map(|(at, l)| (at, l.to_string())));
        }
        out
    }

    /// The lines of `data` and their offsets, the plain way.
    fn plain_lines(data: &[u8]) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        let mut at = 0u64;
        for raw in data.split_inclusive(|&b| b == b'\n') {
            let line = raw.strip_suffix(b"\n").map_or(raw, |l| l.strip_suffix(b"\r").unwrap_or(l));
            out.push((at, String::from_utf8_lossy(line).into_owned()));
            at += raw.len() as u64;
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

    #[test]
    fn lines_longer_than_a_block_and_offsets() {
        let data = b"0123456789abcdef\nxy\r\n\nlast line, no newline";
        for block in [1, 2, 3, 5, 8, 64] {
            assert_eq!(read_segment_in_blocks(data, 0, data.len() as u64, block), plain_lines(data), "block {block}");
        }
        assert_eq!(read_segment_in_blocks(data, 5, 18, 4), vec![(17, "xy".to_string())]);
    }

    #[test]
    fn a_shard_of_many_files_is_cut_at_the_segment_limit_and_displays_short() {
        let files: Vec<InputFile> = (0..MAX_SHARD_SEGMENTS + 10).map(|i| file(&format!("/in/{i}"), 1)).collect();
        let shards = plan_shards(&files, 1 << 30);
        assert_eq!(shards.iter().map(|s| s.segments.len()).collect::<Vec<_>>(), vec![MAX_SHARD_SEGMENTS, 10]);
        let text = shards[0].to_string();
        assert_eq!(
            text,
            format!("/in/0[0..1) and {} more segments, {MAX_SHARD_SEGMENTS} bytes", MAX_SHARD_SEGMENTS - 1)
        );
        assert_eq!(shards[1].segments[..1].len(), 1);
        let one = Shard { segments: vec![Segment { path: "a".into(), start: 3, end: 9 }] };
        assert_eq!(one.to_string(), "a[3..9)");
    }

    /// Reads `[start, end)` of `data` with lines of at most `max` bytes; the lines, the
    /// skipped count, or the error.
    fn read_limited(
        data: &[u8],
        start: u64,
        end: u64,
        block: usize,
        max: usize,
        skip: bool,
    ) -> io::Result<(Vec<(u64, String)>, u64)> {
        let mut cur = Cursor::new(data);
        cur.seek(SeekFrom::Start(start.saturating_sub(1))).unwrap();
        let mut r = LineReader::with_block_size(cur, start, end, block).with_max_line(max, skip);
        let mut out = Vec::new();
        while let Some(b) = r.next_block()? {
            out.extend(b.lines().map(|(at, l)| (at, l.to_string())));
            assert!(r.buf.len() <= block.max(max + 1), "buffer of {} bytes", r.buf.len());
        }
        Ok((out, r.skipped()))
    }

    #[test]
    fn a_line_longer_than_the_limit_is_an_error_naming_its_offset_or_is_skipped() {
        let data = b"short\n0123456789\nok\n";
        for block in [1, 4, 64] {
            let err = read_limited(data, 0, data.len() as u64, block, 8, false).unwrap_err();
            assert_eq!(LineTooLong::find(&err), Some(&LineTooLong { offset: 6, limit: 8 }), "block {block}");
            assert_eq!(err.to_string(), "line at byte 6 is longer than the limit of 8 bytes");
            let (lines, skipped) = read_limited(data, 0, data.len() as u64, block, 8, true).unwrap();
            assert_eq!((lines, skipped), (vec![(0, "short".into()), (17, "ok".into())], 1), "block {block}");
        }
        // A line of exactly the limit is fine, with or without its newline.
        assert_eq!(read_limited(b"12345678\n1234", 0, 13, 2, 8, false).unwrap().0.len(), 2);
    }

    #[test]
    fn an_endless_line_fails_after_the_limit_without_growing_the_buffer() {
        let mut r = LineReader::with_block_size(io::repeat(b'x'), 0, u64::MAX, 1024).with_max_line(4096, false);
        let err = r.next_block().unwrap_err();
        assert_eq!(LineTooLong::find(&err), Some(&LineTooLong { offset: 0, limit: 4096 }));
        assert!(r.buf.len() <= 4097, "{}", r.buf.len());
        // Skipping it reads on to the segment's end, never buffering it.
        let mut r = LineReader::with_block_size(io::repeat(b'x'), 0, 1 << 20, 1024).with_max_line(4096, true);
        assert!(r.next_block().unwrap().is_none());
        assert_eq!((r.skipped(), r.buf.len() <= 4097), (1, true));
    }

    proptest! {
        /// Whatever the cut points and block size, the segments' lines, with their
        /// offsets, concatenate to the file's lines.
        #[test]
        fn every_line_read_exactly_once(
            lines in proptest::collection::vec("[a-c\r\u{e9}]{0,6}", 0..20),
            final_newline in any::<bool>(),
            shard in 1u64..12,
            block in 1usize..20,
        ) {
            let mut data = lines.join("\n");
            if final_newline && !data.is_empty() {
                data.push('\n');
            }
            let data = data.into_bytes();
            let expected = plain_lines(&data);
            let shards = plan_shards(&[file("f", data.len() as u64)], shard);
            let mut got = Vec::new();
            for s in &shards {
                for seg in &s.segments {
                    got.extend(read_segment_in_blocks(&data, seg.start, seg.end, block));
                }
            }
            prop_assert_eq!(got, expected);
        }

        /// With a line limit and skipping, the segments read the file's lines that fit
        /// exactly once and skip each longer one exactly once.
        #[test]
        fn every_short_line_read_and_every_long_one_skipped_once(
            lines in proptest::collection::vec("[a-c\r]{0,12}", 0..20),
            shard in 1u64..12,
            block in 1usize..20,
            max in 1usize..8,
        ) {
            let data = lines.join("\n").into_bytes();
            let all = plain_lines(&data);
            let fits = |l: &(u64, String)| data[l.0 as usize..].split(|&b| b == b'\n').next().unwrap().len() <= max;
            let expected: Vec<_> = all.iter().filter(|l| fits(l)).cloned().collect();
            let mut got = Vec::new();
            let mut skipped = 0;
            for s in plan_shards(&[file("f", data.len() as u64)], shard) {
                for seg in &s.segments {
                    let (lines, n) = read_limited(&data, seg.start, seg.end, block, max, true).unwrap();
                    got.extend(lines);
                    skipped += n;
                }
            }
            prop_assert_eq!(got, expected);
            prop_assert_eq!(skipped, all.iter().filter(|l| !fits(l)).count() as u64);
        }
    }
}

/// Hostile sizes for [`plan_shards`]: file lengths up to `u64::MAX`, shard sizes of 1 and
/// `u64::MAX`, many empty files, totals past `u64::MAX`.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn len() -> impl Strategy<Value = u64> {
        prop_oneof![
            3 => Just(0u64),
            3 => 1u64..50,
            1 => Just(u64::MAX),
            1 => (1u64..50).prop_map(|d| u64::MAX - d),
            1 => Just(u64::MAX / 2 + 1),
            1 => any::<u64>(),
        ]
    }

    fn shard_size() -> impl Strategy<Value = u64> {
        prop_oneof![
            2 => Just(1u64),
            2 => 2u64..100,
            2 => Just(u64::MAX),
            1 => (0u64..50).prop_map(|d| u64::MAX / 2 + d),
            1 => any::<u64>().prop_map(|s| s.max(1)),
        ]
    }

    /// Files and a shard size, raised if need be so that the plan has at most a few
    /// thousand shards (a shard size of 1 over a file of `u64::MAX` bytes would have
    /// `u64::MAX` of them).
    fn input() -> impl Strategy<Value = (Vec<InputFile>, u64)> {
        let files = proptest::collection::vec(len(), 0..120).prop_map(|lens| {
            lens.into_iter().enumerate().map(|(i, len)| InputFile { path: format!("f{i}"), len }).collect::<Vec<_>>()
        });
        (files, shard_size()).prop_map(|(files, shard)| {
            let total: u128 = files.iter().map(|f| u128::from(f.len)).sum();
            let least = u64::try_from(total / 2000 + 1).expect("at most 120 files of u64::MAX");
            (files, shard.max(least))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every byte of every file is in exactly one shard, in input order; no shard or
        /// segment is empty; every shard but the last holds `shard_size` bytes, and the last
        /// at most 10% more.
        #[test]
        fn plan_shards_covers_every_byte_once_in_order_whatever_the_sizes((files, shard) in input()) {
            let shards = plan_shards(&files, shard);
            let segments: Vec<&Segment> = shards.iter().flat_map(|s| &s.segments).collect();
            let mut next = segments.iter().peekable();
            for file in files.iter().filter(|f| f.len > 0) {
                let mut pos = 0u64;
                while pos < file.len {
                    let s = next.next().unwrap_or_else(|| panic!("{} not covered past {pos}", file.path));
                    prop_assert_eq!((&s.path, s.start), (&file.path, pos), "a gap, an overlap or out of order");
                    prop_assert!(s.end > s.start && s.end <= file.len, "segment {:?} of {:?}", s, file);
                    pos = s.end;
                }
            }
            prop_assert!(next.peek().is_none(), "segments past the input: {:?}", next.peek());

            let lens: Vec<u128> = shards
                .iter()
                .map(|s| s.segments.iter().map(|g| u128::from(g.end - g.start)).sum())
                .collect();
            let total: u128 = files.iter().map(|f| u128::from(f.len)).sum();
            prop_assert_eq!(lens.iter().sum::<u128>(), total);
            // Full shards, then the remainder of at most 110% of a shard; a remainder of
            // more than u64::MAX bytes (shard sizes above u64::MAX / 1.1) is cut in two at
            // u64::MAX, as a Shard's length is a u64.
            let full = lens.iter().take_while(|&&l| l == u128::from(shard)).count();
            let tail = &lens[full..];
            let max = u128::from(u64::MAX);
            let tail_ok = match tail {
                [] => true,
                [last] => *last * 10 <= u128::from(shard) * 11,
                [first, last] => *first == max && (first + last) * 10 <= u128::from(shard) * 11,
                _ => false,
            };
            prop_assert!(tail_ok && tail.iter().all(|&l| l > 0), "{:?} (shard {})", lens, shard);
            // Shard::len cannot overflow: a shard never holds more than u64::MAX bytes.
            prop_assert!(lens.iter().all(|&l| l <= u128::from(u64::MAX)));
        }
    }

    #[test]
    fn many_empty_files_and_totals_past_u64_max_plan_without_overflow() {
        let empty = (0..10_000).map(|i| InputFile { path: format!("e{i}"), len: 0 });
        let files: Vec<InputFile> =
            empty.chain((0..3).map(|i| InputFile { path: format!("h{i}"), len: u64::MAX })).collect();
        let shards = plan_shards(&files, u64::MAX);
        assert_eq!(shards.iter().map(Shard::len).collect::<Vec<_>>(), [u64::MAX; 3]);
        assert!(plan_shards(&files[..10_000], 1).is_empty());
        // A remainder within the slop but past u64::MAX bytes is cut at u64::MAX.
        let files = [InputFile { path: "h".into(), len: u64::MAX }, InputFile { path: "t".into(), len: 4 }];
        let lens: Vec<u64> = plan_shards(&files, u64::MAX - 10).iter().map(Shard::len).collect();
        assert_eq!(lens, [u64::MAX, 4]);
    }
}
