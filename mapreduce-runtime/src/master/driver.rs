//! The driver loop: one task owns the [`Scheduler`] until the job ends.
//!
//! Every call in flight is a future in a `FuturesUnordered`, under its deadline. When one
//! completes, its event is fed to the scheduler with the current time, and the actions the
//! scheduler asks for are started; when [`Scheduler::poll_timeout`] passes, the actions
//! are drained again. No thread per worker, no lock around the scheduler. Workers that
//! join ([`Joined`]) are added to the job as the driver sees them.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use mapreduce_core::scheduler::{Action, Event, Failure, JobStatus, WorkerId};
use mapreduce_core::{JobError, JobReport, Scheduler};
use tokio::sync::oneshot;

use super::join::Joined;
use super::transport::Transport;

/// A call in flight: its event, or `None` for an idle Wait that was woken (dropped).
type Call = Pin<Box<dyn Future<Output = Option<Event>> + Send>>;

/// Drives `scheduler` through `transport` until the job finishes, adding the workers that
/// join (`joined`, if the master listens) as they do.
pub(crate) async fn drive(
    mut scheduler: Scheduler,
    transport: &mut dyn Transport,
    joined: Option<&Joined>,
    progress: &tokio::sync::watch::Sender<Option<JobStatus>>,
) -> Result<JobReport, JobError> {
    let mut calls: FuturesUnordered<Call> = FuturesUnordered::new();
    // Per worker, what wakes its Wait in flight: dropping the sender drops the call.
    let mut wakers: HashMap<WorkerId, oneshot::Sender<()>> = HashMap::new();
    let mut joins = joined.map(|j| j.subscribe());
    // Of the joined workers, how many this job has seen.
    let mut seen = 0;
    if let Some(joins) = &mut joins {
        add_joined(&mut scheduler, transport, joins, &mut seen);
    }
    loop {
        let now = tokio::time::Instant::now().into_std();
        while let Some(action) = scheduler.poll_action(now) {
            match action {
                Action::Run { worker, attempt, task, spec, deadline } => {
                    tracing::debug!(%task, %attempt, worker = %transport.addr(worker), "run");
                    let call = transport.run(worker, attempt, task, spec);
                    calls.push(Box::pin(async move {
                        let reason = match tokio::time::timeout(deadline, call).await {
                            Ok(Ok(output)) => return Some(Event::Succeeded { attempt, output }),
                            Ok(Err(reason)) => reason,
                            Err(_) => Failure::TimedOut,
                        };
                        Some(Event::Failed { attempt, reason })
                    }));
                }
                Action::Wait { worker, wait, for_, deadline } => {
                    let (wake, woken) = oneshot::channel::<()>();
                    wakers.insert(worker, wake);
                    let call = transport.wait(worker, for_);
                    let addr = transport.addr(worker).to_string();
                    calls.push(Box::pin(async move {
                        let answer = tokio::select! {
                            answer = tokio::time::timeout(deadline, call) => answer,
                            _ = woken => return None,
                        };
                        let reason = match answer {
                            Ok(Ok(())) => return Some(Event::WaitAnswered { wait }),
                            Ok(Err(reason)) => reason,
                            Err(_) => Failure::TimedOut,
                        };
                        tracing::warn!(%worker, %addr, %reason, "wait failed");
                        Some(Event::WaitFailed { wait, reason })
                    }));
                }
                Action::Wake { worker, wait } => {
                    tracing::debug!(worker = %transport.addr(worker), %wait, "wake");
                    wakers.remove(&worker);
                }
                Action::Discard(output) => transport.discard(output),
                Action::Finished(result) => {
                    publish(&scheduler, progress);
                    return result;
                }
            }
        }
        publish(&scheduler, progress);
        let wake = scheduler.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            Some(event) = calls.next() => {
                if let Some(event) = event {
                    scheduler.handle_event(tokio::time::Instant::now().into_std(), event);
                }
            }
            () = async { tokio::time::sleep_until(wake.expect("guarded")).await }, if wake.is_some() => {}
            Ok(()) = async { joins.as_mut().expect("guarded").changed().await }, if joins.is_some() => {
                add_joined(&mut scheduler, transport, joins.as_mut().expect("guarded"), &mut seen);
            }
            else => {
                panic!("scheduler stalled: no call in flight and no timeout pending ({:?})", scheduler.status());
            }
        }
    }
}

/// Sends the scheduler's status to whoever watches the progress, if it changed.
fn publish(scheduler: &Scheduler, progress: &tokio::sync::watch::Sender<Option<JobStatus>>) {
    progress.send_if_modified(|last| {
        let now = Some(scheduler.status());
        let changed = *last != now;
        *last = now;
        changed
    });
}

/// Adds to the job the workers that joined since `seen`, but those it has already.
fn add_joined(
    scheduler: &mut Scheduler,
    transport: &mut dyn Transport,
    joins: &mut tokio::sync::watch::Receiver<Vec<super::transport::WorkerEndpoint>>,
    seen: &mut usize,
) {
    let fresh: Vec<_> = joins.borrow_and_update().iter().skip(*seen).cloned().collect();
    for endpoint in fresh {
        *seen += 1;
        if transport.knows(&endpoint.addr) {
            continue;
        }
        let now = tokio::time::Instant::now().into_std();
        let Some(worker) = scheduler.add_worker(now) else {
            tracing::warn!(addr = %endpoint.addr, "a worker joined too late or past the most workers: not used");
            continue;
        };
        tracing::info!(%worker, addr = %endpoint.addr, "worker joins the job");
        transport.add(endpoint);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use mapreduce_core::scheduler::{
        AttemptId, JobPlan, Location, MapOutputRange, TaskId, TaskKind, TaskOutput, TaskSpec,
    };
    use mapreduce_core::shard::{Segment, Shard};
    use mapreduce_core::{JobError, SchedulerConfig};
    use tokio::time::Instant;

    use super::*;

    /// A progress channel nobody watches.
    fn watch() -> tokio::sync::watch::Sender<Option<JobStatus>> {
        tokio::sync::watch::Sender::new(None)
    }
    use crate::master::transport::Reply;

    /// What a fake worker does with a call.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Behaviour {
        /// Answers after this long.
        After(Duration),
        /// Never answers.
        Hang,
        /// Fails the task at once.
        Fail,
    }

    /// Workers in memory: each answers as its behaviour says, in simulated time.
    struct Fake {
        reducers: u32,
        behaviour: Vec<Behaviour>,
        /// Calls started, per (worker, kind of call).
        started: Mutex<HashMap<(u32, &'static str), u32>>,
        /// Wait calls dropped before they ended (woken, or past their deadline).
        waits_dropped: std::sync::Arc<AtomicU32>,
        discarded: Mutex<Vec<TaskOutput>>,
    }

    impl Fake {
        fn new(reducers: u32, behaviour: Vec<Behaviour>) -> Self {
            Fake {
                reducers,
                behaviour,
                started: Mutex::default(),
                waits_dropped: Default::default(),
                discarded: Mutex::default(),
            }
        }

        fn count(&self, worker: WorkerId, call: &'static str) {
            *self.started.lock().unwrap().entry((worker.0, call)).or_default() += 1;
        }

        fn started(&self, worker: u32, call: &'static str) -> u32 {
            self.started.lock().unwrap().get(&(worker, call)).copied().unwrap_or(0)
        }
    }

    /// Counts a Wait dropped before it finished.
    struct DropCount(std::sync::Arc<AtomicU32>, bool);

    impl Drop for DropCount {
        fn drop(&mut self) {
            if !self.1 {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    impl Transport for Fake {
        fn wait(&self, worker: WorkerId, for_: Duration) -> Reply<()> {
            self.count(worker, "wait");
            let guard = DropCount(self.waits_dropped.clone(), false);
            Box::pin(async move {
                let mut guard = guard;
                tokio::time::sleep(for_).await;
                guard.1 = true;
                Ok(())
            })
        }

        fn run(&self, worker: WorkerId, attempt: AttemptId, task: TaskId, spec: TaskSpec) -> Reply<TaskOutput> {
            self.count(worker, if task.kind == TaskKind::Map { "map" } else { "reduce" });
            let behaviour = self.behaviour[worker.0 as usize];
            let output = match spec {
                TaskSpec::Map { .. } => TaskOutput::Map {
                    location: Location::new(format!("m{}-{attempt}", task.index)),
                    ranges: (0..self.reducers)
                        .map(|partition| MapOutputRange {
                            map: task.index,
                            attempt,
                            partition,
                            offset: u64::from(partition),
                            bytes: 1,
                            records: 1,
                        })
                        .collect(),
                    input_records: 1,
                    skipped_records: 0,
                    counters: Default::default(),
                },
                TaskSpec::Reduce { partition, inputs } => TaskOutput::Reduce {
                    path: format!("r{partition}-{attempt}"),
                    records: inputs.len() as u64,
                    bytes: 1,
                    counters: Default::default(),
                },
            };
            Box::pin(async move {
                match behaviour {
                    Behaviour::After(d) => {
                        tokio::time::sleep(d).await;
                        Ok(output)
                    }
                    Behaviour::Hang => std::future::pending().await,
                    Behaviour::Fail => Err(Failure::Task("boom".into())),
                }
            })
        }

        fn discard(&self, output: TaskOutput) {
            self.discarded.lock().unwrap().push(output);
        }

        fn addr(&self, _: WorkerId) -> &str {
            "fake"
        }

        fn knows(&self, _: &str) -> bool {
            false
        }

        fn add(&mut self, _: crate::master::transport::WorkerEndpoint) {
            self.behaviour.push(Behaviour::After(100 * MS));
        }
    }

    fn scheduler(maps: u32, reducers: u32, workers: u32, config: SchedulerConfig) -> Scheduler {
        let shards = (0..maps)
            .map(|i| Shard { segments: vec![Segment { path: format!("/in/{i}"), start: 0, end: 10 }] })
            .collect();
        Scheduler::new(JobPlan { shards, reducers, workers, outputs_on_workers: false }, config).unwrap()
    }

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn an_attempt_past_its_deadline_fails_and_runs_again_elsewhere() {
        let config =
            SchedulerConfig { task_timeout: Duration::from_secs(10), speculation: false, ..Default::default() };
        let mut fake = Fake::new(1, vec![Behaviour::Hang, Behaviour::After(100 * MS)]);
        let started = Instant::now();
        let report = drive(scheduler(1, 1, 2, config), &mut fake, None, &watch()).await.unwrap();
        // Worker 0 takes the map first and hangs: its deadline passes after 10 s, simulated.
        assert!(started.elapsed() >= Duration::from_secs(10), "{:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(11), "{:?}", started.elapsed());
        assert_eq!(report.attempts.timed_out, 1);
        assert_eq!(fake.started(0, "map"), 1);
        assert_eq!(fake.started(1, "map"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_wait_is_woken_when_reduces_appear_and_its_call_dropped() {
        // Worker 1 finds nothing to do while worker 0 maps, and waits 50 s; the reduce
        // phase wakes it at once.
        let config = SchedulerConfig { idle_wait: Duration::from_secs(50), speculation: false, ..Default::default() };
        let mut fake = Fake::new(2, vec![Behaviour::After(100 * MS), Behaviour::After(100 * MS)]);
        let started = Instant::now();
        let report = drive(scheduler(1, 2, 2, config), &mut fake, None, &watch()).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1), "woken, not after its wait: {:?}", started.elapsed());
        assert_eq!((fake.started(1, "wait"), fake.started(1, "reduce")), (1, 1), "one woken wait, then a reduce");
        assert!(fake.waits_dropped.load(Ordering::Relaxed) >= 1);
        assert_eq!(report.output_records, 2, "each reduce read its one input");
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_joins_mid_job_gets_tasks_and_one_that_joined_before_the_job_too() {
        use crate::master::transport::{Scheme, WorkerEndpoint};
        use crate::security::Security;
        let endpoint = |addr: &str| WorkerEndpoint::new(addr, &Security::new(), Scheme::Strict).unwrap();
        let joined: Joined = tokio::sync::watch::Sender::new(vec![endpoint("127.0.0.1:1")]);
        let config = SchedulerConfig { speculation: false, ..Default::default() };
        // Worker 0 (static) takes 10 s a task; worker 1 joined before the job; worker 2 joins
        // after 1 s. The joined ones take 100 ms a task, so they do most of the 20 maps.
        let mut fake = Fake::new(1, vec![Behaviour::After(Duration::from_secs(10))]);
        let late = joined.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            late.send_modify(|list| list.push(endpoint("127.0.0.1:2")));
        });
        let report = drive(scheduler(20, 1, 1, config), &mut fake, Some(&joined), &watch()).await.unwrap();
        assert_eq!(report.workers.len(), 3);
        assert_eq!(fake.started(0, "map"), 1, "the slow worker takes one map");
        assert!(fake.started(1, "map") >= 10, "{}", fake.started(1, "map"));
        assert!(fake.started(2, "map") >= 1, "the late worker gets tasks at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_keeps_failing_fails_the_job_naming_it() {
        let config = SchedulerConfig { probation_after: 0, ..Default::default() };
        let mut fake = Fake::new(1, vec![Behaviour::Fail]);
        let err = drive(scheduler(2, 1, 1, config), &mut fake, None, &watch()).await.unwrap_err();
        let JobError::TaskFailed { task, attempts, .. } = &err else { panic!("{err}") };
        assert_eq!((task.kind, *attempts), (TaskKind::Map, 4));
        assert!(err.to_string().contains("boom"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_its_deadline_rests_the_worker_until_it_answers_again() {
        // A worker whose Waits hang is unreachable; with no other worker the job gives up
        // after no_worker_timeout, in simulated time.
        struct Silent;
        impl Transport for Silent {
            fn wait(&self, _: WorkerId, _: Duration) -> Reply<()> {
                Box::pin(std::future::pending())
            }
            fn run(&self, _: WorkerId, _: AttemptId, _: TaskId, _: TaskSpec) -> Reply<TaskOutput> {
                Box::pin(async { Err(Failure::Unreachable("connection refused".into())) })
            }
            fn discard(&self, _: TaskOutput) {}
            fn addr(&self, _: WorkerId) -> &str {
                "silent"
            }
            fn knows(&self, _: &str) -> bool {
                false
            }
            fn add(&mut self, _: crate::master::transport::WorkerEndpoint) {}
        }
        let config = SchedulerConfig { no_worker_timeout: Duration::from_secs(30), ..Default::default() };
        let started = Instant::now();
        let err = drive(scheduler(1, 1, 1, config), &mut Silent, None, &watch()).await.unwrap_err();
        assert!(matches!(err, JobError::NoWorkers { .. }), "{err}");
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(30) && took < Duration::from_secs(40), "{took:?}");
    }
}
