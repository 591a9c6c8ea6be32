//! The job runner (`mapreduce::cli`) through real processes: the example binaries grep,
//! invertedindex, topwords and sort, a config file that flags override, and a worker
//! that lacks the job type.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mapreduce_examples::wordcount::words;

use crate::support::output_lines;

/// The example binary `name`, built by `cargo test` beside the test binary.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("examples").join(name);
    assert!(bin.exists(), "{} is missing: run the tests with `cargo test`, which builds examples", bin.display());
    bin
}

/// Runs `name` with `args`, expecting success; returns its output.
fn ok(name: &str, args: &[&str]) -> Output {
    let out = Command::new(example(name)).args(args).env_remove("RUST_LOG").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} {args:?}: {}\n{stderr}", out.status);
    assert!(!stderr.contains('\x1b'), "no escape codes when stderr is not a terminal: {stderr}");
    out
}

/// A few text files: `(path, text)`.
fn texts(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for (i, n) in [300usize, 40, 1000].iter().enumerate() {
        let text: String = (0..*n)
            .map(|j| match (i + j) % 5 {
                0 => format!("ERROR {j}: the disk is full\n"),
                1 => format!("warning {j} of file {i}\n"),
                _ => format!("line {j}, nothing to see in file{i}\n"),
            })
            .collect();
        let path = dir.join(format!("f{i}.txt"));
        fs::write(&path, &text).unwrap();
        files.push((path, text));
    }
    files
}

#[test]
fn grep_prints_matches_as_grep_hn_does_with_absolute_paths() {
    let dir = tempfile::tempdir().unwrap();
    let files = texts(dir.path());
    let out = dir.path().join("out");
    let run = ok(
        "grep",
        &[
            "run",
            "--pattern",
            "^ERROR [0-9]+:",
            "--input",
            dir.path().to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--shard-size",
            "8KiB",
        ],
    );
    let mut want = Vec::new();
    for (path, text) in &files {
        for (i, line) in text.lines().enumerate() {
            if line.starts_with("ERROR ") {
                want.push(format!("{}:{}:{line}", path.display(), i + 1));
            }
        }
    }
    want.sort();
    assert_eq!(output_lines(&out), want);
    assert!(fs::read_dir(&out).unwrap().all(|e| {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        name == "_SUCCESS" || name.starts_with("part-m-")
    }));
    // Progress lines and the job summary on stderr, plain.
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.lines().any(|l| l.starts_with("grep: map ") && l.contains(", reduce 0/0")), "{stderr}");
    assert!(stderr.contains("grep: job done in ") && stderr.contains("map_output_records"), "{stderr}");

    // A bad pattern fails, naming it, in one line, leaving nothing.
    let bad = Command::new(example("grep"))
        .args(["run", "--pattern", "(unclosed", "--input", dir.path().to_str().unwrap(), "--output"])
        .arg(dir.path().join("bad"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("bad --pattern \"(unclosed\""), "{stderr}");
    assert!(!dir.path().join("bad").exists());
}

#[test]
fn invertedindex_lists_each_words_distinct_files_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    fs::create_dir(&input).unwrap();
    let files = texts(&input);
    let out = dir.path().join("out");
    ok(
        "invertedindex",
        &[
            "run",
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--workers",
            "3",
            "--reducers",
            "3",
            "--shard-size",
            "4KiB",
        ],
    );
    let mut index: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in &files {
        for word in words(text) {
            index.entry(word).or_default().insert(path.display().to_string());
        }
    }
    let mut want: Vec<String> = index
        .iter()
        .map(|(w, f)| format!("{w}\t{}\t{}", f.len(), f.iter().cloned().collect::<Vec<_>>().join(",")))
        .collect();
    want.sort();
    assert_eq!(output_lines(&out), want);
}

#[test]
fn topwords_passes_typed_records_between_its_two_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    fs::create_dir(&input).unwrap();
    let files = texts(&input);
    let out = dir.path().join("out");
    let run =
        // A trailing slash, as users type it: the stage's directory still goes beside the output.
        ok("topwords", &["run", "--input", input.to_str().unwrap(), "--output", &format!("{}/", out.display()), "--top", "5"]);
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, text) in &files {
        for word in words(text) {
            *counts.entry(word).or_default() += 1;
        }
    }
    let mut ranked: Vec<(u64, &str)> = counts.iter().map(|(w, n)| (*n, *w)).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let want: String = ranked.iter().take(5).map(|(n, w)| format!("{n}\t{w}\n")).collect();
    assert_eq!(fs::read_to_string(out.join("part-00000")).unwrap(), want);
    // Two jobs ran, the second reading one record per distinct word, and the stage's
    // directory is gone.
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(stderr.matches("topwords: job done in ").count(), 2, "{stderr}");
    let read: Vec<&str> = stderr.lines().filter(|l| l.contains("map_input_records")).collect();
    assert!(read[1].ends_with(&format!(" {}", counts.len())), "{read:?}");
    assert!(!dir.path().join("out.stages").exists());
}

#[test]
fn sort_samples_its_boundaries_and_its_parts_concatenate_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("records.txt");
    mapreduce_examples::corpus::generate_records(&input, 20_000, 9).unwrap();
    let out = dir.path().join("out");
    ok(
        "sort",
        &[
            "run",
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--reducers",
            "3",
            "--shard-size",
            "256KiB",
        ],
    );
    let expected = dir.path().join("expected.txt");
    mapreduce_examples::reference::sort_sequential(&[&input], &expected).unwrap();
    assert!(mapreduce_examples::reference::output_equals(&out, &expected).unwrap());
    for p in 0..3 {
        assert!(fs::metadata(out.join(format!("part-{p:05}"))).unwrap().len() > 0, "every range has records");
    }
}

#[test]
fn a_config_file_sets_the_shape_and_a_flag_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    fs::write(&input, "a b c d e f g\n".repeat(2000)).unwrap();
    let config = dir.path().join("job.toml");
    fs::write(&config, "[job]\nreducers = 3\nshard_size = \"8KiB\"\n[run]\nworkers = 3\n").unwrap();
    let report = dir.path().join("report.json");
    let args = |out: &str, extra: &[&str]| {
        let mut a = vec!["run", "--config", config.to_str().unwrap(), "--input", input.to_str().unwrap()];
        a.extend(["--output", out, "--report", report.to_str().unwrap()]);
        a.extend(extra.iter().map(|s| &**s));
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let shape = || {
        let json: serde_json::Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
        (json["map_tasks"].as_u64().unwrap(), json["reduce_tasks"].as_u64().unwrap())
    };
    let out1 = dir.path().join("out1");
    let a = args(out1.to_str().unwrap(), &[]);
    ok("wordcount", &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(shape(), (28000 / 8192 + 1, 3), "the file's shape: 8 KiB shards, 3 reducers");
    let out2 = dir.path().join("out2");
    let a = args(out2.to_str().unwrap(), &["--reducers", "2", "--shard-size", "1MiB"]);
    ok("wordcount", &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(shape(), (1, 2), "flags win");
    // A bad config names the file and line.
    fs::write(&config, "[job]\nreducers = \"many\"\n").unwrap();
    let out =
        Command::new(example("wordcount")).args(args(dir.path().join("o3").to_str().unwrap(), &[])).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("bad config {}:2", config.display())), "{stderr}");
}

#[test]
fn a_worker_without_the_job_type_fails_the_job_at_once_naming_job_and_worker() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    fs::write(&input, "some words here\n").unwrap();
    let mut worker = Command::new(example("grep"))
        .args(["worker", "--listen", "127.0.0.1:0", "--root"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = BufReader::new(worker.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let addr = line.rsplit(' ').next().unwrap().to_string();
    assert!(line.starts_with("grep: worker listening on "), "{line}");
    let start = Instant::now();
    let out = Command::new(example("invertedindex"))
        .args(["master", "--worker", &addr, "--input", input.to_str().unwrap(), "--output"])
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(!out.status.success());
    assert!(start.elapsed() < Duration::from_secs(20), "at once, not after retries");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("invertedindex: error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("\"invertedindex\"") && errors[0].contains(&addr), "{stderr}");
    assert!(errors[0].len() < 600, "short: {}", errors[0]);
}
