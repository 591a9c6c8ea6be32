//! Criterion micro benchmarks of the data path's building blocks and of the scheduler.
//!
//! ```text
//! cargo bench --bench micro               # all of them, about a minute on 2 cores
//! cargo bench --bench micro -- scheduler  # only the benchmarks whose name matches
//! ```
//!
//! - `record/encode`: [`RecordWriter`] writing `(String, u64)` records shaped like a word
//!   count's combined map output (keys of 3 to 12 letters, mostly small counts) into a
//!   `Vec<u8>`; throughput is bytes of encoded output.
//! - `record/decode`: [`RecordReader`] reading those bytes back (one `String` per record);
//!   throughput is bytes of encoded input.
//! - `merge/8_runs`, `merge/64_runs`: [`Merge`] over 8 or 64 sorted in-memory runs, each
//!   read by a `RecordReader`, drained with `next()`; throughput is bytes of encoded input,
//!   so the figure includes decoding.
//! - `scheduler/10000_maps_100_workers`: a whole job (10,000 map tasks of tiny shards, one
//!   reducer, 100 workers) through [`Scheduler`], every Run answered at once with a success
//!   and every Wait with `WorkerIdle`, on a fake clock; throughput is actions drained from
//!   `poll_action`, that is, scheduling decisions per second.
//!
//! - `map/split`: [`for_each_word`] over 16 MiB of the word count bench's corpus (its
//!   200k-word Zipf vocabulary); throughput is bytes of text.
//! - `map/buffer`: the same words through [`MapBuffer::insert_str_in`] into one buffer
//!   (a map task's combining table), drained sorted at the end; throughput is bytes of
//!   text, so the figure includes the split.
//!
//! Inputs are generated from a fixed seed, so every run measures the same bytes.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use mapreduce_core::scheduler::{
    Action, Event, JobPlan, Location, MapOutputRange, Scheduler, SchedulerConfig, TaskKind, TaskOutput,
};
use mapreduce_core::shard::{Segment, Shard};
use mapreduce_core::shuffle::buffer::MapBuffer;
use mapreduce_core::shuffle::merge::Merge;
use mapreduce_core::shuffle::record::{RecordReader, RecordWriter};
use mapreduce_examples::corpus::{SplitMix64, generate_corpus};
use mapreduce_examples::wordcount::{Word, for_each_word};

/// Records in the encode/decode input.
const RECORDS: usize = 200_000;
/// Records over all runs of a merge, before each run drops its duplicate keys.
const MERGE_RECORDS: usize = 200_000;
/// Distinct words the merge runs draw their keys from.
const VOCABULARY: usize = 50_000;
const MAPS: u32 = 10_000;
const WORKERS: u32 = 100;

/// A word of 3 to 12 lowercase letters.
fn word(rng: &mut SplitMix64) -> String {
    let len = 3 + rng.below(10) as usize;
    (0..len).map(|_| char::from(b'a' + rng.below(26) as u8)).collect()
}

/// A combined count: mostly small, now and then large (a frequent word).
fn count(rng: &mut SplitMix64) -> u64 {
    match rng.below(8) {
        0 => 1 + rng.below(100_000),
        1 | 2 => 1 + rng.below(100),
        _ => 1 + rng.below(4),
    }
}

fn records(n: usize, rng: &mut SplitMix64) -> Vec<(String, u64)> {
    (0..n).map(|_| (word(rng), count(rng))).collect()
}

fn encode(records: &[(String, u64)]) -> Vec<u8> {
    let mut w = RecordWriter::new(Vec::new()).expect("writing to a Vec");
    for (k, v) in records {
        w.write(k, v).expect("encodable record");
    }
    w.finish().expect("writing to a Vec").0
}

/// `runs` sorted runs of distinct keys drawn from one vocabulary, as the map outputs of
/// one partition are; encoded.
fn sorted_runs(runs: usize, rng: &mut SplitMix64) -> Vec<Vec<u8>> {
    let vocabulary: Vec<String> = (0..VOCABULARY).map(|_| word(rng)).collect();
    (0..runs)
        .map(|_| {
            let mut run: Vec<(String, u64)> = (0..MERGE_RECORDS / runs)
                .map(|_| (vocabulary[rng.below(VOCABULARY as u64) as usize].clone(), count(rng)))
                .collect();
            run.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            run.dedup_by(|a, b| a.0 == b.0);
            encode(&run)
        })
        .collect()
}

fn bench_records(c: &mut Criterion) {
    let input = records(RECORDS, &mut SplitMix64::new(1));
    let bytes = encode(&input);
    let mut group = c.benchmark_group("record");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("encode", |b| {
        b.iter(|| {
            let mut w = RecordWriter::new(Vec::with_capacity(bytes.len())).expect("writing to a Vec");
            for (k, v) in &input {
                w.write(k, v).expect("encodable record");
            }
            w.finish().expect("writing to a Vec")
        });
    });
    group.bench_function("decode", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for r in RecordReader::<_, String, u64>::new(&bytes[..]) {
                black_box(r.expect("valid record file"));
                n += 1;
            }
            assert_eq!(n, RECORDS);
        });
    });
    group.finish();
}

fn bench_merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("merge");
    // Flat: one iteration takes tens of milliseconds, too long for linear sampling's ramp.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for runs in [8, 64] {
        let inputs = sorted_runs(runs, &mut SplitMix64::new(runs as u64));
        group.throughput(Throughput::Bytes(inputs.iter().map(|b| b.len() as u64).sum()));
        group.bench_function(format!("{runs}_runs"), |b| {
            b.iter(|| {
                let sources = inputs.iter().map(|b| RecordReader::<_, String, u64>::new(&b[..])).collect();
                let mut merge = Merge::new(sources).expect("valid runs");
                let mut n = 0usize;
                while let Some(r) = merge.next().expect("valid, sorted runs") {
                    black_box(r);
                    n += 1;
                }
                n
            });
        });
    }
    group.finish();
}

fn plan() -> JobPlan {
    let shards = (0..u64::from(MAPS))
        .map(|i| Shard { segments: vec![Segment { path: "in".to_string(), start: i * 64, end: (i + 1) * 64 }] })
        .collect();
    JobPlan { shards, reducers: 1, workers: WORKERS, outputs_on_workers: false }
}

/// Runs a whole job, answering every call at once, one round of replies per millisecond of
/// the fake clock. Returns the scheduler (so that dropping it is not timed) and the number
/// of actions it took.
fn run_job(mut sched: Scheduler, start: Instant) -> (Scheduler, u64) {
    let mut now = start;
    let mut actions = 0u64;
    let mut replies = Vec::with_capacity(WORKERS as usize);
    let location = Location::new("m");
    loop {
        while let Some(action) = sched.poll_action(now) {
            actions += 1;
            match action {
                Action::Run { attempt, task, .. } => {
                    let output = match task.kind {
                        TaskKind::Map => TaskOutput::Map {
                            location: location.clone(),
                            ranges: vec![MapOutputRange {
                                map: task.index,
                                attempt,
                                partition: 0,
                                offset: 0,
                                bytes: 64,
                                records: 8,
                            }],
                            input_records: 8,
                            skipped_records: 0,
                            counters: Default::default(),
                        },
                        TaskKind::Reduce => TaskOutput::Reduce {
                            path: String::new(),
                            records: 8,
                            bytes: 64,
                            counters: Default::default(),
                        },
                    };
                    replies.push(Event::Succeeded { attempt, output });
                }
                Action::Wait { wait, .. } => replies.push(Event::WaitAnswered { wait }),
                // A woken Wait is dropped: its answer never comes.
                Action::Wake { wait: woken, .. } => {
                    replies.retain(|e| !matches!(e, Event::WaitAnswered { wait } if *wait == woken))
                }
                Action::Discard(_) => {}
                Action::Finished(result) => {
                    result.expect("the job succeeds");
                    return (sched, actions);
                }
            }
        }
        now += Duration::from_millis(1);
        for event in replies.drain(..) {
            sched.handle_event(now, event);
        }
    }
}

fn bench_scheduler(c: &mut Criterion) {
    let plan = plan();
    let config = SchedulerConfig::default();
    let start = Instant::now();
    let new = || Scheduler::new(plan.clone(), config.clone()).expect("valid plan and config");
    let (_, actions) = run_job(new(), start);
    let mut group = c.benchmark_group("scheduler");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(actions));
    group.bench_function(format!("{MAPS}_maps_{WORKERS}_workers"), |b| {
        b.iter_batched(
            new,
            |sched| {
                let (sched, n) = run_job(sched, start);
                assert_eq!(n, actions);
                sched
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

fn bench_map(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("corpus.txt");
    generate_corpus(&path, 16 << 20, 200_000, 2024).expect("the corpus is written");
    let text = std::fs::read_to_string(&path).expect("the corpus is UTF-8");
    let mut group = c.benchmark_group("map");
    group.sample_size(10).throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("split", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for_each_word(&text, |w| n += w.len());
            black_box(n)
        })
    });
    let combine = |_: &Word, acc: &mut u64, v: u64| {
        *acc += v;
        None
    };
    group.bench_function("buffer", |b| {
        b.iter(|| {
            let mut buffer = MapBuffer::<Word, u64>::new();
            for_each_word(&text, |w| buffer.insert_str_in(&text, w, 1, combine));
            black_box(buffer.drain_sorted(combine, |_| 0).len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_records, bench_merge, bench_scheduler, bench_map);
criterion_main!(benches);
