//! The sequential references the distributed jobs must equal, and the readers of their
//! output directories: a plain word count ([`count_sequential`]) and an in-memory sort
//! ([`sort_sequential`], also the sort benchmark's baseline).

use std::collections::BTreeMap;
use std::fs::File;
use std::hash::BuildHasherDefault;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::sort::{KEY_LEN, RECORD_LEN};
use crate::wordcount::words;

type FxMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<rustc_hash::FxHasher>>;

/// Counts the words of `files` in this thread: the reference the distributed job must
/// equal. Bytes that are not UTF-8 separate words, as in the job.
pub fn count_sequential(files: &[PathBuf]) -> io::Result<BTreeMap<String, u64>> {
    let mut counts: FxMap<Box<str>, u64> = FxMap::default();
    for file in files {
        let bytes = std::fs::read(file)?;
        for word in words(&String::from_utf8_lossy(&bytes)) {
            match counts.get_mut(word) {
                Some(c) => *c += 1,
                None => {
                    counts.insert(word.into(), 1);
                }
            }
        }
    }
    Ok(counts.into_iter().map(|(w, c)| (w.into_string(), c)).collect())
}

/// The `part-*` files of a job's output directory, in name (and so partition) order.
pub fn output_parts(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    parts.retain(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("part-")));
    parts.sort();
    Ok(parts)
}

/// Reads a word count output directory (`part-*` files of `word<TAB>count` lines) into a
/// map, checking that each file is sorted and no word appears twice.
pub fn read_output(dir: &Path) -> io::Result<BTreeMap<String, u64>> {
    let bad = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
    let mut counts = BTreeMap::new();
    for part in output_parts(dir)? {
        let text = std::fs::read_to_string(&part)?;
        let mut previous: Option<&str> = None;
        for line in text.lines() {
            let (word, count) =
                line.split_once('\t').ok_or_else(|| bad(format!("{}: no tab in {line:?}", part.display())))?;
            let count: u64 = count.parse().map_err(|_| bad(format!("{}: bad count in {line:?}", part.display())))?;
            if previous.is_some_and(|p| p >= word) {
                return Err(bad(format!("{}: {word:?} is out of order", part.display())));
            }
            previous = Some(word);
            if counts.insert(word.to_string(), count).is_some() {
                return Err(bad(format!("{}: {word:?} appears in two partitions", part.display())));
            }
        }
    }
    Ok(counts)
}

/// The `n` most frequent words of a word count's output directory, most frequent first
/// (ties in word order), read a part file at a time and never held whole: what a user's
/// program prints after the job costs little beside the job. The part files are read in
/// parallel, as the job wrote them.
pub fn top_words(dir: &Path, n: usize) -> io::Result<Vec<(String, u64)>> {
    let parts = output_parts(dir)?;
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(parts.len()).max(1);
    let tops: Vec<io::Result<Top>> = std::thread::scope(|s| {
        let parts = &parts;
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut top = Top::default();
                    for part in parts.iter().skip(t).step_by(threads) {
                        top_of_part(part, n, &mut top)?;
                    }
                    Ok(top)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|_| Err(io::Error::other("a reader panicked")))).collect()
    });
    let mut top = Top::default();
    for t in tops {
        for entry in t? {
            keep(&mut top, n, entry);
        }
    }
    Ok(top.into_iter().map(|(c, w)| (w, c.0)).collect())
}

/// The best words so far, as (count, word) with the count reversed for the order wanted.
type Top = std::collections::BTreeSet<(std::cmp::Reverse<u64>, String)>;

/// Adds `entry` to `top` if it is among the best `n`.
fn keep(top: &mut Top, n: usize, entry: (std::cmp::Reverse<u64>, String)) {
    top.insert(entry);
    if top.len() > n {
        top.pop_last();
    }
}

/// Adds the best `n` words of the part file `part` to `top`. A line's word is read only
/// when its count can make the list.
fn top_of_part(part: &Path, n: usize, top: &mut Top) -> io::Result<()> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what} in a line", part.display()));
    let text = std::fs::read(part)?;
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', &text).chain((text.last() != Some(&b'\n')).then_some(text.len())) {
        let line = &text[start..end];
        start = end + 1;
        if line.is_empty() {
            continue;
        }
        let tab = memchr::memrchr(b'\t', line).ok_or_else(|| bad("no tab"))?;
        let count = parse_count(&line[tab + 1..]).ok_or_else(|| bad("bad count"))?;
        let worst = top.last().map(|(c, _)| c.0);
        if top.len() < n || worst.is_some_and(|w| count >= w) {
            keep(top, n, (std::cmp::Reverse(count), String::from_utf8_lossy(&line[..tab]).into_owned()));
        }
    }
    Ok(())
}

/// A count's decimal digits as a `u64`; `None` if they are not all digits, there are none,
/// or the number is too large.
fn parse_count(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

/// Sorts the records of `inputs` in this thread, in memory, into `output`: the reference
/// the distributed job must equal, written as well as we can (one read, a bucket pass on
/// the first two key bytes over 16-byte sort entries, cache-sized sorts, one gather
/// writing through a buffer). Returns the number of records.
pub fn sort_sequential(inputs: &[impl AsRef<Path>], output: &Path) -> io::Result<u64> {
    let mut data = Vec::new();
    for input in inputs {
        File::open(input)?.read_to_end(&mut data)?;
    }
    let bad = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
    if data.len() % RECORD_LEN != 0 {
        return Err(bad(format!("input is {} bytes, not a multiple of {RECORD_LEN}", data.len())));
    }
    let n = data.len() / RECORD_LEN;
    if n >= 1 << 48 {
        return Err(bad(format!("{n} records is too many for 48-bit record numbers")));
    }
    // One entry per record: the key's 80 bits above the record's 48-bit number, so entries
    // compare as keys do, with ties in input order.
    let entry = |i: usize| {
        let r = &data[i * RECORD_LEN..(i + 1) * RECORD_LEN];
        let mut k = [0u8; 16];
        k[..KEY_LEN].copy_from_slice(&r[..KEY_LEN]);
        u128::from_be_bytes(k) | i as u128
    };
    if let Some(i) = (0..n).find(|&i| data[i * RECORD_LEN + RECORD_LEN - 1] != b'\n') {
        return Err(bad(format!("record {i} does not end with a newline")));
    }
    // Bucket pass on the top 16 key bits: counts, then a scatter.
    let bucket = |e: u128| (e >> 112) as usize;
    let mut starts = vec![0usize; (1 << 16) + 1];
    for i in 0..n {
        starts[bucket(entry(i)) + 1] += 1;
    }
    for b in 1..starts.len() {
        starts[b] += starts[b - 1];
    }
    let mut entries = vec![0u128; n];
    let mut next = starts.clone();
    for i in 0..n {
        let e = entry(i);
        let b = bucket(e);
        entries[next[b]] = e;
        next[b] += 1;
    }
    drop(next);
    for w in starts.windows(2) {
        entries[w[0]..w[1]].sort_unstable();
    }
    let record = |e: u128| {
        let i = (e & ((1 << 48) - 1)) as usize;
        &data[i * RECORD_LEN..(i + 1) * RECORD_LEN]
    };
    // Equal keys: order their run by payload.
    let mut i = 0;
    while i < n {
        let key = entries[i] >> 48;
        let mut j = i + 1;
        while j < n && entries[j] >> 48 == key {
            j += 1;
        }
        if j - i > 1 {
            entries[i..j].sort_by(|a, b| record(*a).cmp(record(*b)));
        }
        i = j;
    }
    let mut out = BufWriter::with_capacity(4 << 20, File::create(output)?);
    for &e in &entries {
        out.write_all(record(e))?;
    }
    out.flush()?;
    Ok(n as u64)
}

/// Whether the `part-*` files of `dir`, concatenated in order, equal the file `expected`
/// byte for byte. Streams both, so it holds no file in memory.
pub fn output_equals(dir: &Path, expected: &Path) -> io::Result<bool> {
    let mut want = BufReader::with_capacity(1 << 20, File::open(expected)?);
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    for part in output_parts(dir)? {
        let mut got = BufReader::with_capacity(1 << 20, File::open(part)?);
        loop {
            let n = read_full(&mut got, &mut a)?;
            if n == 0 {
                break;
            }
            if read_full(&mut want, &mut b[..n])? != n || a[..n] != b[..n] {
                return Ok(false);
            }
        }
    }
    Ok(read_full(&mut want, &mut b[..1])? == 0)
}

/// Reads until `buf` is full or the reader ends; the number of bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(got) => n += got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
