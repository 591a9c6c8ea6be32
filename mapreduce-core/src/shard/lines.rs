//! The line reader of a map task: the lines that start in one segment, a block of whole
//! lines at a time, each line read exactly once whatever the cuts.

use std::borrow::Cow;
use std::io::{self, Read};

use crate::job::InvalidUtf8;

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
    /// What to do with lines that are not UTF-8, and how many were skipped.
    utf8: InvalidUtf8,
    skipped_utf8: u64,
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
            utf8: InvalidUtf8::Replace,
            skipped_utf8: 0,
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
    ///
    /// A line that is not UTF-8 never sits inside a block: the block ends before it, and
    /// the next call hands it out alone, its bad bytes replaced with U+FFFD
    /// ([`InvalidUtf8::Replace`], so that offsets after it stay exact), fails with
    /// [`BadUtf8`] ([`InvalidUtf8::Fail`]) or skips it ([`InvalidUtf8::Skip`], counted in
    /// [`LineReader::skipped_utf8`]): the lines skipped always come before the block
    /// handed out next.
    pub fn next_block(&mut self) -> io::Result<Option<Block<'_>>> {
        let (start, cut, offset) = loop {
            let Some((start, offset)) = self.next_cut()? else { return Ok(None) };
            let cut = self.cursor;
            let bytes = &self.buf[start..cut];
            if simdutf8::basic::from_utf8(bytes).is_ok() {
                break (start, cut, offset);
            }
            let valid = std::str::from_utf8(bytes).map_or_else(|e| e.valid_up_to(), |_| bytes.len());
            let bad = bytes[..valid].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            if bad > 0 {
                // The whole lines before the bad one make this block; the rest is read again.
                self.cursor = start + bad;
                self.pos = offset + bad as u64;
                break (start, start + bad, offset);
            }
            let end = newline(bytes).map_or(bytes.len(), |i| i + 1);
            self.cursor = start + end;
            self.pos = offset + end as u64;
            match self.utf8 {
                // Alone in its block, so that the offsets of the lines after it are exact.
                InvalidUtf8::Replace => break (start, start + end, offset),
                InvalidUtf8::Fail => return Err(io::Error::new(io::ErrorKind::InvalidData, BadUtf8 { offset })),
                InvalidUtf8::Skip => self.skipped_utf8 += 1,
            }
        };
        let bytes = &self.buf[start..cut];
        let text = match simdutf8::basic::from_utf8(bytes) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(bytes),
        };
        Ok(Some(Block { text, offset, skipped: self.skipped + self.skipped_utf8 }))
    }

    /// Lines skipped so far, for their length or their bytes.
    pub fn skipped_all(&self) -> u64 {
        self.skipped + self.skipped_utf8
    }

    /// Lines skipped so far for bytes that are not UTF-8 ([`InvalidUtf8::Skip`]).
    pub fn skipped_utf8(&self) -> u64 {
        self.skipped_utf8
    }

    /// Sets what to do with lines that are not UTF-8 (replace their bad bytes, the
    /// default).
    pub fn with_invalid_utf8(mut self, policy: InvalidUtf8) -> Self {
        self.utf8 = policy;
        self
    }

    /// Moves the cursor past the next block's whole lines; returns where they start in
    /// `buf` and in the file, or `None` at the segment's end.
    fn next_cut(&mut self) -> io::Result<Option<(usize, u64)>> {
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
        Ok(Some((start, offset)))
    }
}

/// A line that is not UTF-8, with [`InvalidUtf8::Fail`]. The reader returns it inside an
/// [`io::Error`] of kind `InvalidData`; find it with [`BadUtf8::find`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line at byte {offset} is not valid UTF-8")]
pub struct BadUtf8 {
    /// Where the line starts in the file.
    pub offset: u64,
}

impl BadUtf8 {
    /// The `BadUtf8` inside `error`, if that is what it is.
    pub fn find(error: &io::Error) -> Option<&BadUtf8> {
        error.get_ref().and_then(|e| e.downcast_ref::<BadUtf8>())
    }
}

/// Whole lines of a segment, as [`LineReader::next_block`] hands them out.
#[derive(Debug)]
pub struct Block<'a> {
    text: Cow<'a, str>,
    offset: u64,
    skipped: u64,
}

impl Block<'_> {
    /// Where the block's first line starts in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Lines of the segment the reader skipped before this block (all skipped lines come
    /// before the block handed out next), so that line numbers count them.
    pub fn skipped_before(&self) -> u64 {
        self.skipped
    }

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
    use crate::shard::{InputFile, plan_shards};

    fn file(path: &str, len: u64) -> InputFile {
        InputFile { path: path.into(), len }
    }
    use proptest::prelude::*;
    use std::io::{Cursor, Seek, SeekFrom};

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
    fn lines_that_are_not_utf8_are_replaced_alone_skipped_or_an_error() {
        let data = b"ok\nb\xffd\nfine\n\xfe\nlast";
        let read = |policy, block| {
            let mut r = LineReader::with_block_size(Cursor::new(&data[..]), 0, data.len() as u64, block)
                .with_invalid_utf8(policy);
            let mut out = Vec::new();
            loop {
                match r.next_block() {
                    Ok(Some(b)) => out.extend(b.lines().map(|(at, l)| (b.skipped_before(), at, l.to_string()))),
                    Ok(None) => return Ok((out, r.skipped_utf8())),
                    Err(e) => return Err(BadUtf8::find(&e).cloned().expect("a BadUtf8")),
                }
            }
        };
        for block in [1, 3, 64] {
            let (lines, skipped) = read(InvalidUtf8::Replace, block).unwrap();
            let want = [(0, "ok"), (3, "b\u{fffd}d"), (7, "fine"), (12, "\u{fffd}"), (14, "last")];
            let got: Vec<(u64, &str)> = lines.iter().map(|(_, at, l)| (*at, l.as_str())).collect();
            assert_eq!(got, want, "exact offsets after replaced bytes, block {block}");
            assert_eq!(skipped, 0);
            let (lines, skipped) = read(InvalidUtf8::Skip, block).unwrap();
            let got: Vec<(u64, u64, &str)> = lines.iter().map(|(s, at, l)| (*s, *at, l.as_str())).collect();
            assert_eq!(got, [(0, 0, "ok"), (1, 7, "fine"), (2, 14, "last")], "block {block}");
            assert_eq!(skipped, 2);
            assert_eq!(read(InvalidUtf8::Fail, block).unwrap_err(), BadUtf8 { offset: 3 });
        }
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
