//! Word count timed as a user times it: the whole `wordcount run --workers 2 --reducers 2`
//! process, from start to exit, against the best single-threaded count of the same file,
//! also a whole process (this binary, `--count`), on three kinds of corpus:
//!
//! - `bench`: the word count bench's corpus (Zipf over a mixed-script vocabulary);
//! - `english`: English-like text, a Zipf over Debian's `wamerican-huge` word list
//!   (`/usr/share/dict/american-english-huge`; made-up English words where it is not
//!   installed), sentences capitalized;
//! - `real`: real documents found on the machine: `/usr/share/doc` and `/usr/share/man`,
//!   gzipped ones decompressed, concatenated (again, if they are fewer bytes than asked).
//!
//! ```text
//! cargo build --release --example wordcount
//! cargo bench --bench process -- [--size-mb 256] [--runs 3] [--corpus bench,english,real] [--keep DIR]
//! ```
//! Each corpus: one untimed run of each contender (the outputs must be equal), then
//! `--runs` rounds, the two in turn (alternating who goes first); the best time of each,
//! and the median and range of each round's own ratio.
//! `process --compare FILE...` times the baseline in process beside a plain
//! `FxHashMap<&str, u64>` count over the whole file read at once.

#![allow(clippy::print_stdout)] // a command-line program: printing is its job

#[path = "common/mod.rs"]
mod common;

use common::{read_counts, stolen_during};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use mapreduce_examples::baseline::{count_tuned, count_tuned_to};
use mapreduce_examples::corpus::{DICTIONARY, gather_documents, generate_corpus, generate_english};
use mapreduce_examples::reference::read_output;

struct Args {
    size_mb: u64,
    runs: usize,
    corpora: Vec<String>,
    keep: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut a =
        Args { size_mb: 256, runs: 3, corpora: vec!["bench".into(), "english".into(), "real".into()], keep: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow::anyhow!("{arg} needs a value"));
        match arg.as_str() {
            "--size-mb" => a.size_mb = value()?.parse()?,
            "--runs" => a.runs = value()?.parse()?,
            "--corpus" => a.corpora = value()?.split(',').map(String::from).collect(),
            "--keep" => a.keep = Some(value()?.into()),
            "--bench" => {}
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    anyhow::ensure!(a.runs > 0, "--runs must be at least 1");
    Ok(a)
}

/// `--count OUT FILE...`: the baseline as a process: counts, sorts, and writes
/// `word<TAB>count` lines to `OUT`, as the job writes its output.
fn count_process(mut args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let out = PathBuf::from(args.next().context("--count OUT FILE...")?);
    let files: Vec<PathBuf> = args.map(PathBuf::from).collect();
    count_tuned_to(&files, &out)?;
    Ok(())
}

/// Runs `cmd` to its exit; its wall time.
/// Runs `cmd` to its exit: how long it took, and the steal time meanwhile.
fn timed(cmd: &mut Command) -> anyhow::Result<(Duration, Duration)> {
    let start = Instant::now();
    let (out, stolen) = stolen_during(|| cmd.output());
    let (out, took) = (out?, start.elapsed());
    anyhow::ensure!(out.status.success(), "{cmd:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    Ok((took, stolen.unwrap_or_default()))
}

/// The best time of some runs, and the steal time over all of them.
#[derive(Clone, Copy)]
struct Best {
    time: Duration,
    stolen: Duration,
}

impl Best {
    fn add(&mut self, (time, stolen): (Duration, Duration)) {
        self.time = self.time.min(time);
        self.stolen += stolen;
    }
}

fn main() -> anyhow::Result<()> {
    let mut raw = std::env::args().skip(1);
    match raw.next().as_deref() {
        Some("--count") => return count_process(raw),
        Some("--compare") => {
            let files: Vec<PathBuf> = raw.map(PathBuf::from).collect();
            for _ in 0..3 {
                let t = Instant::now();
                let a = count_tuned(&files)?.len();
                let tuned = t.elapsed();
                let t = Instant::now();
                let b = count_simple(&files)?.len();
                println!("tuned {tuned:?} ({a}), simple {:?} ({b})", t.elapsed());
            }
            return Ok(());
        }
        _ => {}
    }
    let a = args()?;
    let me = std::env::current_exe()?;
    let wordcount = me.parent().and_then(Path::parent).context("target dir")?.join("examples/wordcount");
    anyhow::ensure!(
        wordcount.exists(),
        "{} is missing: cargo build --release --example wordcount",
        wordcount.display()
    );
    let scratch = tempfile::tempdir()?;
    let dir = a.keep.clone().unwrap_or_else(|| scratch.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let bytes = a.size_mb << 20;
    println!("whole processes, {} MiB per corpus, best of {} rounds", a.size_mb, a.runs);
    println!(
        "| corpus | distinct words | best single thread | mapreduce-rs, whole process | ratio | per round: median (range) | steal per run |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for corpus in &a.corpora {
        let input = dir.join(format!("{corpus}.txt"));
        if !input.exists() || std::fs::metadata(&input)?.len() < bytes {
            match corpus.as_str() {
                "bench" => generate_corpus(&input, bytes, 200_000, 42)?,
                "english" => {
                    let listed = generate_english(&input, bytes, Some(Path::new(DICTIONARY)), 7)?;
                    if !listed {
                        eprintln!("{DICTIONARY} not found: made-up English words instead");
                    }
                }
                "real" => {
                    let roots = [Path::new("/usr/share/doc"), Path::new("/usr/share/man")];
                    let g = gather_documents(&input, bytes, &roots)?;
                    eprintln!("real: {} documents, {} MiB unique", g.documents, g.unique_bytes >> 20);
                }
                other => anyhow::bail!("unknown corpus {other}"),
            }
        }
        let baseline_out = dir.join(format!("{corpus}.counts"));
        let job_out = dir.join(format!("{corpus}.out"));
        let baseline = || {
            let mut c = Command::new(&me);
            c.arg("--count").arg(&baseline_out).arg(&input);
            c
        };
        let job = || {
            let _ = std::fs::remove_dir_all(&job_out);
            let mut c = Command::new(&wordcount);
            c.args(["run", "--workers", "2", "--reducers", "2", "--input"]).arg(&input).arg("--output").arg(&job_out);
            c
        };
        // Untimed, checked.
        timed(&mut baseline())?;
        timed(&mut job())?;
        let want = read_counts(&baseline_out)?;
        let got = read_output(&job_out)?;
        anyhow::ensure!(got == want, "{corpus}: the job's output differs from the baseline's");
        let none = Best { time: Duration::MAX, stolen: Duration::ZERO };
        let (mut base, mut mr) = (none, none);
        // Each round's own ratio too: its two runs are next to each other in time, so a
        // slow minute weighs on both.
        let mut ratios = Vec::with_capacity(a.runs);
        for round in 0..a.runs {
            let (b, m) = if round % 2 == 0 {
                let b = timed(&mut baseline())?;
                (b, timed(&mut job())?)
            } else {
                let m = timed(&mut job())?;
                (timed(&mut baseline())?, m)
            };
            ratios.push(b.0.as_secs_f64() / m.0.as_secs_f64());
            base.add(b);
            mr.add(m);
        }
        ratios.sort_by(f64::total_cmp);
        let per_run = |b: Best| b.stolen.as_secs_f64() / a.runs as f64;
        println!(
            "| {corpus} | {} | {:.2} s | {:.2} s | **{:.2}x** | {:.2}x ({:.2}x-{:.2}x) | {:.2} s / {:.2} s |",
            want.len(),
            base.time.as_secs_f64(),
            mr.time.as_secs_f64(),
            base.time.as_secs_f64() / mr.time.as_secs_f64(),
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1],
            per_run(base),
            per_run(mr)
        );
    }
    Ok(())
}

/// Experiment: a simple count, whole file read once, `FxHashMap<&str, u64>` keyed by
/// slices of it.
#[allow(dead_code)]
pub(crate) fn count_simple(files: &[PathBuf]) -> anyhow::Result<Vec<(String, u64)>> {
    let mut all: Vec<(String, u64)> = Vec::new();
    for f in files {
        let bytes = std::fs::read(f)?;
        let text = String::from_utf8_lossy(&bytes);
        let mut map: rustc_hash::FxHashMap<&str, u64> = Default::default();
        mapreduce_examples::wordcount::for_each_word(&text, |w| *map.entry(w).or_default() += 1);
        all.extend(map.into_iter().map(|(w, n)| (w.to_string(), n)));
    }
    Ok(all)
}
