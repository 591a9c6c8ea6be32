//! Per-task overhead: a job of 10,000 tiny map tasks and 4 reduce tasks on
//! `Cluster::local(4)`; the time per task is scheduling plus an RPC round trip plus the
//! smallest possible task, files included.
//!
//! ```text
//! cargo bench --bench overhead -- [--maps N] [--reducers R] [--workers N] [--runs N]
//! ```

#![allow(clippy::print_stdout)] // a benchmark: printing is its job

use std::io::Write;
use std::time::{Duration, Instant};

use mapreduce::{Cluster, JobSpec};
use mapreduce_examples::wordcount::WordCount;

fn main() -> anyhow::Result<()> {
    let (mut maps, mut reducers, mut workers, mut runs) = (10_000u64, 4u32, 4usize, 3usize);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow::anyhow!("{arg} needs a value"));
        match arg.as_str() {
            "--maps" => maps = value()?.parse()?,
            "--reducers" => reducers = value()?.parse()?,
            "--workers" => workers = value()?.parse()?,
            "--runs" => runs = value()?.parse()?,
            "--bench" => {}
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;
    // One 9-byte line per shard, 1000 distinct words: "wordxabc\n".
    let input = dir.path().join("lines.txt");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input)?);
    for i in 0..maps {
        let n = i % 1000;
        let letters = [b'a' + (n / 100) as u8, b'a' + (n / 10 % 10) as u8, b'a' + (n % 10) as u8];
        writeln!(f, "wordx{}", std::str::from_utf8(&letters)?)?;
    }
    f.flush()?;
    drop(f);
    let cluster = rt.block_on(Cluster::local(workers))?;
    let mut times = Vec::new();
    for run in 0..runs {
        let out = dir.path().join(format!("out-{run}"));
        let spec = JobSpec::new(WordCount, [&input], &out).reducers(reducers).shard_size(9);
        let t = Instant::now();
        let report = rt.block_on(cluster.run(spec))?;
        times.push(t.elapsed());
        anyhow::ensure!(
            u64::from(report.map_tasks) == maps && report.output_records == maps.min(1000),
            "unexpected report: {report:?}"
        );
        std::fs::remove_dir_all(&out)?;
    }
    times.sort();
    let median: Duration = times[times.len() / 2];
    let tasks = maps + u64::from(reducers);
    println!("overhead bench: {maps} map tasks, {reducers} reduce tasks, {workers} local workers, {runs} runs");
    println!("job time (median):  {:.3} s", median.as_secs_f64());
    println!("per task:           {:.3} ms", median.as_secs_f64() * 1000.0 / tasks as f64);
    println!("intermediate files: {maps} (one per map task, its {reducers} partitions back to back)");
    Ok(())
}
