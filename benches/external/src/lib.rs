//! What both word counts share, so that their outputs equal mapreduce-rs's: the tokenizer,
//! lossy reading of one byte range of a file as lines, and the sorted output file.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The words of `text` as mapreduce-rs's word count finds them: maximal runs of
/// characters for which `char::is_alphabetic` holds, case kept.
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphabetic()).filter(|w| !w.is_empty())
}

/// The lines of part `index` of `parts` equal byte ranges of the file at `path`: those
/// whose first byte lies in the range, so every line belongs to exactly one part. Invalid
/// UTF-8 is replaced by U+FFFD (which is no letter). Panics on a read error.
pub fn part_lines(path: &Path, index: usize, parts: usize) -> io::Result<PartLines> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let (start, end) = (len * index as u64 / parts as u64, len * (index as u64 + 1) / parts as u64);
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut pos = 0;
    if start > 0 {
        // Skip the line that the part before owns: the one holding byte `start - 1`.
        reader.seek(SeekFrom::Start(start - 1))?;
        pos = start - 1 + reader.skip_until(b'\n')? as u64;
    }
    Ok(PartLines { reader, pos, end, buf: Vec::new() })
}

/// The iterator of [`part_lines`].
pub struct PartLines {
    reader: BufReader<File>,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
}

impl Iterator for PartLines {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.pos >= self.end {
            return None;
        }
        self.buf.clear();
        let n = self.reader.read_until(b'\n', &mut self.buf).expect("reading the input");
        self.pos += n as u64;
        (n > 0).then(|| String::from_utf8_lossy(&self.buf).into_owned())
    }
}

/// Writes `counts` (distinct words) to `path` as `word<TAB>count` lines sorted by word.
pub fn write_sorted(path: &Path, mut counts: Vec<(String, u64)>) -> io::Result<()> {
    counts.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    for (word, count) in &counts {
        writeln!(out, "{word}\t{count}")?;
    }
    out.flush()
}

/// `INPUT_FILE OUTPUT_FILE` from the command line, the input readable; or exits with a
/// message.
pub fn args(name: &str) -> (PathBuf, PathBuf) {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let Ok([input, output]) = <[_; 2]>::try_from(args) else {
        eprintln!("usage: {name} INPUT_FILE OUTPUT_FILE");
        std::process::exit(2)
    };
    let input = PathBuf::from(input);
    if let Err(e) = File::open(&input) {
        eprintln!("{name}: cannot read {}: {e}", input.display());
        std::process::exit(1)
    }
    (input, output.into())
}
