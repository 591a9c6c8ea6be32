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

/// How much longer than `shard_size` the last shard may be, in tenths: a remainder of up
/// to 10% of a shard joins the shard before it instead of making a task of its own
/// (Hadoop's `SPLIT_SLOP`).
const SLOP_TENTHS: u128 = 11;

/// Cuts `files` into shards of `shard_size` bytes of the concatenated input. The last
/// shard may be shorter, or up to 10% longer, so that no task gets a sliver of input
/// (the rule of Hadoop's `FileInputFormat`). Empty files contribute nothing; no shard
/// is empty. Panics if `shard_size` is 0 (a validated `JobSpec` never has it).
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
            if room == 0 {
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

/// Reads the lines that start inside one segment, a block of whole lines at a time.
///
/// Build it over a reader positioned at `start - 1` when `start > 0` (and at 0 otherwise)
/// with [`LineReader::new`]: the byte before the segment tells whether the segment starts
/// a line. Each [`Block`] holds up to about the block size of whole lines, validated as
/// UTF-8 at once (with SIMD) rather than line by line; bytes that are not UTF-8 are
/// decoded lossily. Lines lose their `\n` or `\r\n`. The reader reuses one buffer, so
/// valid text costs no allocation.
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
}

/// Default size of the blocks a [`LineReader`] hands out.
pub const LINE_BLOCK: usize = 1 << 20;

impl<R: Read> LineReader<R> {
    /// A reader for `[start, end)` over `inner`, which must be positioned at
    /// `start.saturating_sub(1)`.
    pub fn new(inner: R, start: u64, end: u64) -> Self {
        Self::with_block_size(inner, start, end, LINE_BLOCK)
    }

    /// [`Self::new`] with blocks of about `block` bytes (a line longer than that makes its
    /// block longer).
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
        }
    }

    /// Reads more bytes after the unread ones (moved to the front), growing the buffer if
    /// they fill it. Returns whether any byte came.
    fn fill(&mut self) -> io::Result<bool> {
        if self.cursor > 0 {
            self.buf.copy_within(self.cursor..self.filled, 0);
            self.filled -= self.cursor;
            self.cursor = 0;
        }
        if self.filled == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
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

    /// Index in `buf` just past the first `\n` at or after `from`, reading more as needed;
    /// `filled` if the file ends first.
    fn line_end_from(&mut self, from: usize) -> io::Result<usize> {
        let mut from = from - self.cursor;
        loop {
            if let Some(i) = self.buf[self.cursor + from..self.filled].iter().position(|&b| b == b'\n') {
                return Ok(self.cursor + from + i + 1);
            }
            from = self.filled - self.cursor;
            if self.eof || !self.fill()? {
                return Ok(self.filled);
            }
        }
    }

    /// The next block of whole lines of the segment, or `None` at its end.
    pub fn next_block(&mut self) -> io::Result<Option<Block<'_>>> {
        if !self.started {
            // Skip the rest of the line that the byte before `start` belongs to: if that
            // byte is a newline, this consumes exactly it and the segment starts a line.
            self.started = true;
            let skip = self.line_end_from(self.cursor)?;
            self.pos += (skip - self.cursor) as u64;
            self.cursor = skip;
        }
        if self.pos >= self.end {
            return Ok(None);
        }
        if self.cursor == self.filled && (self.eof || !self.fill()?) {
            return Ok(None); // the file is shorter than when it was listed
        }
        // Whole lines: up to the last newline read, at least one line.
        let mut cut = match self.buf[self.cursor..self.filled].iter().rposition(|&b| b == b'\n') {
            Some(i) => self.cursor + i + 1,
            None => self.line_end_from(self.cursor)?,
        };
        // Only the lines that start before `end`: up to the end of the one holding
        // byte `end - 1`.
        let within = (self.end - self.pos) as usize;
        if cut - self.cursor > within {
            cut = self.line_end_from(self.cursor + within - 1)?;
        }
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
