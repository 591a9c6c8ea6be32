//! A range-partitioned distributed sort through `Cluster::local(2)` beside a
//! single-threaded in-memory sort of the same generated 100-byte records, in the same run.
//!
//! ```text
//! cargo bench --bench sort -- [--size-mb N] [--runs N] [--workers N] [--reducers N]
//!                             [--samples N] [--shard-mb N] [--sort-buffer-mb N]
//!                             [--compression none|lz4] [--worker-shuffle]
//! ```
//! The two run alternately, `--runs` times each after one untimed run of each (which
//! checks the output and measures each one's peak RSS). Prints the median time of each
//! (reading the input and writing the sorted output included; the framework's time
//! includes sampling the boundaries), their ratio and the spread of the per-run ratios,
//! MB/s, CPU time and the process's peak RSS during each part.

#![allow(clippy::print_stdout)] // a command-line program: printing is its job

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{median, peak_rss_mb, ratio_summary, reset_peak_rss, steal_time};
use mapreduce::{Cluster, Compression, DEFAULT_SHARD_SIZE, DEFAULT_SORT_BUFFER, JobSpec};
use mapreduce_examples::corpus::generate_records;
use mapreduce_examples::reference::{output_equals, sort_sequential};
use mapreduce_examples::sort::{RECORD_LEN, Sort};

struct Args {
    size_mb: u64,
    runs: usize,
    workers: usize,
    reducers: u32,
    samples: usize,
    shard_size: u64,
    sort_buffer: u64,
    compression: Compression,
    /// Map output stays on its worker and reduces fetch it over gRPC.
    worker_shuffle: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        size_mb: 1024,
        runs: 3,
        workers: 2,
        reducers: 4,
        samples: 10_000,
        shard_size: DEFAULT_SHARD_SIZE,
        sort_buffer: DEFAULT_SORT_BUFFER,
        compression: Compression::default(),
        worker_shuffle: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow::anyhow!("{arg} needs a value"));
        match arg.as_str() {
            "--size-mb" => a.size_mb = value()?.parse()?,
            "--runs" => a.runs = value()?.parse()?,
            "--workers" => a.workers = value()?.parse()?,
            "--reducers" => a.reducers = value()?.parse()?,
            "--samples" => a.samples = value()?.parse()?,
            "--shard-mb" => a.shard_size = value()?.parse::<u64>()? << 20,
            "--sort-buffer-mb" => a.sort_buffer = value()?.parse::<u64>()? << 20,
            "--compression" => a.compression = value()?.parse().map_err(anyhow::Error::msg)?,
            "--worker-shuffle" => a.worker_shuffle = true,
            "--bench" => {}
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    anyhow::ensure!(a.runs > 0, "--runs must be at least 1");
    Ok(a)
}

/// CPU time (user + system, all threads) of this process so far, from `/proc/self/stat`
/// (in clock ticks, assumed to be the usual 100 per second).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("records.txt");
    generate_records(&input, (a.size_mb << 20) / RECORD_LEN as u64, 2024)?;
    let bytes = std::fs::metadata(&input)?.len();
    let inputs: Vec<PathBuf> = vec![input.clone()];
    println!(
        "sort bench: {:.0} MiB of {RECORD_LEN}-byte records, {} reducers, shard {} MiB, sort buffer {} MiB, \
         compression {}, {} runs",
        bytes as f64 / 1048576.0,
        a.reducers,
        a.shard_size >> 20,
        a.sort_buffer >> 20,
        a.compression,
        a.runs
    );

    let expected = dir.path().join("expected.txt");
    let seq_run = || -> anyhow::Result<(Duration, Option<Duration>)> {
        let (t, cpu) = (Instant::now(), cpu_time());
        sort_sequential(&inputs, &expected)?;
        Ok((t.elapsed(), cpu.zip(cpu_time()).map(|(before, after)| after - before)))
    };
    let cluster = Cluster::local(a.workers).await?.with_worker_shuffle(a.worker_shuffle);
    let mr_run = async |run: usize| -> anyhow::Result<(Duration, Option<Duration>)> {
        let out = dir.path().join(format!("out-{run}"));
        let (t, cpu) = (Instant::now(), cpu_time());
        let job = Sort::sampled(&inputs, a.reducers, a.samples)?;
        let spec = JobSpec::new(job, &inputs, &out)
            .reducers(a.reducers)
            .shard_size(a.shard_size)
            .sort_buffer_bytes(a.sort_buffer)
            .compression(a.compression);
        cluster.run(spec).await?;
        let took = (t.elapsed(), cpu.zip(cpu_time()).map(|(before, after)| after - before));
        if run == 0 {
            anyhow::ensure!(output_equals(&out, &expected)?, "framework output differs from the sequential sort");
        }
        std::fs::remove_dir_all(&out)?;
        Ok(took)
    };

    // One untimed run of each, checking the output and measuring each one's peak RSS
    // alone (the peak is reset between them, Linux 4.0+).
    let per_phase = reset_peak_rss();
    seq_run()?;
    let seq_rss = peak_rss_mb();
    reset_peak_rss();
    mr_run(0).await?;
    let mr_rss = peak_rss_mb();

    // The timed runs, alternating, so that a noisy moment of this shared machine weighs
    // on both sides alike.
    let (mut seq_times, mut mr_times, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut seq_cpu, mut mr_cpu) = (Some(Duration::ZERO), Some(Duration::ZERO));
    let (mut seq_steal, mut mr_steal) = (Some(Duration::ZERO), Some(Duration::ZERO));
    let add = |sum: &mut Option<Duration>, before: Option<Duration>, after: Option<Duration>| {
        *sum = sum.zip(before.zip(after)).map(|(s, (b, a))| s + a.saturating_sub(b));
    };
    for run in 1..=a.runs {
        let stolen = steal_time();
        let (seq, cpu) = seq_run()?;
        add(&mut seq_steal, stolen, steal_time());
        seq_cpu = seq_cpu.zip(cpu).map(|(sum, c)| sum + c);
        let stolen = steal_time();
        let (mr, cpu) = mr_run(run).await?;
        add(&mut mr_steal, stolen, steal_time());
        mr_cpu = mr_cpu.zip(cpu).map(|(sum, c)| sum + c);
        ratios.push(seq.as_secs_f64() / mr.as_secs_f64());
        seq_times.push(seq);
        mr_times.push(mr);
    }

    let (seq, mr) = (median(seq_times), median(mr_times));
    let mbs = |d: Duration| bytes as f64 / 1048576.0 / d.as_secs_f64();
    let cpu = |c: Option<Duration>| match c {
        Some(c) => format!("  {:>7.3} s CPU per run", c.as_secs_f64() / a.runs as f64),
        None => String::new(),
    };
    println!("sequential (1 thread):      {:>8.3} s  {:>7.1} MB/s{}", seq.as_secs_f64(), mbs(seq), cpu(seq_cpu));
    println!(
        "Cluster::local({}):          {:>8.3} s  {:>7.1} MB/s{}",
        a.workers,
        mr.as_secs_f64(),
        mbs(mr),
        cpu(mr_cpu)
    );
    println!("ratio (sequential / cluster): {}", ratio_summary(seq, mr, ratios));
    if let (Some(s), Some(m)) = (seq_steal, mr_steal) {
        let per_run = |d: Duration| d.as_secs_f64() / a.runs as f64;
        println!(
            "steal (the hypervisor running others on our CPUs) per run: sequential {:.3} s, cluster {:.3} s",
            per_run(s),
            per_run(m)
        );
    }
    match (per_phase, seq_rss, mr_rss) {
        (true, Some(seq), Some(mr)) => {
            println!("peak RSS of this process: {seq:.0} MiB in the sequential sort, {mr:.0} MiB in the cluster runs");
        }
        (_, _, Some(rss)) => println!("peak RSS of this process: {rss:.0} MiB"),
        _ => {}
    }
    Ok(())
}
