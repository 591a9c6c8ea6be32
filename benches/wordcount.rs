//! Word count through `Cluster::local(2)` beside a tuned single-threaded word count (and a
//! plain `FxHashMap` one, for reference) of the same generated corpus, in the same run.
//!
//! ```text
//! cargo bench --bench wordcount -- [--size-mb N] [--runs N] [--workers N]
//! ```
//! Prints the median time of each, their ratio, MB/s and the process's peak RSS.

#![allow(clippy::print_stdout)] // a command-line program: printing is its job

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{median, peak_rss_mb, reset_peak_rss};
use mapreduce::wordcount::{WordCount, count_sequential, count_tuned, generate_corpus, read_output};
use mapreduce::{Cluster, JobSpec};

struct Args {
    size_mb: u64,
    runs: usize,
    workers: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args { size_mb: 256, runs: 3, workers: 2 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow::anyhow!("{arg} needs a value"));
        match arg.as_str() {
            "--size-mb" => a.size_mb = value()?.parse()?,
            "--runs" => a.runs = value()?.parse()?,
            "--workers" => a.workers = value()?.parse()?,
            "--bench" => {}
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("corpus.txt");
    generate_corpus(&input, a.size_mb << 20, 200_000, 2024)?;
    let bytes = std::fs::metadata(&input)?.len();
    let inputs: Vec<PathBuf> = vec![input.clone()];
    println!("wordcount bench: {:.0} MiB corpus, 200k-word Zipf vocabulary, {} runs", bytes as f64 / 1048576.0, a.runs);

    // The baseline: the tuned single-threaded count, writing the same output (sorted
    // `word<TAB>count` lines) as the job; and, for reference, a plain FxHashMap count.
    let mut seq_times = Vec::new();
    let mut plain_times = Vec::new();
    let mut expected = None;
    for run in 0..a.runs {
        let t = Instant::now();
        let mut counts = count_tuned(&inputs)?;
        counts.sort_unstable();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.path().join("seq.txt"))?);
        for (w, c) in &counts {
            writeln!(out, "{w}\t{c}")?;
        }
        out.flush()?;
        seq_times.push(t.elapsed());
        let t = Instant::now();
        let plain = count_sequential(&inputs)?;
        plain_times.push(t.elapsed());
        if run == 0 {
            anyhow::ensure!(counts.iter().cloned().collect::<BTreeMap<_, _>>() == plain, "tuned count differs");
            expected = Some(plain);
        }
    }

    let seq_rss = peak_rss_mb();
    // Reset the peak, so the cluster runs report their own (Linux 4.0+).
    let reset = reset_peak_rss();
    let cluster = Cluster::local(a.workers).await?;
    let mut mr_times = Vec::new();
    for run in 0..a.runs {
        let out = dir.path().join(format!("out-{run}"));
        let t = Instant::now();
        cluster.run(JobSpec::new(WordCount, &inputs, &out).reducers(a.workers as u32)).await?;
        mr_times.push(t.elapsed());
        if run == 0 {
            anyhow::ensure!(Some(read_output(&out)?) == expected, "framework output differs from the sequential count");
        }
        std::fs::remove_dir_all(&out)?;
    }

    let (seq, plain, mr) = (median(seq_times), median(plain_times), median(mr_times));
    let mbs = |d: Duration| bytes as f64 / 1048576.0 / d.as_secs_f64();
    println!("sequential, tuned (1 thread): {:>8.3} s  {:>7.1} MB/s", seq.as_secs_f64(), mbs(seq));
    println!("sequential, FxHashMap:        {:>8.3} s  {:>7.1} MB/s", plain.as_secs_f64(), mbs(plain));
    println!("Cluster::local({}):            {:>8.3} s  {:>7.1} MB/s", a.workers, mr.as_secs_f64(), mbs(mr));
    println!("speedup (tuned sequential / cluster): {:.2}x", seq.as_secs_f64() / mr.as_secs_f64());
    if let (Some(seq), Some(mr)) = (seq_rss, peak_rss_mb()) {
        let scope = if reset { "in the cluster runs (master and workers)" } else { "of the whole process" };
        println!("peak RSS: {seq:.0} MiB in the sequential runs, {mr:.0} MiB {scope}");
    }
    Ok(())
}
