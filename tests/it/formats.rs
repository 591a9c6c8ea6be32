//! Users' own jobs through `Cluster::local`: where a record came from, input and output
//! formats (compressed text, typed records), map-only jobs, invalid UTF-8, hooks and
//! secondary sort.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;

use mapreduce::{
    BoxError, Cluster, Emitter, InputFormat, InvalidUtf8, Job, JobSpec, Mapper, Output, OutputFormat, Record, Reducer,
    RunError, stable_partition,
};
use serde::{Deserialize, Serialize};

use crate::support::{output_lines, tree};

/// Each line as `(path:line, offset)`: where the map says it lies.
#[derive(Serialize, Deserialize)]
struct WhereFrom;

impl Mapper for WhereFrom {
    type Key = String;
    type Value = u64;
    fn map(&self, line: &str, emit: &mut Emitter<'_, String, u64>) -> Result<(), BoxError> {
        let at = emit.position();
        let key = format!("{}:{}:{line}", at.path().display(), at.line().map_or("?".into(), |l| l.to_string()));
        emit.emit(key, at.offset());
        Ok(())
    }
}

impl Reducer for WhereFrom {
    fn reduce(
        &self,
        key: &String,
        offsets: &mut dyn Iterator<Item = u64>,
        out: &mut Output<'_>,
    ) -> Result<(), BoxError> {
        for offset in offsets {
            out.emit(key, offset)?;
        }
        Ok(())
    }
}

impl Job for WhereFrom {
    const NAME: &'static str = "it-where-from";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapper_knows_the_file_offset_and_line_of_each_record() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
    let text_a: String = (1..=300).map(|i| format!("alpha {i}\r\n")).collect();
    let text_b: String = (1..=200).map(|i| format!("beta {i}\n")).collect();
    fs::write(&a, &text_a).unwrap();
    fs::write(&b, &text_b).unwrap();
    // What each line's position must be: counted here the plain way.
    let mut want = Vec::new();
    for (path, text) in [(&a, &text_a), (&b, &text_b)] {
        let mut offset = 0;
        for (i, raw) in text.split_inclusive('\n').enumerate() {
            let line = raw.trim_end_matches('\n').trim_end_matches('\r');
            want.push((format!("{}:{}:{line}", path.display(), i + 1), offset));
            offset += raw.len();
        }
    }
    let cluster = Cluster::local(2).await.unwrap();
    // Small shards that cut the files: offsets are always known, line numbers only where
    // a shard starts its file...
    let out = dir.path().join("cut");
    cluster.run(JobSpec::new(WhereFrom, [&a, &b], &out).shard_size(1000).reducers(2)).await.unwrap();
    let lines = output_lines(&out);
    assert_eq!(lines.len(), 500);
    let unknown = lines.iter().filter(|l| l.contains(":?:")).count();
    assert!(unknown > 0 && unknown < 500, "{unknown} lines without a number");
    for line in &lines {
        let (key, offset) = line.rsplit_once('\t').unwrap();
        let known = want.iter().find(|(k, o)| o.to_string() == offset && line_text(k) == line_text(key));
        assert!(known.is_some(), "{line}: offset and text of no line");
        if !key.contains(":?:") {
            assert_eq!(key, known.unwrap().0, "a known line number is the right one");
        }
    }
    // ...and every line's number with whole files.
    let out = dir.path().join("whole");
    cluster.run(JobSpec::new(WhereFrom, [&a, &b], &out).shard_size(1000).split_files(false)).await.unwrap();
    let mut want: Vec<String> = want.iter().map(|(k, o)| format!("{k}\t{o}")).collect();
    want.sort();
    assert_eq!(output_lines(&out), want);
}

/// A key's text after its `path:line:` prefix.
fn line_text(key: &str) -> &str {
    key.splitn(3, ':').nth(2).unwrap_or("")
}

/// A map-only grep: each line holding `pattern` as `path:line:text`.
#[derive(Serialize, Deserialize)]
struct Grep {
    pattern: String,
}

impl Mapper for Grep {
    type Key = String;
    type Value = ();
    fn map(&self, line: &str, emit: &mut Emitter<'_, String, ()>) -> Result<(), BoxError> {
        if line.contains(&self.pattern) {
            emit.emit(format!("{}:{line}", emit.position()), ());
        }
        Ok(())
    }
}

impl Reducer for Grep {
    fn reduce(&self, _: &String, _: &mut dyn Iterator<Item = ()>, _: &mut Output<'_>) -> Result<(), BoxError> {
        Err("a map-only job has no reduce".into())
    }
}

impl Job for Grep {
    const NAME: &'static str = "it-grep";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_only_job_writes_one_part_file_per_map_in_emit_order_readable_by_all() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("log.txt");
    let text: String = (1..=2000).map(|i| format!("{} line {i}\n", if i % 7 == 0 { "ERROR" } else { "ok" })).collect();
    fs::write(&input, &text).unwrap();
    let cluster = Cluster::local(2).await.unwrap();
    let out = dir.path().join("out");
    let grep = Grep { pattern: "ERROR".into() };
    let spec = JobSpec::new(grep, [&input], &out).reducers(0).shard_size(8 << 10).split_files(false);
    let report = cluster.run(spec).await.unwrap();
    assert_eq!(report.reduce_tasks, 0);
    assert_eq!(report.output_records, 2000 / 7);
    assert_eq!(tree(&out), vec!["_SUCCESS", "part-m-00000"], "one whole file, one map, no reduce");
    let got = fs::read_to_string(out.join("part-m-00000")).unwrap();
    let want: String = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("ERROR"))
        .map(|(i, l)| format!("{}:{}:{l}\n", input.display(), i + 1))
        .collect();
    assert_eq!(got, want, "in input order, as grep -Hn prints it");
    assert_eq!(report.counters["map_output_records"], 2000 / 7);
    // Part files are the user's, like any file they create: 0666 less the umask.
    let mode = fs::metadata(out.join("part-m-00000")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o044, 0o044, "readable by group and others under the usual umask: {mode:o}");

    // Split files: several maps, several part files, each line once.
    let out = dir.path().join("split");
    let spec = JobSpec::new(Grep { pattern: "ERROR".into() }, [&input], &out).reducers(0).shard_size(8 << 10);
    let report = cluster.run(spec).await.unwrap();
    assert!(report.map_tasks > 1);
    let parts = tree(&out).into_iter().filter(|n| n.starts_with("part-m-")).count();
    assert_eq!(parts as u32, report.map_tasks);
    assert_eq!(output_lines(&out).len(), 2000 / 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reduce_output_files_are_readable_like_any_file_the_user_creates() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("in.txt"), "a b a\n").unwrap();
    let out = dir.path().join("out");
    let cluster = Cluster::local(1).await.unwrap();
    cluster
        .run(JobSpec::new(mapreduce_examples::wordcount::WordCount, [dir.path().join("in.txt")], &out))
        .await
        .unwrap();
    let mode = fs::metadata(out.join("part-00000")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o044, 0o044, "{mode:o}");
}

/// Word count whose reduce writes typed `(word, count)` records.
#[derive(Serialize, Deserialize)]
struct CountWords;

impl Mapper for CountWords {
    type Key = String;
    type Value = u64;
    fn map(&self, line: &str, emit: &mut Emitter<'_, String, u64>) -> Result<(), BoxError> {
        for w in line.split_whitespace() {
            emit.emit_str(w, 1);
        }
        Ok(())
    }
}

impl Reducer for CountWords {
    fn reduce(
        &self,
        word: &String,
        counts: &mut dyn Iterator<Item = u64>,
        out: &mut Output<'_>,
    ) -> Result<(), BoxError> {
        out.record(&(word, counts.sum::<u64>()))?;
        Ok(())
    }
    fn combine(&self, _: &String, acc: &mut u64, n: u64) -> Option<u64> {
        *acc += n;
        None
    }
}

impl Job for CountWords {
    const NAME: &'static str = "it-count-words";
}

/// The second stage: reads `(word, count)` records, orders words by count, most first.
#[derive(Serialize, Deserialize)]
struct ByCount;

impl Mapper for ByCount {
    type Key = (std::cmp::Reverse<u64>, String);
    type Value = ();
    fn map_record(&self, record: Record<'_>, emit: &mut Emitter<'_, Self::Key, ()>) -> Result<(), BoxError> {
        let (word, count): (String, u64) = record.decode()?;
        emit.emit((std::cmp::Reverse(count), word), ());
        Ok(())
    }
}

impl Reducer for ByCount {
    fn reduce(&self, key: &Self::Key, _: &mut dyn Iterator<Item = ()>, out: &mut Output<'_>) -> Result<(), BoxError> {
        out.emit(key.0.0, &key.1)?;
        Ok(())
    }
}

impl Job for ByCount {
    const NAME: &'static str = "it-by-count";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_records_pass_from_one_job_to_the_next_and_compressed_text_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let text = "the cat the hat\nthe end of the cat\n".repeat(50);
    let plain = dir.path().join("plain.txt");
    fs::write(&plain, &text).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(text.as_bytes()).unwrap();
    fs::write(dir.path().join("more.txt.gz"), gz.finish().unwrap()).unwrap();
    let zst = ruzstd::encoding::compress_to_vec(text.as_bytes(), ruzstd::encoding::CompressionLevel::Fastest);
    fs::write(dir.path().join("more.txt.zst"), zst).unwrap();

    let cluster = Cluster::local(2).await.unwrap();
    let counts = dir.path().join("counts");
    let spec = JobSpec::new(CountWords, [dir.path()], &counts).reducers(3).output_format(OutputFormat::Records);
    let report = cluster.run(spec).await.unwrap();
    // Three inputs of 200 lines: a compressed file is one map of all its lines.
    assert_eq!(report.counters["map_input_records"], 300);
    assert_eq!(report.output_records, 5);
    let ranked = dir.path().join("ranked");
    let spec = JobSpec::new(ByCount, [&counts], &ranked).input_format(InputFormat::Records);
    let report = cluster.run(spec).await.unwrap();
    assert_eq!(report.counters["map_input_records"], 5, "one record per word, no text round trip");
    let got = fs::read_to_string(ranked.join("part-00000")).unwrap();
    assert_eq!(got, "600\tthe\n300\tcat\n150\tend\n150\that\n150\tof\n");

    // Text is not a record file: the job fails naming the file.
    let spec = JobSpec::new(ByCount, [&plain], dir.path().join("bad")).input_format(InputFormat::Records);
    let err = cluster.run(spec).await.unwrap_err().to_string();
    assert!(err.contains("cannot read record input") && err.contains("plain.txt"), "{err}");
    // A text job on a record file it cannot read as records is also named: a mapper of
    // text has no map_record.
    let spec = JobSpec::new(CountWords, [&counts], dir.path().join("bad2")).input_format(InputFormat::Records);
    let err = cluster.run(spec).await.unwrap_err().to_string();
    assert!(err.contains("implements no Mapper::map_record"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_utf8_are_replaced_or_fail_naming_the_line_or_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mixed.txt");
    fs::write(&input, b"good one\nbad \xff\xfe here\ngood two\n").unwrap();
    let cluster = Cluster::local(1).await.unwrap();
    let run = |policy, out: &str| {
        let spec = JobSpec::new(WhereFrom, [&input], dir.path().join(out)).invalid_utf8(policy);
        cluster.run(spec)
    };
    run(InvalidUtf8::Replace, "replace").await.unwrap();
    let lines = output_lines(&dir.path().join("replace"));
    assert_eq!(lines.len(), 3);
    assert!(lines[1].contains(":2:bad \u{fffd}\u{fffd} here\t9"), "{lines:?}");
    assert!(lines[2].ends_with(":3:good two\t21"), "offsets are the file's: {lines:?}");

    let err = run(InvalidUtf8::Fail, "fail").await.unwrap_err();
    assert!(matches!(err, RunError::Job(_)));
    let err = err.to_string();
    assert!(err.contains(&format!("line {}:2 is not valid UTF-8", input.display())), "{err}");

    let report = run(InvalidUtf8::Skip, "skip").await.unwrap();
    let lines = output_lines(&dir.path().join("skip"));
    let want = [format!("{}:1:good one\t0", input.display()), format!("{}:3:good two\t21", input.display())];
    assert_eq!(lines, want, "line numbers count the skipped line");
    assert_eq!((report.skipped_records, report.counters["map_skipped_records"]), (1, 1));
}

/// Per user, their events in time order (secondary sort), and a top-2 of users by
/// events kept across keys and written at the reduce's end; the maps count their lines
/// in a per-task counter flushed at their end.
#[derive(Serialize, Deserialize, Default)]
struct Sessions {
    #[serde(skip)]
    lines: Mutex<u64>,
    #[serde(skip)]
    top: Mutex<Vec<(usize, String)>>,
}

impl Mapper for Sessions {
    type Key = (String, u64);
    type Value = u64;
    fn map(&self, line: &str, emit: &mut Emitter<'_, (String, u64), u64>) -> Result<(), BoxError> {
        let (user, time) = line.split_once(' ').ok_or("no space")?;
        let time: u64 = time.parse()?;
        *self.lines.lock().unwrap() += 1;
        emit.emit((user.to_string(), time), time);
        Ok(())
    }
    fn map_setup(&self) -> Result<(), BoxError> {
        assert_eq!(*self.lines.lock().unwrap(), 0, "a task's own job value");
        Ok(())
    }
    fn map_finish(&self, emit: &mut Emitter<'_, (String, u64), u64>) -> Result<(), BoxError> {
        emit.count("lines_seen_by_finish", *self.lines.lock().unwrap());
        Ok(())
    }
}

impl Reducer for Sessions {
    fn reduce(
        &self,
        key: &(String, u64),
        times: &mut dyn Iterator<Item = u64>,
        out: &mut Output<'_>,
    ) -> Result<(), BoxError> {
        let times: Vec<String> = times.map(|t| t.to_string()).collect();
        self.top.lock().unwrap().push((times.len(), key.0.clone()));
        out.emit(&key.0, times.join(","))?;
        Ok(())
    }
    fn group_eq(&self, a: &(String, u64), b: &(String, u64)) -> bool {
        a.0 == b.0
    }
    fn partition(&self, key: &(String, u64), reducers: u32) -> u32 {
        stable_partition(&key.0, reducers)
    }
    fn reduce_finish(&self, out: &mut Output<'_>) -> Result<(), BoxError> {
        let mut top = std::mem::take(&mut *self.top.lock().unwrap());
        top.sort_by(|a, b| b.cmp(a));
        for (n, user) in top.iter().take(2) {
            out.emit(format!("top:{user}"), n)?;
        }
        Ok(())
    }
}

impl Job for Sessions {
    const NAME: &'static str = "it-sessions";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_once_per_task_and_a_grouping_comparator_gives_a_secondary_sort() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.txt");
    // Times out of order, users spread over the file and over shards.
    let mut text = String::new();
    let mut want: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for i in 0..600u64 {
        let user = format!("u{}", i % 5 + (i % 3) * 10);
        let time = (i * 7919) % 1000;
        text.push_str(&format!("{user} {time}\n"));
        want.entry(user).or_default().push(time);
    }
    fs::write(&input, &text).unwrap();
    let cluster = Cluster::local(2).await.unwrap();
    let out = dir.path().join("out");
    let report =
        cluster.run(JobSpec::new(Sessions::default(), [&input], &out).reducers(1).shard_size(2000)).await.unwrap();
    assert!(report.map_tasks > 1);
    assert_eq!(report.counters["lines_seen_by_finish"], 600, "each map's finish saw its own lines");
    let text = fs::read_to_string(out.join("part-00000")).unwrap();
    let mut lines = text.lines();
    for (user, times) in &mut want {
        times.sort();
        let line = lines.next().unwrap();
        let want_line = format!("{user}\t{}", times.iter().map(u64::to_string).collect::<Vec<_>>().join(","));
        assert_eq!(line, want_line, "one group per user, in time order");
    }
    let mut by_size: Vec<(usize, &String)> = want.iter().map(|(u, t)| (t.len(), u)).collect();
    by_size.sort_by(|a, b| b.cmp(a));
    let top: Vec<String> = by_size.iter().take(2).map(|(n, u)| format!("top:{u}\t{n}")).collect();
    assert_eq!(lines.collect::<Vec<_>>(), top, "the reduce's finish wrote its top 2 last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_only_job_on_workers_that_see_no_file_gets_its_outputs_pulled_and_committed() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("log.txt");
    let text: String = (1..=3000).map(|i| format!("{} line {i}\n", if i % 11 == 0 { "ERROR" } else { "ok" })).collect();
    fs::write(&input, &text).unwrap();
    // The workers' only data root is an empty directory: the master streams them the
    // shards, and fetches what they keep.
    let nothing = tempfile::tempdir().unwrap();
    let works: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut addrs = Vec::new();
    let mut stops = Vec::new();
    for work in &works {
        let registry = mapreduce::Registry::new().register::<Grep>();
        let worker = mapreduce::worker::Worker::new(registry).with_root(nothing.path()).with_work_dir(work.path());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(listener.local_addr().unwrap().to_string());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(worker.serve_with_shutdown(listener, async { stopped.await.unwrap_or(()) }));
        stops.push(stop);
    }
    let cluster = Cluster::connect(addrs).unwrap();
    let out = dir.path().join("out");
    let spec = JobSpec::new(Grep { pattern: "ERROR".into() }, [&input], &out).reducers(0).shard_size(16 << 10);
    let report = cluster.run(spec).await.unwrap();
    assert!(report.map_tasks > 2);
    assert_eq!(output_lines(&out).len(), 3000 / 11);
    let parts = tree(&out).into_iter().filter(|n| n.starts_with("part-m-")).count();
    assert_eq!(parts as u32, report.map_tasks);
    for work in &works {
        assert_eq!(tree(work.path()), Vec::<String>::new(), "held outputs are removed at the job's end");
    }
}

/// Each file whole: its size and its count of `\0` bytes (so binary files work).
#[derive(Serialize, Deserialize)]
struct FileSizes;

impl Mapper for FileSizes {
    type Key = String;
    type Value = (u64, u64);
    fn map_file(&self, path: &Path, bytes: &[u8], emit: &mut Emitter<'_, String, (u64, u64)>) -> Result<(), BoxError> {
        let zeros = bytes.iter().filter(|&&b| b == 0).count() as u64;
        emit.emit(path.display().to_string(), (bytes.len() as u64, zeros));
        Ok(())
    }
}

impl Reducer for FileSizes {
    fn reduce(
        &self,
        path: &String,
        sizes: &mut dyn Iterator<Item = (u64, u64)>,
        out: &mut Output<'_>,
    ) -> Result<(), BoxError> {
        for (bytes, zeros) in sizes {
            out.emit(path, format!("{bytes} {zeros}"))?;
        }
        Ok(())
    }
}

impl Job for FileSizes {
    const NAME: &'static str = "it-file-sizes";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_files_reach_map_file_with_their_bytes_and_a_file_past_the_limit_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    fs::create_dir(&input).unwrap();
    let files: Vec<(String, Vec<u8>)> = vec![
        ("a.bin".into(), vec![0, 1, 2, 0, 255, b'\n', 0]),
        ("b.txt".into(), b"no newline at the end".to_vec()),
        ("c.txt".into(), "line\n".repeat(5000).into_bytes()),
    ];
    for (name, bytes) in &files {
        fs::write(input.join(name), bytes).unwrap();
    }
    let cluster = Cluster::local(2).await.unwrap();
    let out = dir.path().join("out");
    let spec = JobSpec::new(FileSizes, [&input], &out).input_format(InputFormat::WholeFiles).shard_size(1000);
    let report = cluster.run(spec).await.unwrap();
    assert_eq!(report.counters["map_input_records"], 3, "one record a file");
    let mut want: Vec<String> = files
        .iter()
        .map(|(n, b)| format!("{}\t{} {}", input.join(n).display(), b.len(), b.iter().filter(|&&x| x == 0).count()))
        .collect();
    want.sort();
    assert_eq!(output_lines(&out), want, "whole, never cut, whatever the shard size");
    let spec = JobSpec::new(FileSizes, [&input], dir.path().join("big"))
        .input_format(InputFormat::WholeFiles)
        .max_line_bytes(4096);
    let err = cluster.run(spec).await.unwrap_err().to_string();
    assert!(err.contains("c.txt (a whole file) is longer than the limit of 4096 bytes"), "{err}");
}
