//! Word count through `Cluster::local(2)` beside a tuned single-threaded word count (and a
//! plain `FxHashMap` one, for reference) of the same generated corpus, in the same run.
//!
//! ```text
//! cargo bench --bench wordcount -- [--size-mb N] [--runs N] [--workers N] [--compression none|lz4] [--worker-shuffle]
//! ```
//! The tuned count and the cluster run alternately, `--runs` times each after one untimed
//! run of each (which checks the output); the plain count runs once. Prints the median
//! time of each, their ratio (and the spread of the per-run ratios), MB/s and the peak
//! RSS of each part.

#![allow(clippy::print_stdout)] // a command-line program: printing is its job

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{median, peak_rss_mb, ratio_summary, read_counts, reset_peak_rss};
use mapreduce::{Cluster, Compression, JobSpec};
use mapreduce_examples::baseline::count_tuned_to;
use mapreduce_examples::corpus::generate_corpus;
use mapreduce_examples::reference::{count_sequential, read_output};
use mapreduce_examples::wordcount::WordCount;

struct Args {
    size_mb: u64,
    runs: usize,
    workers: usize,
    compression: Compression,
    /// Map output stays on its worker and reduces fetch it over gRPC.
    worker_shuffle: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args { size_mb: 256, runs: 3, workers: 2, compression: Compression::default(), worker_shuffle: false };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow::anyhow!("{arg} needs a value"));
        match arg.as_str() {
            "--size-mb" => a.size_mb = value()?.parse()?,
            "--runs" => a.runs = value()?.parse()?,
            "--workers" => a.workers = value()?.parse()?,
            "--compression" => a.compression = value()?.parse().map_err(anyhow::Error::msg)?,
            "--worker-shuffle" => a.worker_shuffle = true,
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

    // The reference: a plain FxHashMap count (reads the whole file), run once; it also
    // gives the expected output.
    let t = Instant::now();
    let expected = count_sequential(&inputs)?;
    let plain = t.elapsed();
    let plain_rss = peak_rss_mb();

    // The baseline: the tuned single-threaded count, writing the same output (sorted
    // `word<TAB>count` lines) as the job.
    let seq_path = dir.path().join("seq.txt");
    let tuned = || -> anyhow::Result<Duration> {
        let t = Instant::now();
        count_tuned_to(&inputs, &seq_path)?;
        Ok(t.elapsed())
    };
    let cluster = Cluster::local(a.workers).await?.with_worker_shuffle(a.worker_shuffle);
    let run_cluster = async |run: usize| -> anyhow::Result<Duration> {
        let out = dir.path().join(format!("out-{run}"));
        let t = Instant::now();
        let spec = JobSpec::new(WordCount, &inputs, &out).reducers(a.workers as u32).compression(a.compression);
        cluster.run(spec).await?;
        let elapsed = t.elapsed();
        if run == 0 {
            anyhow::ensure!(read_output(&out)? == expected, "framework output differs from the sequential count");
        }
        std::fs::remove_dir_all(&out)?;
        Ok(elapsed)
    };

    // One untimed run of each, checking the output and measuring its peak RSS alone
    // (the peak is reset between them, Linux 4.0+).
    let reset = reset_peak_rss();
    tuned()?;
    anyhow::ensure!(read_counts(&seq_path)? == expected, "tuned count differs");
    let seq_rss = peak_rss_mb();
    reset_peak_rss();
    run_cluster(0).await?;
    let mr_rss = peak_rss_mb();

    // The timed runs, alternating, so that a noisy moment of this shared machine weighs
    // on both sides alike.
    let (mut seq_times, mut mr_times, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=a.runs {
        let seq = tuned()?;
        let mr = run_cluster(run).await?;
        ratios.push(seq.as_secs_f64() / mr.as_secs_f64());
        seq_times.push(seq);
        mr_times.push(mr);
    }

    let (seq, mr) = (median(seq_times), median(mr_times));
    let mbs = |d: Duration| bytes as f64 / 1048576.0 / d.as_secs_f64();
    println!("sequential, tuned (1 thread): {:>8.3} s  {:>7.1} MB/s", seq.as_secs_f64(), mbs(seq));
    println!("sequential, FxHashMap (once): {:>8.3} s  {:>7.1} MB/s", plain.as_secs_f64(), mbs(plain));
    println!("Cluster::local({}):            {:>8.3} s  {:>7.1} MB/s", a.workers, mr.as_secs_f64(), mbs(mr));
    println!("speedup (tuned sequential / cluster): {}", ratio_summary(seq, mr, ratios));
    println!("tuned / FxHashMap count: {:.2}x", plain.as_secs_f64() / seq.as_secs_f64());
    if let (Some(plain), Some(seq), Some(mr)) = (plain_rss, seq_rss, mr_rss) {
        match reset {
            true => println!(
                "peak RSS: {plain:.0} MiB in the FxHashMap count, {seq:.0} MiB in the tuned count, \
                 {mr:.0} MiB in a cluster run (master and workers)"
            ),
            false => println!("peak RSS of the whole process: {mr:.0} MiB"),
        }
    }
    Ok(())
}
