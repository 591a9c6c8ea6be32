//! How the pure scheduler scales: one simulated job of many map tasks, reducers and
//! workers, every call answered at once (one round of replies per simulated millisecond,
//! as `micro`'s scheduler bench does), every task succeeding.
//!
//! ```text
//! cargo bench --bench scale -- --maps 100000 --reduces 1000 --workers 1000
//! cargo bench --bench scale -- --maps 1000000 --reduces 10000 --workers 10000 --ranges 16
//! ```
//!
//! Each map output names `--ranges K` partitions, one range each (default: every
//! partition, K = R; a smaller K spreads each map's K partitions evenly, as a job whose
//! map outputs are sparse). The scheduler keeps every range of every accepted map output,
//! so the job's state grows as maps × K: a run that would keep more than `--max-ranges`
//! (default 400 M, about the machine's memory) is refused with its estimate, not started.
//!
//! Prints, per phase and in all, the decisions (actions drained from `poll_action`) and
//! decisions per second; the inputs of the largest reduce request and its size encoded as
//! `mapreduce.v1.ReduceRequest`'s `locations` and `inputs` (computed, not encoded); and the
//! peak resident memory (`VmHWM`).

#![allow(clippy::print_stdout)] // a benchmark: printing is its job

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mapreduce_core::scheduler::{
    Action, Event, JobPlan, Location, MapOutputRange, ReduceInput, Scheduler, SchedulerConfig, TaskKind, TaskOutput,
    TaskSpec,
};
use mapreduce_core::shard::{Segment, Shard};

struct Args {
    maps: u32,
    reduces: u32,
    workers: u32,
    ranges: u32,
    max_ranges: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args { maps: 1_000_000, reduces: 10_000, workers: 10_000, ranges: 0, max_ranges: 400_000_000 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--bench" {
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let n: u64 = value.parse().with_context(|| format!("{flag} {value}: not a number"))?;
        let small = || u32::try_from(n).with_context(|| format!("{flag} {value}: too large"));
        match flag.as_str() {
            "--maps" => a.maps = small()?,
            "--reduces" => a.reduces = small()?,
            "--workers" => a.workers = small()?,
            "--ranges" => a.ranges = small()?,
            "--max-ranges" => a.max_ranges = n,
            _ => bail!("unknown flag {flag}: --maps N --reduces R --workers W [--ranges K] [--max-ranges N]"),
        }
    }
    if a.ranges == 0 || a.ranges > a.reduces {
        a.ranges = a.reduces;
    }
    Ok(a)
}

/// The partitions map `m` writes: `k` of `r`, evenly spread, in partition order.
fn partitions(m: u32, k: u32, r: u32) -> impl Iterator<Item = u32> {
    let stride = r / k;
    (0..k).map(move |j| j * stride + m % stride)
}

/// Bytes of `x` as a protobuf varint.
fn varint(x: u64) -> u64 {
    u64::from((64 - x.leading_zeros()).max(1).div_ceil(7))
}

/// Bytes of a reduce request's `locations` and `inputs` (fields 5 and 6 of
/// `ReduceRequest`): each location once as a length-delimited string, each input as a
/// length-delimited `ReduceInput` of six varint fields, each with its one-byte tag.
fn request_bytes(inputs: &[ReduceInput]) -> u64 {
    let mut locations = std::collections::HashMap::new();
    let mut total = 0;
    for input in inputs {
        let n = locations.len() as u64;
        let index = *locations.entry(input.location.as_str()).or_insert_with(|| {
            let len = input.location.as_str().len() as u64;
            total += 1 + varint(len) + len;
            n
        });
        let r = &input.range;
        let fields = [index, u64::from(r.map), r.attempt.0, r.offset, r.bytes, r.records];
        let body: u64 = fields.iter().map(|&x| 1 + varint(x)).sum();
        total += 1 + varint(body) + body;
    }
    total
}

#[derive(Default)]
struct Phase {
    decisions: u64,
    time: Duration,
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let ranges = u64::from(a.maps) * u64::from(a.ranges);
    println!(
        "scale: {} maps, {} reduces, {} workers; each map output names {} partitions: {} ranges in all",
        a.maps, a.reduces, a.workers, a.ranges, ranges
    );
    if ranges > a.max_ranges {
        let gb = ranges as f64 * 32.0 / 1e9;
        println!(
            "refused: the scheduler would keep {ranges} ranges (about {gb:.0} GB at 32 bytes each), more than \
             --max-ranges {}; pass a smaller --ranges",
            a.max_ranges
        );
        std::process::exit(2);
    }
    let shards = (0..u64::from(a.maps))
        .map(|i| Shard { segments: vec![Segment { path: "in".to_string(), start: i * 64, end: (i + 1) * 64 }] })
        .collect();
    let plan = JobPlan { shards, reducers: a.reduces, workers: a.workers, outputs_on_workers: false };
    let base = common::peak_rss_mb();
    let mut sched = Scheduler::new(plan, SchedulerConfig::default()).context("a valid plan")?;

    let start = Instant::now();
    let mut now = start;
    let mut phases = [Phase::default(), Phase::default()];
    let mut reduce_phase = false;
    let mut largest = (0usize, 0u64);
    let mut replies = Vec::with_capacity(a.workers as usize);
    let mut clock = Instant::now();
    loop {
        while let Some(action) = sched.poll_action(now) {
            phases[usize::from(reduce_phase)].decisions += 1;
            match action {
                Action::Run { attempt, task, spec, .. } => {
                    let output = match task.kind {
                        TaskKind::Map => TaskOutput::Map {
                            location: Location::new(format!("/work/job/map-{:07}/{attempt}.out", task.index)),
                            ranges: partitions(task.index, a.ranges, a.reduces)
                                .map(|partition| MapOutputRange {
                                    map: task.index,
                                    attempt,
                                    partition,
                                    offset: u64::from(partition) * 6_400,
                                    bytes: 6_400,
                                    records: 400,
                                })
                                .collect(),
                            input_records: 8,
                            skipped_records: 0,
                            counters: Default::default(),
                        },
                        TaskKind::Reduce => {
                            if !reduce_phase {
                                reduce_phase = true;
                                phases[0].time = clock.elapsed();
                                let rss = common::peak_rss_mb().unwrap_or(0.0);
                                println!("  (map phase over after {:.2?}; peak RSS {rss:.0} MiB)", phases[0].time);
                                clock = Instant::now();
                            }
                            if let TaskSpec::Reduce { inputs, .. } = &spec
                                && inputs.len() > largest.0
                            {
                                largest = (inputs.len(), request_bytes(inputs));
                            }
                            TaskOutput::Reduce {
                                path: String::new(),
                                records: 8,
                                bytes: 64,
                                counters: Default::default(),
                            }
                        }
                    };
                    replies.push(Event::Succeeded { attempt, output });
                }
                Action::Wait { wait, .. } => replies.push(Event::WaitAnswered { wait }),
                Action::Wake { wait: woken, .. } => {
                    replies.retain(|e| !matches!(e, Event::WaitAnswered { wait } if *wait == woken))
                }
                Action::Discard(_) => {}
                Action::Finished(result) => {
                    result.context("the job succeeds")?;
                    phases[1].time = clock.elapsed();
                    report(&phases, largest, base);
                    return Ok(());
                }
            }
        }
        now += Duration::from_millis(1);
        for event in replies.drain(..) {
            sched.handle_event(now, event);
        }
    }
}

fn report(phases: &[Phase; 2], largest: (usize, u64), base: Option<f64>) {
    let rate = |p: &Phase| p.decisions as f64 / p.time.as_secs_f64().max(1e-9) / 1e6;
    for (name, p) in ["map phase", "reduce phase"].iter().zip(phases) {
        println!("  {name}: {} decisions in {:.2?}: {:.2} M decisions/s", p.decisions, p.time, rate(p));
    }
    let all = Phase { decisions: phases[0].decisions + phases[1].decisions, time: phases[0].time + phases[1].time };
    println!("  whole job: {} decisions in {:.2?}: {:.2} M decisions/s", all.decisions, all.time, rate(&all));
    let (inputs, bytes) = largest;
    println!(
        "  largest reduce request: {inputs} inputs, {:.2} MB encoded ({:.1} bytes per input, locations included)",
        bytes as f64 / 1e6,
        bytes as f64 / inputs.max(1) as f64
    );
    match (common::peak_rss_mb(), base) {
        (Some(peak), Some(base)) => println!("  peak RSS: {peak:.0} MiB (before the scheduler: {base:.0} MiB)"),
        _ => println!("  peak RSS: not known (no /proc/self/status)"),
    }
}
