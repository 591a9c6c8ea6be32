//! The gRPC shuffle against the shared filesystem, in the same run: the word count and
//! the sort on two `Cluster::local(2)`s, one reading map output from the job's work
//! directory and one (`with_worker_shuffle`) keeping it on the worker that wrote it and
//! fetching it over loopback gRPC (a reduce's own ranges read from disk).
//!
//! ```text
//! cargo bench --bench shuffle -- [--wordcount-mb 256] [--sort-mb 1024] [--runs 3]
//! ```
//!
//! Per job, the two clusters run alternately, `--runs` times each after one untimed run
//! of each, whose outputs must be equal. Prints the median of each and their ratio (and
//! the spread of the per-run ratios); the target is worker shuffle within 15%.

#![allow(clippy::print_stdout)] // a benchmark: printing is its job

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use common::{median, ratio_summary};
use mapreduce::{Cluster, JobSpec};
use mapreduce_examples::corpus::{generate_corpus, generate_records};
use mapreduce_examples::sort::{RECORD_LEN, Sort};
use mapreduce_examples::wordcount::WordCount;

struct Args {
    wordcount_mb: u64,
    sort_mb: u64,
    runs: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args { wordcount_mb: 256, sort_mb: 1024, runs: 3 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bench" => {}
            "--wordcount-mb" => a.wordcount_mb = value()?.parse().context("--wordcount-mb")?,
            "--sort-mb" => a.sort_mb = value()?.parse().context("--sort-mb")?,
            "--runs" => a.runs = value()?.parse().context("--runs")?,
            _ => anyhow::bail!("unknown flag {flag}: [--wordcount-mb N] [--sort-mb N] [--runs N] (0 MiB skips a job)"),
        }
    }
    ensure!(a.runs > 0, "--runs must be positive");
    Ok(a)
}

/// Which job a run is of.
#[derive(Clone, Copy)]
enum Which {
    WordCount,
    Sort,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let dir = tempfile::tempdir()?;
    let shared = Cluster::local(2).await?;
    let grpc = Cluster::local(2).await?.with_worker_shuffle(true);
    if a.wordcount_mb > 0 {
        let input = dir.path().join("corpus.txt");
        generate_corpus(&input, a.wordcount_mb << 20, 200_000, 2024)?;
        println!("wordcount of {} MiB, 2 workers, 2 reducers, {} runs", a.wordcount_mb, a.runs);
        compare(&a, dir.path(), &shared, &grpc, Which::WordCount, &input).await?;
    }
    if a.sort_mb > 0 {
        let input = dir.path().join("records.txt");
        generate_records(&input, (a.sort_mb << 20) / RECORD_LEN as u64, 2024)?;
        println!("sort of {} MiB of {RECORD_LEN}-byte records, 2 workers, 4 reducers, {} runs", a.sort_mb, a.runs);
        compare(&a, dir.path(), &shared, &grpc, Which::Sort, &input).await?;
    }
    Ok(())
}

/// Runs `which` of `input` on both clusters alternately and prints the comparison.
async fn compare(
    a: &Args,
    dir: &Path,
    shared: &Cluster,
    grpc: &Cluster,
    which: Which,
    input: &Path,
) -> anyhow::Result<()> {
    let first_shared = run(shared, which, input, &dir.join("check-shared")).await?;
    let first_grpc = run(grpc, which, input, &dir.join("check-grpc")).await?;
    ensure!(parts(&dir.join("check-shared"))? == parts(&dir.join("check-grpc"))?, "the two outputs differ");
    for out in ["check-shared", "check-grpc"] {
        std::fs::remove_dir_all(dir.join(out))?;
    }
    println!(
        "  untimed first runs: shared {:.3} s, worker shuffle {:.3} s",
        first_shared.as_secs_f64(),
        first_grpc.as_secs_f64()
    );
    let (mut s_times, mut g_times, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..a.runs {
        let out = dir.join(format!("out-{i}"));
        let s = run(shared, which, input, &out).await?;
        std::fs::remove_dir_all(&out)?;
        let g = run(grpc, which, input, &out).await?;
        std::fs::remove_dir_all(&out)?;
        ratios.push(s.as_secs_f64() / g.as_secs_f64());
        s_times.push(s);
        g_times.push(g);
    }
    let (s, g) = (median(s_times), median(g_times));
    println!("  shared filesystem: {:>7.3} s", s.as_secs_f64());
    println!("  worker shuffle:    {:>7.3} s", g.as_secs_f64());
    println!("  shared / worker shuffle: {}", ratio_summary(s, g, ratios));
    Ok(())
}

async fn run(cluster: &Cluster, which: Which, input: &Path, out: &Path) -> anyhow::Result<Duration> {
    let t = Instant::now();
    match which {
        Which::WordCount => {
            cluster.run(JobSpec::new(WordCount, [input], out).reducers(2)).await?;
        }
        Which::Sort => {
            let inputs = [input.to_path_buf()];
            let job = Sort::sampled(&inputs, 4, 10_000)?;
            cluster.run(JobSpec::new(job, &inputs, out).reducers(4)).await?;
        }
    }
    Ok(t.elapsed())
}

/// The part files of an output directory, by name, with their bytes.
fn parts(out: &Path) -> anyhow::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(out)? {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("part-")) {
            files.push((PathBuf::from(path.file_name().unwrap()), std::fs::read(&path)?));
        }
    }
    files.sort();
    Ok(files)
}
