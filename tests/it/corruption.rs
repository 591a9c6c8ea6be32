//! Map output corrupted, truncated or deleted between the phases: the reduce reports the
//! loss, the master re-runs the map, and the job's output is still exact.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use mapreduce::worker::{Registry, Worker, WorkerService};
use mapreduce::{Cluster, JobSpec, SchedulerConfig};
use mapreduce_examples::corpus::generate_corpus;
use mapreduce_examples::wordcount::WordCount;
use mapreduce_rpc::pb;
use mapreduce_rpc::pb::worker_server::Worker as _;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use crate::support::{Hooks, assert_wordcount_output, init_tracing, serve_hooked};

/// What happens to the first map output a reduce is about to read.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// One byte of its range flipped.
    Flip,
    /// The file cut in the middle of the range.
    Truncate,
    /// The file deleted.
    Delete,
}

/// The real worker service, damaging one map output (once in all) before a reduce reads it.
struct Damaging {
    damage: Damage,
    /// Whether the damage is done (shared by every worker of the test).
    done: Arc<Mutex<bool>>,
}

impl Damaging {
    fn hurt(&self, req: &pb::ReduceRequest) {
        let mut done = self.done.lock().unwrap();
        let Some(input) = req.inputs.iter().find(|i| i.bytes > 16) else { return };
        if *done {
            return;
        }
        *done = true;
        let path = &req.locations[input.location as usize];
        match self.damage {
            Damage::Flip => {
                let mut bytes = std::fs::read(path).unwrap();
                bytes[(input.offset + input.bytes / 2) as usize] ^= 0x40;
                std::fs::write(path, bytes).unwrap();
            }
            Damage::Truncate => {
                let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
                file.set_len(input.offset + input.bytes / 2).unwrap();
            }
            Damage::Delete => std::fs::remove_file(path).unwrap(),
        }
    }
}

#[tonic::async_trait]
impl Hooks for Damaging {
    async fn reduce(
        &self,
        inner: &WorkerService,
        request: Request<pb::ReduceRequest>,
    ) -> Result<Response<pb::ReduceResponse>, Status> {
        self.hurt(request.get_ref());
        inner.reduce(request).await
    }
}

async fn damaging_workers(n: usize, damage: Damage) -> (Vec<SocketAddr>, Vec<oneshot::Sender<()>>) {
    let done = Arc::new(Mutex::new(false));
    let (mut addrs, mut stops) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let registry = Registry::new().register::<WordCount>();
        let inner = Worker::new(registry).with_root(std::env::temp_dir()).into_service().unwrap();
        let (addr, stop) = serve_hooked(inner, Damaging { damage, done: done.clone() }).await;
        addrs.push(addr);
        stops.push(stop);
    }
    (addrs, stops)
}

#[tokio::test]
async fn a_corrupt_truncated_or_deleted_map_output_is_re_made_and_the_count_is_exact() {
    init_tracing();
    for damage in [Damage::Flip, Damage::Truncate, Damage::Delete] {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.txt");
        generate_corpus(&input, 256 << 10, 3_000, 5).unwrap();
        let (addrs, _stops) = damaging_workers(2, damage).await;
        // The map output in the job's work directory, where this test damages it.
        let cluster = Cluster::connect(addrs.iter().map(|a| a.to_string()))
            .unwrap()
            .with_worker_shuffle(false)
            .with_scheduler_config(SchedulerConfig { speculation: false, ..SchedulerConfig::default() });
        let out = dir.path().join("out");
        let spec = JobSpec::new(WordCount, [&input], &out).reducers(3).shard_size(64 << 10);
        let report = cluster.run(spec).await.unwrap_or_else(|e| panic!("{damage:?}: {e}"));
        assert_wordcount_output(&out, 3, std::slice::from_ref(&input));
        assert_eq!(report.map_outputs_lost, 1, "{damage:?}: {report:?}");
        assert!(report.attempts.map_reruns >= 1, "{damage:?}: {report:?}");
        // Every reduce that met the loss failed (a deleted file is met by all that run
        // then); the map ran again once.
        assert!((1..=3).contains(&report.attempts.failed), "{damage:?}: {report:?}");
    }
}
