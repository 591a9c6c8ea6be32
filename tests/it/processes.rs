//! The wordcount example as real processes: workers and a master.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use mapreduce::wordcount::generate_corpus;

use crate::support::assert_wordcount_output;

/// The example binary built by `cargo test` beside this test binary.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("examples").join(format!("wordcount{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} is missing: run the tests with `cargo test`, which builds examples", bin.display());
    bin
}

/// A worker process, killed on drop.
struct WorkerProcess {
    child: Child,
    addr: String,
}

impl WorkerProcess {
    fn start(listen: &str) -> Self {
        let mut child = Command::new(example_binary())
            .args(["worker", "--listen", listen])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().rsplit(' ').next().unwrap().to_string();
        assert!(addr.starts_with("127.0.0.1:"), "unexpected worker banner {line:?}");
        WorkerProcess { child, addr }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn worker_and_master_processes_count_words() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    generate_corpus(&input, 1 << 20, 10_000, 3).unwrap();
    let workers: Vec<WorkerProcess> = (0..3).map(|_| WorkerProcess::start("127.0.0.1:0")).collect();
    let out = dir.path().join("out");
    let report = dir.path().join("report.json");
    let mut master = Command::new(example_binary());
    master.arg("master");
    for w in &workers {
        master.args(["--worker", &w.addr]);
    }
    let status = master
        .args(["--input", input.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .args(["--reducers", "3", "--shard-size", "100000", "--task-timeout", "30"])
        .args(["--report", report.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_wordcount_output(&out, 3, &[input]);
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["map_tasks"], 11);
    assert_eq!(report["reduce_tasks"], 3);
    for key in ["launched", "succeeded", "failed", "timed_out", "speculative"] {
        assert!(report["attempts"][key].is_u64(), "attempts.{key} in {report}");
    }
    for key in ["elapsed_ms", "input_bytes", "intermediate_bytes", "output_records"] {
        assert!(report[key].is_u64(), "{key} in {report}");
    }
}

#[test]
fn the_master_exits_non_zero_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(example_binary())
        .args(["master", "--worker", "127.0.0.1:1", "--input", "/no/such/input", "--output"])
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("wordcount:")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("/no/such/input"), "{stderr}");
}
