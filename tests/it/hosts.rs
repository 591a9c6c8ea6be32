//! Workers on hosts of their own. Each worker is a process in a Linux network namespace
//! that the test makes, joined to the master by a veth pair on a bridge of the test's, with
//! its own mount namespace and a private tmpfs mounted over the test's directory: it sees
//! neither the input nor the output directory, and nothing is shared but what the
//! framework sends (shards streamed by the master, map output fetched from the worker
//! that wrote it, reduce output pulled by the master). The master is this process, on the
//! bridge's address.
//!
//! The addresses are in 198.18.0.0/15, the range set aside for benchmarking networks (RFC
//! 2544), so they are nobody's real network. Making namespaces needs root (CAP_NET_ADMIN
//! and CAP_SYS_ADMIN), `ip` and `unshare`: where they are missing each test says so and
//! passes without running.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mapreduce::security::Token;
use mapreduce::worker::{Registry, Worker};
use mapreduce::{Cluster, Job, JobReport, JobSpec, RunError, SchedulerConfig};
use mapreduce_examples::corpus::generate_corpus;
use mapreduce_examples::wordcount::WordCount;

use crate::processes::SlowWordCount;
use crate::support::assert_wordcount_output;

/// What a host's worker prints before the address it listens on.
const BANNER: &str = "host worker listening on ";

/// The environment of [`host_worker`]: the address to listen on (which makes it a worker),
/// the directory that is its private tmpfs, the token, and the master to join (optional).
const LISTEN: &str = "MAPREDUCE_IT_HOST_LISTEN";
const DIR: &str = "MAPREDUCE_IT_HOST_DIR";
const TOKEN: &str = "MAPREDUCE_IT_HOST_TOKEN";
const JOIN: &str = "MAPREDUCE_IT_HOST_JOIN";

/// The slow jobs' shard size: 48 map tasks of a [`SLOW_INPUT`] corpus.
const SLOW_SHARD: u64 = 16 << 10;
const SLOW_INPUT: u64 = 48 * SLOW_SHARD;
const SLOW_MAPS: u32 = 48;

/// The slow word count of a [`SLOW_INPUT`] corpus: 48 maps of 50 ms at least, 4 reduces of
/// half a second (a few thousand keys).
fn slow_spec(input: &Path, out: &Path) -> JobSpec<SlowWordCount> {
    let job = SlowWordCount { block_delay_ms: 50, key_delay_us: 500 };
    JobSpec::new(job, [input], out).reducers(4).shard_size(SLOW_SHARD)
}

/// Not a test: the worker of a host, which [`Net::start_host`] runs (this binary again,
/// with `--exact hosts::host_worker --ignored` and [`LISTEN`] set) inside the host's
/// namespaces. Without [`LISTEN`] it returns at once. One task at a time; it drains on
/// SIGTERM.
#[test]
#[ignore = "the entry point of the host tests' worker processes"]
#[allow(clippy::print_stdout)] // the test that started this process reads the address from stdout
fn host_worker() {
    let Ok(listen) = std::env::var(LISTEN) else { return };
    let dir = PathBuf::from(std::env::var(DIR).unwrap());
    let token = Token::new(std::env::var(TOKEN).unwrap()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let registry = Registry::new().register::<SlowWordCount>().register::<WordCount>();
        let mut worker =
            Worker::new(registry).with_token(token).with_root(&dir).with_work_dir(dir.join("work")).with_max_tasks(1);
        if let Ok(master) = std::env::var(JOIN) {
            worker = worker.with_join(master);
        }
        let listener = tokio::net::TcpListener::bind(&listen).await.unwrap();
        println!("{BANNER}{}", listener.local_addr().unwrap());
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        worker.serve_with_drain(listener, async move { sigterm.recv().await.unwrap_or(()) }).await.unwrap();
    });
}

/// Runs `ip` with `args`; its stderr on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A host: a worker process in namespaces of its own.
struct Host {
    child: Child,
    /// The worker's address, on the bridge.
    addr: String,
    /// The bridge's end of its veth pair: its link to everyone else.
    port: String,
}

/// The test's network: a bridge with the master's address, the hosts on it, and the
/// directory that holds the master's files (and that every host covers with its tmpfs).
/// Dropped, it kills the hosts and removes the namespaces and the bridge.
struct Net {
    /// Names this network's interfaces and namespaces apart from those of other tests and
    /// other runs: the process id and the test's number.
    id: String,
    /// The first three octets of its /24.
    subnet: String,
    bridge: String,
    namespaces: Vec<String>,
    hosts: Vec<Host>,
    /// The token's secret, which the hosts get in their environment.
    secret: String,
    token: Token,
    dir: tempfile::TempDir,
}

impl Net {
    /// A bridge and its /24 for test number `n` (below 8), or `None`, said on stderr, where
    /// this machine cannot make the namespaces.
    fn new(n: u32, test: &str) -> Option<Net> {
        assert!(n < 8);
        crate::support::init_tracing();
        let pid = std::process::id();
        let slot = pid % 64 * 8 + n;
        let subnet = format!("198.{}.{}", 18 + slot / 256, slot % 256);
        let id = format!("{pid}{n}");
        let secret = format!(
            "it-hosts-{pid}-{n}-{:x}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        );
        let net = Net {
            bridge: format!("mrb{id}"),
            id,
            subnet,
            namespaces: Vec::new(),
            hosts: Vec::new(),
            token: Token::new(secret.clone()).unwrap(),
            secret,
            dir: tempfile::tempdir().unwrap(),
        };
        match net.make_bridge().and_then(|()| net.probe()) {
            Ok(()) => Some(net),
            Err(e) => {
                eprintln!("skipping {test}: cannot make hosts in network namespaces here (needs root): {e}");
                None
            }
        }
    }

    fn make_bridge(&self) -> Result<(), String> {
        let master = format!("{}.1/24", self.subnet);
        ip(&["link", "add", &self.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &master, "dev", &self.bridge])?;
        ip(&["link", "set", &self.bridge, "up"])
    }

    /// Whether a mount namespace with a tmpfs can be made (a container may allow network
    /// namespaces and not that).
    fn probe(&self) -> Result<(), String> {
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "mount", "-t", "tmpfs", "mapreduce-it"])
            .arg(self.dir.path())
            .output()
            .map_err(|e| format!("cannot run unshare: {e}"))?;
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_string()) }
    }

    /// The master's address: the bridge's, port chosen by the OS.
    fn master_listen(&self) -> String {
        format!("{}.1:0", self.subnet)
    }

    /// The master's own directory (inputs and outputs), which no host can see.
    fn data(&self) -> PathBuf {
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        data
    }

    /// Makes host number `hosts.len()`: a namespace, a veth pair to the bridge, and its
    /// worker process, which joins the master at `join` if given. Returns its index.
    fn start_host(&mut self, join: Option<SocketAddr>) -> usize {
        let i = self.namespaces.len();
        let ns = format!("mr{}-{i}", self.id);
        let port = format!("mrv{}{i}", self.id);
        let addr = format!("{}.{}/24", self.subnet, i + 2);
        ip(&["netns", "add", &ns]).unwrap();
        self.namespaces.push(ns.clone());
        ip(&["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns]).unwrap();
        ip(&["link", "set", &port, "master", &self.bridge, "up"]).unwrap();
        ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"]).unwrap();
        ip(&["-n", &ns, "link", "set", "eth0", "up"]).unwrap();
        ip(&["-n", &ns, "link", "set", "lo", "up"]).unwrap();

        // ip netns exec and unshare exec (no fork), and so does the shell after mounting:
        // the child is the worker itself.
        let dir = self.dir.path().to_str().unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns, "unshare", "--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("mount -t tmpfs -o size=256m mapreduce-it \"$0\" && exec \"$@\"")
            .arg(dir)
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", "hosts::host_worker", "--ignored", "--nocapture"])
            .env(LISTEN, format!("{}.{}:0", self.subnet, i + 2))
            .env(DIR, dir)
            .env(TOKEN, &self.secret);
        if let Some(master) = join {
            cmd.env(JOIN, master.to_string());
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // The test harness may print before the banner, even on the same line.
        let addr = lines
            .by_ref()
            .map(Result::unwrap)
            .find_map(|line| Some(line.split_once(BANNER)?.1.trim().to_string()))
            .expect("the host's worker exited before saying where it listens");
        // Keep reading, so that the worker never blocks on a full pipe.
        thread::spawn(move || lines.for_each(drop));
        self.hosts.push(Host { child, addr, port });
        i
    }

    fn addrs(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.addr.clone()).collect()
    }

    /// The map tasks whose committed output lies in host `i`'s work directory, seen through
    /// its mount namespace (`/proc/PID/root`).
    fn map_outputs(&self, i: usize) -> BTreeSet<u32> {
        fn walk(dir: &Path, out: &mut BTreeSet<u32>) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&entry.path(), out);
                } else if let Some(task) = name.strip_prefix('m').and_then(|n| n.split_once("-a")) {
                    out.extend(task.0.parse::<u32>());
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(&self.host_work_dir(i), &mut out);
        out
    }

    /// What each host holds in its tmpfs, for a failure's message.
    fn describe(&self) -> String {
        let mut text = String::new();
        for (i, host) in self.hosts.iter().enumerate() {
            let root = self.host_work_dir(i);
            let files = root.parent().map(crate::support::tree_lossy).unwrap_or_default();
            text += &format!("host {i} ({}) holds {files:?}; ", host.addr);
        }
        text
    }

    /// Host `i`'s work directory, as this process sees it.
    fn host_work_dir(&self, i: usize) -> PathBuf {
        let pid = self.hosts[i].child.id();
        PathBuf::from(format!("/proc/{pid}/root")).join(self.dir.path().strip_prefix("/").unwrap()).join("work")
    }

    /// Waits until `done` holds, checking every 5 ms, for at most a minute.
    fn wait_until(&self, what: &str, mut done: impl FnMut(&Net) -> bool) {
        let start = Instant::now();
        while !done(self) {
            assert!(start.elapsed() < Duration::from_secs(60), "waited a minute for {what}; {}", self.describe());
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts `spec` on a master in its own thread: dialling `dial` and, with `listen`,
    /// listening on the bridge for hosts that join (its address is returned). Deadlines of
    /// 5 s, so that a host that stops answering is given up on quickly.
    fn start_master<J: Job + Send + Sync + 'static>(
        &self,
        dial: Vec<String>,
        listen: bool,
        spec: JobSpec<J>,
    ) -> (Option<SocketAddr>, JoinHandle<Result<JobReport, RunError>>) {
        let token = self.token.clone();
        let listen = listen.then(|| self.master_listen());
        let (tx, rx) = mpsc::channel();
        let job = thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let cluster = Cluster::connect(dial)
                    .unwrap()
                    .with_token(token)
                    .with_worker_shuffle(true)
                    .with_task_timeout(Duration::from_secs(5));
                let config = SchedulerConfig {
                    no_worker_timeout: Duration::from_secs(30),
                    ..cluster.scheduler_config().clone()
                };
                let mut cluster = cluster.with_scheduler_config(config);
                if let Some(listen) = listen {
                    let listener = tokio::net::TcpListener::bind(&listen).await.unwrap();
                    cluster = cluster.listen(listener).unwrap();
                }
                tx.send(cluster.listen_addr()).unwrap();
                cluster.run(spec).await
            })
        });
        (rx.recv().unwrap(), job)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            let _ = host.child.kill();
            let _ = host.child.wait();
        }
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// Three hosts dialled by the master, running the slow word count of a fresh corpus
/// (`seed`): the network, the input, the output directory and the job.
fn three_hosts_slow_job(mut net: Net, seed: u64) -> (Net, PathBuf, PathBuf, JoinHandle<Result<JobReport, RunError>>) {
    let input = corpus(&net, "corpus.txt", SLOW_INPUT, 5_000, seed);
    let out = net.data().join("out");
    for _ in 0..3 {
        net.start_host(None);
    }
    let (_, job) = net.start_master(net.addrs(), false, slow_spec(&input, &out));
    (net, input, out, job)
}

/// Waits for `job`, at most two minutes.
fn finish(job: JoinHandle<Result<JobReport, RunError>>) -> JobReport {
    let start = Instant::now();
    while !job.is_finished() {
        assert!(start.elapsed() < Duration::from_secs(120), "the job did not end in two minutes");
        thread::sleep(Duration::from_millis(20));
    }
    job.join().unwrap().unwrap()
}

fn corpus(net: &Net, name: &str, bytes: u64, vocabulary: usize, seed: u64) -> PathBuf {
    let path = net.data().join(name);
    generate_corpus(&path, bytes, vocabulary, seed).unwrap();
    path
}

#[test]
fn the_word_count_on_three_hosts_equals_the_sequential_count() {
    let Some(mut net) = Net::new(0, "the_word_count_on_three_hosts_equals_the_sequential_count") else { return };
    let inputs = [corpus(&net, "a.txt", 3 << 20, 20_000, 1), corpus(&net, "b.txt", 1 << 20, 20_000, 2)];
    let out = net.data().join("out");
    for _ in 0..3 {
        net.start_host(None);
    }
    let spec = JobSpec::new(WordCount, inputs.clone(), &out).reducers(3).shard_size(256 << 10);
    let (_, job) = net.start_master(net.addrs(), false, spec);
    let report = finish(job);
    assert_wordcount_output(&out, 3, &inputs);
    assert_eq!(report.map_tasks, 16);
    assert_eq!(report.workers.iter().map(|w| w.addr.clone()).collect::<Vec<_>>(), net.addrs());
    assert!(report.workers.iter().all(|w| w.accepted > 0), "every host took tasks: {report:?}");
    assert_eq!((report.attempts.failed, report.map_outputs_lost), (0, 0), "{report:?}");
    // Map output and held reduce output are gone from the hosts once the job has ended.
    for i in 0..3 {
        assert_eq!(net.map_outputs(i), BTreeSet::new(), "host {i} still holds map output");
    }
}

#[test]
fn a_host_killed_after_its_maps_finished_is_survived_by_running_them_again() {
    let Some(net) = Net::new(1, "a_host_killed_after_its_maps_finished_is_survived_by_running_them_again") else {
        return;
    };
    let (mut net, input, out, job) = three_hosts_slow_job(net, 3);
    // Every map has finished (its output committed on some host): the reduces need them all.
    net.wait_until("the map phase to end", |net| {
        (0..3).flat_map(|i| net.map_outputs(i)).collect::<BTreeSet<_>>().len() == SLOW_MAPS as usize
    });
    let victim = (0..3).max_by_key(|&i| net.map_outputs(i).len()).unwrap();
    let held = net.map_outputs(victim).len() as u64;
    net.hosts[victim].child.kill().unwrap();
    net.hosts[victim].child.wait().unwrap();
    assert!(!job.is_finished(), "the job ended before the host was killed");
    let report = finish(job);
    assert_wordcount_output(&out, 4, &[input]);
    assert_eq!(report.map_tasks, SLOW_MAPS);
    // Its outputs were lost (some may have been fetched already) and run again elsewhere.
    assert!(report.map_outputs_lost >= 1 && report.map_outputs_lost <= held, "held {held}: {report:?}");
    assert!(report.attempts.map_reruns >= 1, "{report:?}");
}

#[test]
fn a_host_whose_link_is_cut_mid_job_is_survived() {
    let Some(net) = Net::new(2, "a_host_whose_link_is_cut_mid_job_is_survived") else { return };
    let (net, input, out, job) = three_hosts_slow_job(net, 4);
    net.wait_until("host 0 to hold map output", |net| net.map_outputs(0).len() >= 3);
    // Its port on the bridge goes down: packets to and from it vanish, no one is told.
    ip(&["link", "set", &net.hosts[0].port, "down"]).unwrap();
    let cut = Instant::now();
    assert!(!job.is_finished(), "the job ended before the link was cut");
    let report = finish(job);
    assert_wordcount_output(&out, 4, &[input]);
    let host = &report.workers[0];
    assert!(host.timed_out + host.lost >= 1, "the cut host's running attempt was given up on: {report:?}");
    // Every map output the master had accepted from it was lost and run again. (A map it
    // had written but not yet answered when the link went is the attempt given up on:
    // the files on the host run ahead of the replies.)
    assert!(
        host.accepted >= 1 && report.map_outputs_lost >= host.accepted,
        "its map output was lost and run again: {report:?}"
    );
    eprintln!("the job ended {:?} after the link was cut: {report:?}", cut.elapsed());
}

#[test]
fn a_host_that_joins_mid_job_gets_tasks() {
    let Some(mut net) = Net::new(3, "a_host_that_joins_mid_job_gets_tasks") else { return };
    let input = corpus(&net, "corpus.txt", SLOW_INPUT, 5_000, 5);
    let out = net.data().join("out");
    let (at, job) = net.start_master(Vec::new(), true, slow_spec(&input, &out));
    let at = at.expect("the master listens");
    net.start_host(Some(at));
    net.start_host(Some(at));
    net.wait_until("the first hosts to run maps", |net| net.map_outputs(0).len() + net.map_outputs(1).len() >= 4);
    assert!(!job.is_finished(), "the job ended before the third host joined");
    let late = net.start_host(Some(at));
    let report = finish(job);
    assert_wordcount_output(&out, 4, &[input]);
    let mut listed: Vec<String> = report.workers.iter().map(|w| w.addr.clone()).collect();
    listed.sort();
    let mut hosts = net.addrs();
    hosts.sort();
    assert_eq!(listed, hosts, "the report lists every host that took part");
    let w = report.workers.iter().find(|w| w.addr == net.hosts[late].addr).unwrap();
    assert!(w.accepted >= 3, "the host that joined took tasks: {report:?}");
}

#[test]
fn a_host_drained_mid_job_leaves_when_its_output_is_no_longer_needed() {
    let Some(net) = Net::new(4, "a_host_drained_mid_job_leaves_when_its_output_is_no_longer_needed") else {
        return;
    };
    let (mut net, input, out, job) = three_hosts_slow_job(net, 6);
    net.wait_until("host 1 to hold map output", |net| net.map_outputs(1).len() >= 2);
    let status = Command::new("kill").args(["-TERM", &net.hosts[1].child.id().to_string()]).status().unwrap();
    assert!(status.success());
    // It still holds map output the reduces need: it keeps serving.
    thread::sleep(Duration::from_millis(300));
    assert!(net.hosts[1].child.try_wait().unwrap().is_none(), "the drained host left while its output was needed");
    let report = finish(job);
    assert_wordcount_output(&out, 4, &[input]);
    let w = report.workers.iter().find(|w| w.addr == net.hosts[1].addr).unwrap();
    assert!(w.drained && w.accepted >= 2, "{report:?}");
    assert_eq!((report.map_outputs_lost, report.attempts.failed), (0, 0), "{report:?}");
    // The job's end lets it go: it exits 0, promptly.
    let start = Instant::now();
    let status = loop {
        if let Some(status) = net.hosts[1].child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the drained host did not exit");
        thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the drained host exits 0: {status}");
}
