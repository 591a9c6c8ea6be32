//! The wordcount example as real processes: workers and a master.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use mapreduce_examples::corpus::{SplitMix64, generate_corpus};

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

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill").args([sig, &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// Starts a master process over `workers`.
fn master(workers: &[String], input: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> Child {
    let mut cmd = Command::new(example_binary());
    cmd.arg("master");
    for w in workers {
        cmd.args(["--worker", w]);
    }
    cmd.args(["--input", input.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn the_job_survives_workers_killed_restarted_and_stopped_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    generate_corpus(&input, 6 << 20, 20_000, 5).unwrap();
    for seed in [1u64, 2, 3] {
        let mut rng = SplitMix64::new(seed);
        let mut workers: Vec<WorkerProcess> = (0..3).map(|_| WorkerProcess::start("127.0.0.1:0")).collect();
        let addrs: Vec<String> = workers.iter().map(|w| w.addr.clone()).collect();
        let out = dir.path().join(format!("out-{seed}"));
        let extra = ["--reducers", "4", "--shard-size", "32768", "--task-timeout", "2", "--no-worker-timeout", "60"];
        let report = dir.path().join(format!("report-{seed}.json"));
        let extra = [&extra[..], &["--report", report.to_str().unwrap()]].concat();
        let mut m = master(&addrs, &input, &out, &extra);
        let mut kills = 0;
        let mut stopped = false;
        // Chaos while the master runs, at seeded moments: SIGKILL a worker and restart it
        // on the same address; once, SIGSTOP one for longer than the deadline.
        for round in 0.. {
            std::thread::sleep(std::time::Duration::from_millis(100 + rng.below(300)));
            if m.try_wait().unwrap().is_some() {
                break;
            }
            let victim = rng.below(workers.len() as u64) as usize;
            if round == 1 {
                let pid = workers[victim].child.id();
                signal(pid, "-STOP");
                std::thread::sleep(std::time::Duration::from_millis(3000));
                signal(pid, "-CONT");
                stopped = true;
            } else if kills < 6 {
                let addr = workers[victim].addr.clone();
                workers[victim].child.kill().unwrap();
                workers[victim].child.wait().unwrap();
                kills += 1;
                std::thread::sleep(std::time::Duration::from_millis(50 + rng.below(400)));
                workers[victim] = WorkerProcess::start(&addr);
                assert_eq!(workers[victim].addr, addr, "restarted on the same address");
            }
        }
        let output = m.wait_with_output().unwrap();
        assert!(output.status.success(), "seed {seed}: {}", String::from_utf8_lossy(&output.stderr));
        assert!(kills > 0 && stopped, "seed {seed}: the job ended before the chaos; make it longer");
        assert_wordcount_output(&out, 4, std::slice::from_ref(&input));
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        let hurt = report["attempts"]["lost"].as_u64().unwrap() + report["attempts"]["timed_out"].as_u64().unwrap();
        assert!(hurt > 0, "seed {seed}: no attempt was lost or timed out: {report}");
    }
}

#[test]
fn when_every_worker_dies_the_master_fails_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    generate_corpus(&input, 6 << 20, 20_000, 6).unwrap();
    let mut workers: Vec<WorkerProcess> = (0..2).map(|_| WorkerProcess::start("127.0.0.1:0")).collect();
    let addrs: Vec<String> = workers.iter().map(|w| w.addr.clone()).collect();
    let out = dir.path().join("out");
    let extra = ["--shard-size", "32768", "--task-timeout", "2", "--no-worker-timeout", "3"];
    let m = master(&addrs, &input, &out, &extra);
    std::thread::sleep(std::time::Duration::from_millis(300));
    for w in &mut workers {
        w.child.kill().unwrap();
        w.child.wait().unwrap();
    }
    let started = std::time::Instant::now();
    let output = m.wait_with_output().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "bounded time");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no worker has been reachable"), "{stderr}");
    assert!(!out.join("_SUCCESS").exists());
    assert!(!out.exists(), "the output directory the job created is removed");
}
