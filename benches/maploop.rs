//! One map task's loop alone, beside the single thread's count of the same file: the word
//! count's tokenizer and `MapBuffer` (`queue_str`, `flush`), over a file read in 1 MiB
//! blocks cut at line ends, as a worker reads its shard; against `count_tuned` (which also
//! reads, validates and builds its sorted output). For instruction and cache-miss counts
//! where timings are too noisy to tell a few percent, run one side under cachegrind:
//!
//! ```text
//! cargo bench --bench maploop -- --input FILE [--rounds 5]         # both, alternating
//! valgrind --tool=cachegrind --cache-sim=yes --LL=16777216,16,64 \
//!     target/release/deps/maploop-HASH --input FILE --only ours     # or --only baseline
//! ```
//! (`--LL=16777216,16,64` models half of a 32 MiB L3, as two workers share it.)
//!
//! `--only drain` times what a map task does after its loop instead: the buffer's sorted
//! drain into two partitions, each record encoded into LZ4 blocks as the task writes its
//! output (the buffer filled again, untimed, before each round).

#![allow(clippy::print_stdout)] // a command-line program: printing is its job

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use mapreduce_core::shuffle::buffer::MapBuffer;
use mapreduce_core::shuffle::record::RecordWriter;
use mapreduce_core::{Compression, stable_partition};
use mapreduce_examples::baseline::count_tuned;
use mapreduce_examples::wordcount::{Word, for_each_word};

/// The blocks the file is read in.
const BLOCK: usize = 1 << 20;

fn sum(_: &Word, acc: &mut u64, v: u64) -> Option<u64> {
    *acc += v;
    None
}

/// The map loop over `path`: the buffer it leaves, not drained.
fn map_loop(path: &Path) -> anyhow::Result<MapBuffer<Word, u64>> {
    let mut file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut buf = vec![0u8; BLOCK];
    let (mut kept, mut b) = (0, MapBuffer::<Word, u64>::with_budget(mapreduce_core::DEFAULT_SORT_BUFFER));
    loop {
        if kept == buf.len() {
            buf.resize(2 * buf.len(), 0); // a line longer than the block
        }
        let n = file.read(&mut buf[kept..])?;
        let filled = kept + n;
        let cut = match n {
            0 => filled,
            _ => buf[..filled].iter().rposition(|&c| c == b'\n').map_or(0, |p| p + 1),
        };
        // Validated as the worker's reader does (`mapreduce_core::shard::lines`).
        let text =
            simdutf8::basic::from_utf8(&buf[..cut]).map_err(|_| anyhow::anyhow!("{}: not UTF-8", path.display()))?;
        for_each_word(text, |w| {
            if b.queue_str(text, w, 1) {
                b.flush(sum);
            }
        });
        buf.copy_within(cut..filled, 0);
        kept = filled - cut;
        if n == 0 {
            break;
        }
    }
    b.flush(sum);
    Ok(b)
}

/// The map task's end: drains `b` sorted into two partitions and encodes every record;
/// returns the records and the encoded bytes.
fn drain(b: &mut MapBuffer<Word, u64>) -> anyhow::Result<(u64, u64)> {
    let mut out = Vec::new();
    let mut writers = Vec::new();
    let mut w = RecordWriter::with_compression(&mut out, Compression::Lz4)?;
    let mut part = 0;
    for (p, k, v) in b.drain_sorted_iter(sum, |k| stable_partition(k, 2)) {
        if p != part {
            writers.push(w.finish()?.1);
            w = RecordWriter::with_compression(&mut out, Compression::Lz4)?;
            part = p;
        }
        w.write(&k, &v)?;
    }
    writers.push(w.finish()?.1);
    Ok((writers.iter().sum(), out.len() as u64))
}

fn main() -> anyhow::Result<()> {
    let (mut input, mut rounds, mut only) = (None, 5usize, None);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow::anyhow!("{arg} needs a value"));
        match arg.as_str() {
            "--input" => input = Some(PathBuf::from(value()?)),
            "--rounds" => rounds = value()?.parse()?,
            "--only" => only = Some(value()?),
            "--bench" => {}
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let input = input.context("--input FILE: the text to count")?;
    anyhow::ensure!(rounds > 0, "--rounds must be at least 1");
    let ours = || -> anyhow::Result<usize> { Ok(map_loop(&input)?.records_in() as usize) };
    let baseline = || -> anyhow::Result<usize> { Ok(count_tuned(std::slice::from_ref(&input))?.len()) };
    let time = |f: &dyn Fn() -> anyhow::Result<usize>| -> anyhow::Result<(f64, usize)> {
        let t = Instant::now();
        let n = f()?;
        Ok((t.elapsed().as_secs_f64(), n))
    };
    match only.as_deref() {
        Some("ours") => {
            let (t, words) = time(&ours)?;
            println!("map loop: {t:.3} s, {words} words");
        }
        Some("baseline") => {
            let (t, distinct) = time(&baseline)?;
            println!("count_tuned: {t:.3} s, {distinct} distinct words");
        }
        Some("drain") => {
            let mut times = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let mut b = map_loop(&input)?;
                let t = Instant::now();
                let (records, bytes) = drain(&mut b)?;
                times.push(t.elapsed().as_secs_f64());
                println!("drain: {:.3} s, {records} records, {bytes} bytes", times[times.len() - 1]);
            }
            times.sort_by(f64::total_cmp);
            println!("drain: min {:.3} s, median {:.3} s", times[0], times[times.len() / 2]);
        }
        Some(other) => anyhow::bail!("--only ours|baseline|drain, not {other}"),
        None => {
            // Untimed, checked: the same distinct words.
            let a = map_loop(&input)?.drain_sorted(sum, |_| 0).len();
            let b = baseline()?;
            anyhow::ensure!(a == b, "the map loop holds {a} distinct words, the baseline {b}");
            let (mut mine, mut theirs) = (Vec::new(), Vec::new());
            for round in 0..rounds {
                if round % 2 == 0 {
                    mine.push(time(&ours)?.0);
                    theirs.push(time(&baseline)?.0);
                } else {
                    theirs.push(time(&baseline)?.0);
                    mine.push(time(&ours)?.0);
                }
            }
            mine.sort_by(f64::total_cmp);
            theirs.sort_by(f64::total_cmp);
            let median = |v: &[f64]| v[v.len() / 2];
            println!("{} distinct words, {rounds} alternating rounds", a);
            println!("map loop:    min {:.3} s, median {:.3} s", mine[0], median(&mine));
            println!("count_tuned: min {:.3} s, median {:.3} s", theirs[0], median(&theirs));
            println!("ratio of the medians (count_tuned / map loop): {:.2}x", median(&theirs) / median(&mine));
        }
    }
    Ok(())
}
