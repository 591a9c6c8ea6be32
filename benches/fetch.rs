//! The gRPC shuffle's own targets: how fast one `Fetch` stream moves a map output on
//! loopback, and whether a reduce's memory grows with the number of map outputs it
//! fetches.
//!
//! ```text
//! cargo bench --bench fetch -- --size-mb 1024 --runs 5
//! cargo bench --bench fetch -- --memory --size-mb 64
//! ```
//!
//! Stream: a worker (`Worker`, real gRPC on 127.0.0.1, its own work directory) holds one
//! map output file of `--size-mb`; the bench fetches the whole of it in one `Fetch` call
//! (1 MiB chunks) and counts the bytes, beside reading the same file from the page cache
//! in 1 MiB reads (the baseline: what a reduce reading a local range does). The two
//! alternate, after one untimed run of each.
//!
//! Memory (`--memory`): the word count of a `--size-mb` corpus with worker shuffle on
//! `Cluster::local(2)`, 2 reducers, in shards that make 16, 256 and 4,096 map outputs;
//! each run in a child process of its own, which prints its peak RSS (`VmHWM`), so that
//! one run's peak does not hide another's. Each reduce fetches one range of every map
//! output, merging at most the fan-in at once (in passes beyond it).

#![allow(clippy::print_stdout)] // a benchmark: printing is its job

#[path = "common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use common::{median, peak_rss_mb, ratio_summary};
use mapreduce::worker::{Registry, Worker};
use mapreduce::{Cluster, JobSpec};
use mapreduce_examples::corpus::{SplitMix64, generate_corpus};
use mapreduce_examples::reference::{count_sequential, read_output};
use mapreduce_examples::wordcount::WordCount;
use mapreduce_rpc::pb;

/// The job id the stream's map output is filed under (32 hex digits, as the master makes).
const JOB: &str = "0123456789abcdef0123456789abcdef";

struct Args {
    size_mb: u64,
    runs: usize,
    memory: bool,
    window_kib: u64,
    /// In a child of `--memory`: the corpus, and how many map outputs to make of it.
    child: Option<(PathBuf, u64)>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args { size_mb: 1024, runs: 5, memory: false, window_kib: 0, child: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bench" => {}
            "--size-mb" => a.size_mb = value()?.parse().context("--size-mb")?,
            "--runs" => a.runs = value()?.parse().context("--runs")?,
            "--memory" => a.memory = true,
            "--window-kib" => a.window_kib = value()?.parse().context("--window-kib")?,
            "--child" => {
                let corpus = PathBuf::from(value()?);
                let maps = value()?.parse().context("--child MAPS")?;
                a.child = Some((corpus, maps));
            }
            _ => bail!("unknown flag {flag}: [--size-mb N] [--runs N] [--memory]"),
        }
    }
    ensure!(a.size_mb > 0 && a.runs > 0, "--size-mb and --runs must be positive");
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let runtime = tokio::runtime::Runtime::new()?;
    match (&a.child, a.memory) {
        (Some((corpus, maps)), _) => runtime.block_on(child(corpus, *maps)),
        (None, true) => memory(&a),
        (None, false) => runtime.block_on(stream(&a)),
    }
}

/// One `Fetch` stream against reading the same file from the page cache.
async fn stream(a: &Args) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let worker = Worker::new(Registry::new()).with_work_dir(work.path());
    tokio::spawn(worker.serve_with_shutdown(listener, std::future::pending()));
    // HTTP/2 flow-control windows: `--window-kib` per stream (twice that per
    // connection), or 0 for the h2 defaults (64 KiB).
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true);
    if a.window_kib > 0 {
        let window = u32::try_from(a.window_kib << 10).context("--window-kib")?;
        endpoint = endpoint.initial_stream_window_size(window).initial_connection_window_size(window.saturating_mul(2));
    }
    let channel = endpoint.connect().await?;
    let mut client = pb::worker_client::WorkerClient::new(channel).max_decoding_message_size(8 << 20);
    let request = |bytes| pb::FetchRequest { job_id: JOB.into(), map: 0, attempt: 0, offset: 0, bytes, reduce: false };
    // The worker answers (so it has opened its work directory, removing what was in it)
    // before the output is put there.
    let absent = client.fetch(request(1)).await.expect_err("nothing is held yet");
    ensure!(absent.code() == tonic::Code::NotFound, "{absent:?}");

    let bytes = a.size_mb << 20;
    let path = work.path().join(JOB).join("m00000-a0");
    std::fs::create_dir_all(path.parent().unwrap())?;
    write_noise(&path, bytes)?;
    println!("fetch bench: one map output of {} MiB on a worker at {addr}, {} runs", a.size_mb, a.runs);

    let read_file = || -> anyhow::Result<Duration> {
        let t = Instant::now();
        let mut file = std::fs::File::open(&path)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        ensure!(total == bytes, "read {total} of {bytes} bytes");
        Ok(t.elapsed())
    };
    let mut fetch = async || -> anyhow::Result<Duration> {
        let t = Instant::now();
        let mut stream = client.fetch(request(bytes)).await?.into_inner();
        let mut total = 0u64;
        while let Some(chunk) = stream.message().await? {
            total += chunk.data.len() as u64;
        }
        ensure!(total == bytes, "fetched {total} of {bytes} bytes");
        Ok(t.elapsed())
    };
    read_file()?;
    fetch().await?;
    let (mut reads, mut fetches, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..a.runs {
        let r = read_file()?;
        let f = fetch().await?;
        ratios.push(r.as_secs_f64() / f.as_secs_f64());
        reads.push(r);
        fetches.push(f);
    }
    let (r, f) = (median(reads), median(fetches));
    let gbs = |d: Duration| bytes as f64 / 1e9 / d.as_secs_f64();
    println!("read from the page cache (1 MiB reads): {:>7.3} s  {:>6.2} GB/s", r.as_secs_f64(), gbs(r));
    println!("one Fetch stream (1 MiB chunks):        {:>7.3} s  {:>6.2} GB/s", f.as_secs_f64(), gbs(f));
    println!("fetch / read: {}", ratio_summary(r, f, ratios));
    println!("peak RSS: {:.0} MiB", peak_rss_mb().unwrap_or(f64::NAN));
    Ok(())
}

/// Writes `bytes` of incompressible bytes to `path` (what a compressed map output is like).
fn write_noise(path: &Path, bytes: u64) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut rng = SplitMix64::new(7);
    let mut block = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            word.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

/// The word count at several numbers of map outputs, each in a child process.
fn memory(a: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let corpus = dir.path().join("corpus.txt");
    generate_corpus(&corpus, a.size_mb << 20, 200_000, 2024)?;
    println!("fetch bench, memory: word count of {} MiB with worker shuffle, 2 workers, 2 reducers", a.size_mb);
    for maps in [16u64, 256, 4096] {
        let out = std::process::Command::new(std::env::current_exe()?)
            .arg("--child")
            .arg(&corpus)
            .arg(maps.to_string())
            .output()?;
        ensure!(out.status.success(), "child for {maps} maps: {}", String::from_utf8_lossy(&out.stderr));
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(())
}

/// One run of `--memory`: `maps` map outputs of `corpus`; prints its time and peak RSS.
async fn child(corpus: &Path, maps: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let bytes = std::fs::metadata(corpus)?.len();
    let shard = bytes.div_ceil(maps);
    let cluster = Cluster::local(2).await?.with_worker_shuffle(true);
    let t = Instant::now();
    let report = cluster.run(JobSpec::new(WordCount, [corpus], &out).reducers(2).shard_size(shard)).await?;
    let elapsed = t.elapsed();
    let rss = peak_rss_mb().unwrap_or(f64::NAN);
    ensure!(
        read_output(&out)? == count_sequential(&[corpus.to_path_buf()])?,
        "output differs from the sequential count"
    );
    println!(
        "{:>5} map outputs ({:>8} bytes of map output each): {:>6.2} s, peak RSS {rss:>4.0} MiB",
        report.map_tasks,
        report.intermediate_bytes / u64::from(report.map_tasks.max(1)),
        elapsed.as_secs_f64()
    );
    Ok(())
}
