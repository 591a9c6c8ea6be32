//! Hostile requests as property tests: whatever the fields of a request or a reply, the
//! conversions and the worker's checks answer an error (or work), never panic, and a
//! confined worker writes nothing outside its root.

use std::time::Duration;

use mapreduce_core::scheduler::AttemptId;
use mapreduce_rpc::pb;
use mapreduce_rpc::pb::worker_server::Worker as _;
use proptest::prelude::*;
use tonic::Request;

use super::testing::Count;
use super::{Registry, Worker};
use crate::convert;
use crate::master::replies::{Expected, map_output};

/// The path a hostile request names: `choice` picks one of the kinds below, `root`
/// being the worker's root; the last kind is `any`, any text at all.
fn path(choice: usize, any: &str, root: &str) -> String {
    match choice {
        0 => format!("{root}/in.txt"),
        1 => format!("{root}/missing.txt"),
        2 => format!("{root}/../escape.txt"),
        3 => format!("{root}/work"),
        4 => root.to_string(),
        5 => "/etc/passwd".to_string(),
        6 => "/dev/zero".to_string(),
        7 => "relative/path".to_string(),
        _ => any.to_string(),
    }
}

/// A job part: each field right four times in five (so that requests get past the first
/// check often enough to reach the deeper ones), anything at all otherwise.
fn job() -> impl Strategy<Value = Option<pb::Job>> {
    let name = prop_oneof![4 => Just("count".to_string()), 1 => "\\PC{0,12}"];
    let payload = prop_oneof![4 => Just(vec![1u8]), 1 => proptest::collection::vec(any::<u8>(), 0..8)];
    // Any count of reducers at all is mostly refused; valid ones stay small, so fast.
    let reducers = prop_oneof![4 => 1..=8u32, 1 => any::<u32>().prop_filter("small or refused", |r| *r > 1 << 20)];
    let sort = prop_oneof![4 => Just(1u64 << 20), 1 => any::<u64>()];
    let compression = prop_oneof![4 => 1..=2i32, 1 => any::<i32>()];
    let line = prop_oneof![4 => Just(1u64 << 20), 1 => any::<u64>()];
    let fields = (name, payload, reducers, sort, compression, line, any::<bool>());
    proptest::option::weighted(
        0.95,
        fields.prop_map(|(name, payload, reducers, sort_buffer_bytes, compression, max_line_bytes, skip)| pb::Job {
            name,
            payload,
            reducers,
            sort_buffer_bytes,
            compression,
            max_line_bytes,
            skip_long_lines: skip,
            job_id: String::new(),
            input_format: 1,
            output_format: 1,
            invalid_utf8: 1,
        }),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn any_map_or_reduce_request_gets_an_answer_and_writes_nothing_outside_the_root(
        seed in any::<u64>(),
        // Mostly the root's own file and work directory, so that requests get far.
        choices in proptest::collection::vec((prop_oneof![3 => Just(0usize), 3 => Just(3usize), 4 => 0..10usize], "\\PC{0,40}"), 8),
        job in job(),
        segments in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..4),
        inputs in proptest::collection::vec((any::<u32>(), any::<u32>(), any::<u64>(), any::<u64>(), any::<u64>()), 0..4),
        task in prop_oneof![4 => 0..4u64, 1 => any::<u64>()],
        partition in prop_oneof![4 => 0..4u32, 1 => any::<u32>()],
    ) {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        std::fs::create_dir_all(root.join("work")).unwrap();
        std::fs::write(root.join("in.txt"), "a b c\nd e\n").unwrap();
        let root_str = root.to_str().unwrap().to_string();
        let paths: Vec<String> = choices.iter().map(|(c, any)| path(*c, any, &root_str)).collect();
        let map = pb::MapRequest {
            job: job.clone(),
            task,
            attempt: seed,
            segments: segments
                .iter()
                .enumerate()
                // Mostly within the 10-byte file, sometimes backwards or past its end.
                .map(|(i, &(start, end))| {
                    let (start, end) = if seed % 5 == 0 { (start % 64, end % 128) } else { (start % 6, 6 + end % 5) };
                    pb::Segment { path: paths[i].clone(), start, end, file_bytes: seed % 13 }
                })
                .collect(),
            work_dir: paths[4].clone(),
            worker_shuffle: false,
            streamed_bytes: Vec::new(),
        };
        let reduce = pb::ReduceRequest {
            job,
            task,
            attempt: seed,
            partition,
            locations: paths[5..].to_vec(),
            inputs: inputs
                .iter()
                .map(|&(location, map, attempt, offset, bytes)| pb::ReduceInput {
                    location: location % 4,
                    map,
                    attempt,
                    offset: offset % 64,
                    bytes: bytes % 64,
                    records: 0,
                })
                .collect(),
            work_dir: paths[4].clone(),
        };
        let service = Worker::new(Registry::new().register::<Count>()).with_root(&root).into_service().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            // Either answer is fine; a panic or a hang is not.
            let limit = Duration::from_secs(10);
            let _ = tokio::time::timeout(limit, service.map(Request::new(map))).await.expect("a map answer in 10 s");
            let _ = tokio::time::timeout(limit, service.reduce(Request::new(reduce))).await.expect("a reduce answer");
        });
        let mut outside: Vec<_> = std::fs::read_dir(outer.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        outside.sort();
        prop_assert_eq!(outside, vec![std::ffi::OsString::from("root")], "nothing beside the root");
    }

    #[test]
    fn map_replies_and_reduce_inputs_of_any_shape_convert_or_are_refused(
        bytes in proptest::collection::vec(any::<u64>(), 0..12),
        records in proptest::collection::vec(any::<u64>(), 0..12),
        reducers in prop_oneof![0..5u32, any::<u32>()],
        location in "\\PC{0,20}",
        locations in proptest::collection::vec("\\PC{0,8}", 0..3),
        inputs in proptest::collection::vec((any::<u32>(), any::<u32>(), any::<u64>()), 0..6),
    ) {
        let _ = convert::streams_from_pb(&bytes, &records, reducers);
        let reply = pb::MapResponse {
            location: location.clone(),
            input_records: 1,
            skipped_records: 0,
            stream_bytes: bytes.clone(),
            stream_records: records,
            counters: Default::default(),
            held: false,
        };
        if let Ok(mapreduce_core::scheduler::TaskOutput::Map { ranges, .. }) = map_output(reply, reducers.max(1), Expected::InWorkDir("/w"), 0, AttemptId(0)) {
            // Accepted only as whole runs, back to back, of the expected file.
            prop_assert_eq!(location, "/w/m00000-a0");
            prop_assert!(ranges.windows(2).all(|w| w[1].offset == w[0].offset + w[0].bytes));
        }
        let inputs: Vec<pb::ReduceInput> = inputs
            .into_iter()
            .map(|(location, map, attempt)| pb::ReduceInput { location, map, attempt, offset: 0, bytes: 0, records: 0 })
            .collect();
        if let Ok(converted) = convert::reduce_inputs_from_pb(locations.clone(), inputs.clone(), 0) {
            prop_assert!(inputs.iter().all(|i| (i.location as usize) < locations.len()));
            prop_assert_eq!(converted.len(), inputs.len());
        }
    }
}
