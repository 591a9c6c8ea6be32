//! Conversions between core types and their protobuf messages (the two crates do not know
//! each other, so the runtime holds the edge).

use mapreduce_core::scheduler::PartitionFile;
use mapreduce_rpc::pb;

pub(crate) fn file_to_pb(f: PartitionFile) -> pb::PartitionFile {
    pb::PartitionFile { partition: f.partition, path: f.path, offset: f.offset, bytes: f.bytes, records: f.records }
}

pub(crate) fn file_from_pb(f: pb::PartitionFile) -> PartitionFile {
    PartitionFile { partition: f.partition, path: f.path, offset: f.offset, bytes: f.bytes, records: f.records }
}
