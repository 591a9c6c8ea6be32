//! What a worker's answer means to the master: a status as the scheduler's [`Failure`]
//! (unreachable, timed out, busy, draining, refused, lost map output, or the task's own
//! failure), and a map or reduce reply checked before the scheduler hears it (a worker's
//! reply is not trusted: the master never deletes or hands on a path a worker made up,
//! nor keeps counters past their limits).

use std::path::Path;

use mapreduce_core::Counters;
use mapreduce_core::scheduler::{AttemptId, Failure, Location, MapOutputRange, TaskOutput};
use mapreduce_rpc::pb;

use crate::convert;
use crate::error::{DRAINING, HOLDER_GONE, LOST_ATTEMPT, LOST_MAP, REFUSED};
use crate::shuffle::WorkerLocation;
use crate::storage;

/// The message of `status` with its causes (tonic's transport errors say only "transport
/// error" and keep the reason in their sources), each once.
pub(crate) fn status_message(status: &tonic::Status) -> String {
    let mut message = status.message().to_string();
    let mut cause = std::error::Error::source(status);
    while let Some(e) = cause {
        let text = e.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        cause = e.source();
    }
    message
}

/// How a call that ended in `status` counts: the worker was not reached (or the
/// connection broke), the call ran past a deadline the worker saw, or the task failed.
/// A worker that refuses this master's token fails the task (not "unreachable", which
/// would be retried until `no_worker_timeout`), so the task's attempt budget ends a job
/// whose workers all refuse it, with a message that says so.
pub(crate) fn failure_from_status(status: &tonic::Status) -> Failure {
    use tonic::Code;
    let why = || status.message().to_string();
    if status.code() == Code::Unavailable && status.metadata().contains_key(DRAINING) {
        return Failure::Draining(why());
    }
    if status.code() == Code::FailedPrecondition && status.metadata().contains_key(REFUSED) {
        return Failure::Refused(why());
    }
    match status.code() {
        Code::Unauthenticated => Failure::Task(format!("the worker refused this master: {}", status.message())),
        Code::Unavailable | Code::Unknown | Code::Cancelled => Failure::Unreachable(why()),
        Code::DeadlineExceeded => Failure::TimedOut,
        Code::ResourceExhausted => Failure::Busy(why()),
        Code::DataLoss => {
            let number = |key| status.metadata().get(key)?.to_str().ok()?.parse::<u64>().ok();
            match (number(LOST_MAP).and_then(|m| u32::try_from(m).ok()), number(LOST_ATTEMPT)) {
                (Some(map), Some(attempt)) => Failure::MapOutputLost {
                    map,
                    attempt: AttemptId(attempt),
                    why: why(),
                    holder_gone: status.metadata().contains_key(HOLDER_GONE),
                },
                _ => Failure::Task(why()),
            }
        }
        _ => Failure::Task(why()),
    }
}

/// A worker that keeps its map output (worker shuffle): its address as the master dials
/// it, and the job run's id.
#[derive(Debug, Clone)]
pub(crate) struct Holder {
    pub(crate) addr: String,
    pub(crate) job: String,
}

/// Where a map reply must say its output lies.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expected<'a> {
    /// In the job's work directory (shared filesystem): the reply names the file's path.
    InWorkDir(&'a str),
    /// On the worker (worker shuffle): the reply names the file; the master names the
    /// output by the worker's address.
    Held(&'a Holder),
}

/// Checks a map reply: one or more runs of one range per partition, in order, back to
/// back in the one file this attempt must write, so that the master never deletes or
/// hands a reduce a path a worker made up.
pub(crate) fn map_output(
    resp: pb::MapResponse,
    reducers: u32,
    at: Expected<'_>,
    task: u32,
    attempt: AttemptId,
) -> Result<TaskOutput, Failure> {
    let name = storage::map_file_name(task, attempt.0);
    let (expected, location) = match at {
        Expected::InWorkDir(work_dir) => {
            let path = Path::new(work_dir).join(&name);
            (path.to_string_lossy().into_owned(), resp.location.clone())
        }
        Expected::Held(holder) => (name, WorkerLocation::new(&holder.addr, &holder.job, task, attempt.0).to_string()),
    };
    // A map-only job's map writes one stream: the job's output.
    let streams = convert::streams_from_pb(&resp.stream_bytes, &resp.stream_records, reducers.max(1))
        .filter(|s| reducers > 0 || s.len() == 1)
        .filter(|_| Path::new(&resp.location) == Path::new(&expected));
    let Some(streams) = streams else {
        return Err(Failure::Task(format!(
            "worker answered {} ranges of {:?} for {reducers} partitions, not runs of the expected file {expected:?}",
            resp.stream_bytes.len(),
            resp.location
        )));
    };
    let ranges = streams
        .into_iter()
        .map(|r| MapOutputRange {
            map: task,
            attempt,
            partition: r.partition,
            offset: r.offset,
            bytes: r.bytes,
            records: r.records,
        })
        .collect();
    Ok(TaskOutput::Map {
        location: Location::new(location),
        ranges,
        input_records: resp.input_records,
        skipped_records: resp.skipped_records,
        counters: counters_from_pb(resp.counters.clone())?,
    })
}

/// A worker's counters, within the limits of `mapreduce_core::counters` (a reply is not
/// trusted: the report must not grow without bound).
pub(crate) fn counters_from_pb(counters: std::collections::HashMap<String, u64>) -> Result<Counters, Failure> {
    let counters: Counters = counters.into_iter().collect();
    mapreduce_core::counters::check(&counters).map_err(|e| Failure::Task(format!("worker answered {e}")))?;
    Ok(counters)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(location: &str, bytes: &[u64]) -> pb::MapResponse {
        pb::MapResponse {
            location: location.into(),
            stream_bytes: bytes.to_vec(),
            stream_records: vec![1; bytes.len()],
            input_records: 5,
            skipped_records: 0,
            counters: Default::default(),
            held: false,
        }
    }

    #[test]
    fn a_map_reply_is_accepted_only_as_runs_of_the_expected_file() {
        let file = "/w/m00003-a7";
        let check = |r| map_output(r, 2, Expected::InWorkDir("/w"), 3, AttemptId(7));
        let ok = check(reply(file, &[10, 5, 1, 0])).unwrap();
        let TaskOutput::Map { location, ranges, input_records, .. } = ok else { panic!("a map output") };
        assert_eq!((location.as_str(), ranges.len(), input_records), (file, 4, 5));
        assert!(ranges.iter().all(|r| r.map == 3 && r.attempt == AttemptId(7)));
        assert_eq!((ranges[2].offset, ranges[2].partition, ranges[3].offset), (15, 0, 16));
        let mut uneven = reply(file, &[10, 5]);
        uneven.stream_records.pop();
        let refused = [
            reply("/etc/passwd", &[10, 5]),
            reply("/w/m00003-a8", &[10, 5]),
            reply(file, &[]),
            reply(file, &[10]),
            reply(file, &[u64::MAX, 5, 1, 1]),
            uneven,
        ];
        for r in refused {
            let what = format!("{r:?}");
            assert!(matches!(check(r), Err(Failure::Task(_))), "accepted {what}");
        }
    }

    #[test]
    fn a_held_map_output_is_named_by_the_worker_that_holds_it() {
        let job = "0123456789abcdef0123456789abcdef";
        let holder = Holder { addr: "http://127.0.0.1:7001".into(), job: job.into() };
        let check = |r| map_output(r, 2, Expected::Held(&holder), 3, AttemptId(7));
        let TaskOutput::Map { location, .. } = check(reply("m00003-a7", &[10, 5])).unwrap() else { panic!() };
        assert_eq!(location.as_str(), format!("grpc://127.0.0.1:7001/{job}/3/7"));
        for made_up in ["/w/m00003-a7", "m00003-a8", "../m00003-a7"] {
            assert!(matches!(check(reply(made_up, &[10, 5])), Err(Failure::Task(_))), "accepted {made_up}");
        }
    }

    #[test]
    fn a_status_counts_as_unreachable_timed_out_or_a_task_failure() {
        use tonic::{Code, Status};
        for (code, want) in [
            (Code::Unavailable, Failure::Unreachable("m".into())),
            (Code::Unknown, Failure::Unreachable("m".into())),
            (Code::Cancelled, Failure::Unreachable("m".into())),
            (Code::DeadlineExceeded, Failure::TimedOut),
            (Code::InvalidArgument, Failure::Task("m".into())),
            (Code::Aborted, Failure::Task("m".into())),
            (Code::NotFound, Failure::Task("m".into())),
            (Code::ResourceExhausted, Failure::Busy("m".into())),
            // A data loss without the map it lost is only the task's failure.
            (Code::DataLoss, Failure::Task("m".into())),
            (Code::Unauthenticated, Failure::Task("the worker refused this master: m".into())),
        ] {
            assert_eq!(failure_from_status(&Status::new(code, "m")), want, "{code:?}");
        }
        let unknown: Status = crate::error::TaskError::UnknownJob("grep".into()).into();
        assert_eq!(
            failure_from_status(&unknown),
            Failure::Refused("job \"grep\" is not registered on this worker".into())
        );
        let draining: Status = crate::error::TaskError::Draining.into();
        assert!(matches!(failure_from_status(&draining), Failure::Draining(_)), "{draining:?}");
        let lost: Status = crate::error::TaskError::MapOutputLost {
            map: 3,
            attempt: 17,
            path: "/w/m00003-a17".into(),
            error: mapreduce_core::shuffle::record::FormatError::Truncated { offset: 9 },
        }
        .into();
        let Failure::MapOutputLost { map, attempt, why, holder_gone } = failure_from_status(&lost) else {
            panic!("{lost:?}")
        };
        assert_eq!((map, attempt, holder_gone), (3, AttemptId(17), false));
        assert!(why.contains("/w/m00003-a17") && why.contains("truncated"), "{why}");
        // A holder the reduce could not reach: all it holds is lost.
        let unreachable: Status = crate::error::TaskError::MapOutputLost {
            map: 3,
            attempt: 17,
            path: "grpc://10.0.0.1:7000/j/3/17".into(),
            error: mapreduce_core::shuffle::record::FormatError::Io(std::io::Error::new(
                crate::error::HOLDER_GONE_KIND,
                "fetch from 10.0.0.1:7000: tcp connect error",
            )),
        }
        .into();
        let Failure::MapOutputLost { holder_gone, .. } = failure_from_status(&unreachable) else {
            panic!("{unreachable:?}")
        };
        assert!(holder_gone);
    }
}
