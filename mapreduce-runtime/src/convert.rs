//! Conversions between core types and their protobuf messages (the two crates do not know
//! each other, so the runtime holds the edge).

use mapreduce_core::Compression;
use mapreduce_core::scheduler::PartitionFile;
use mapreduce_rpc::pb;

pub(crate) fn file_to_pb(f: PartitionFile) -> pb::PartitionFile {
    pb::PartitionFile { partition: f.partition, path: f.path, offset: f.offset, bytes: f.bytes, records: f.records }
}

pub(crate) fn file_from_pb(f: pb::PartitionFile) -> PartitionFile {
    PartitionFile { partition: f.partition, path: f.path, offset: f.offset, bytes: f.bytes, records: f.records }
}

pub(crate) fn compression_to_pb(c: Compression) -> pb::Compression {
    match c {
        Compression::None => pb::Compression::None,
        Compression::Lz4 => pb::Compression::Lz4,
    }
}

/// `None` for a value this build does not know (a newer master).
pub(crate) fn compression_from_pb(c: i32) -> Option<Compression> {
    match pb::Compression::try_from(c).ok()? {
        pb::Compression::None => Some(Compression::None),
        pb::Compression::Lz4 => Some(Compression::Lz4),
    }
}
