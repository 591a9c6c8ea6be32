//! Conversions between core types and their protobuf messages (the two crates do not know
//! each other, so the runtime holds the edge).

use std::collections::HashMap;

use mapreduce_core::scheduler::{AttemptId, Location, MapOutputRange, ReduceInput};
use mapreduce_core::shuffle::map_side::StreamRange;
use mapreduce_core::{Compression, InputFormat, InvalidUtf8, OutputFormat};
use mapreduce_rpc::pb;

pub(crate) fn compression_to_pb(c: Compression) -> pb::Compression {
    match c {
        Compression::None => pb::Compression::None,
        Compression::Lz4 => pb::Compression::Lz4,
    }
}

/// `None` for a value this build does not know (a newer master), or none at all.
pub(crate) fn compression_from_pb(c: i32) -> Option<Compression> {
    match pb::Compression::try_from(c).ok()? {
        pb::Compression::Unspecified => None,
        pb::Compression::None => Some(Compression::None),
        pb::Compression::Lz4 => Some(Compression::Lz4),
    }
}

pub(crate) fn input_format_to_pb(f: InputFormat) -> pb::InputFormat {
    match f {
        InputFormat::Text => pb::InputFormat::Text,
        InputFormat::Records => pb::InputFormat::Records,
        InputFormat::WholeFiles => pb::InputFormat::WholeFiles,
    }
}

/// `None` for a value this build does not know, or none at all.
pub(crate) fn input_format_from_pb(f: i32) -> Option<InputFormat> {
    match pb::InputFormat::try_from(f).ok()? {
        pb::InputFormat::Unspecified => None,
        pb::InputFormat::Text => Some(InputFormat::Text),
        pb::InputFormat::Records => Some(InputFormat::Records),
        pb::InputFormat::WholeFiles => Some(InputFormat::WholeFiles),
    }
}

pub(crate) fn output_format_to_pb(f: OutputFormat) -> pb::OutputFormat {
    match f {
        OutputFormat::Text => pb::OutputFormat::Text,
        OutputFormat::Records => pb::OutputFormat::Records,
    }
}

/// `None` for a value this build does not know, or none at all.
pub(crate) fn output_format_from_pb(f: i32) -> Option<OutputFormat> {
    match pb::OutputFormat::try_from(f).ok()? {
        pb::OutputFormat::Unspecified => None,
        pb::OutputFormat::Text => Some(OutputFormat::Text),
        pb::OutputFormat::Records => Some(OutputFormat::Records),
    }
}

pub(crate) fn invalid_utf8_to_pb(p: InvalidUtf8) -> pb::InvalidUtf8 {
    match p {
        InvalidUtf8::Replace => pb::InvalidUtf8::Replace,
        InvalidUtf8::Fail => pb::InvalidUtf8::Fail,
        InvalidUtf8::Skip => pb::InvalidUtf8::Skip,
    }
}

/// `None` for a value this build does not know, or none at all.
pub(crate) fn invalid_utf8_from_pb(p: i32) -> Option<InvalidUtf8> {
    match pb::InvalidUtf8::try_from(p).ok()? {
        pb::InvalidUtf8::Unspecified => None,
        pb::InvalidUtf8::Replace => Some(InvalidUtf8::Replace),
        pb::InvalidUtf8::Fail => Some(InvalidUtf8::Fail),
        pb::InvalidUtf8::Skip => Some(InvalidUtf8::Skip),
    }
}

/// A map attempt's streams as its reply carries them: sizes and record counts only, the
/// partition and offset of each being implied by its place (see `MapResponse`).
pub(crate) fn streams_to_pb(streams: &[StreamRange]) -> (Vec<u64>, Vec<u64>) {
    streams.iter().map(|s| (s.bytes, s.records)).unzip()
}

/// The streams of a map reply for `reducers` partitions: whole runs of one per partition,
/// back to back from byte 0. `None` if the reply is not that shape or its sizes overflow.
pub(crate) fn streams_from_pb(bytes: &[u64], records: &[u64], reducers: u32) -> Option<Vec<StreamRange>> {
    let whole_runs = !bytes.is_empty() && (bytes.len() as u64).is_multiple_of(u64::from(reducers));
    if !whole_runs || bytes.len() != records.len() {
        return None;
    }
    let mut offset = 0u64;
    bytes
        .iter()
        .zip(records)
        .enumerate()
        .map(|(i, (&bytes, &records))| {
            let partition = (i as u64 % u64::from(reducers)) as u32;
            let range = StreamRange { partition, offset, bytes, records };
            offset = offset.checked_add(bytes)?;
            Some(range)
        })
        .collect()
}

/// A reduce's inputs as a table of locations, each once, and ranges that index it.
pub(crate) fn reduce_inputs_to_pb(inputs: &[ReduceInput]) -> (Vec<String>, Vec<pb::ReduceInput>) {
    let mut index: HashMap<&str, u32> = HashMap::new();
    let mut locations = Vec::new();
    let ranges = inputs
        .iter()
        .map(|i| {
            let location = *index.entry(i.location.as_str()).or_insert_with(|| {
                locations.push(i.location.to_string());
                locations.len() as u32 - 1
            });
            let r = &i.range;
            pb::ReduceInput {
                location,
                map: r.map,
                attempt: r.attempt.0,
                offset: r.offset,
                bytes: r.bytes,
                records: r.records,
            }
        })
        .collect();
    (locations, ranges)
}

/// The inputs of a reduce request for `partition`; an error names the first input that
/// points at no location.
pub(crate) fn reduce_inputs_from_pb(
    locations: Vec<String>,
    inputs: Vec<pb::ReduceInput>,
    partition: u32,
) -> Result<Vec<ReduceInput>, String> {
    let locations: Vec<Location> = locations.into_iter().map(Location::new).collect();
    inputs
        .into_iter()
        .enumerate()
        .map(|(n, i)| {
            let location = locations
                .get(i.location as usize)
                .cloned()
                .ok_or_else(|| format!("input {n} names location {} of {}", i.location, locations.len()))?;
            let range = MapOutputRange {
                map: i.map,
                attempt: AttemptId(i.attempt),
                partition,
                offset: i.offset,
                bytes: i.bytes,
                records: i.records,
            };
            Ok(ReduceInput { location, range })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce_inputs_travel_with_each_location_once() {
        let input = |loc: &str, map| ReduceInput {
            location: Location::new(loc),
            range: MapOutputRange { map, attempt: AttemptId(7), partition: 3, offset: 10, bytes: 20, records: 2 },
        };
        let inputs = vec![input("/w/m0", 0), input("/w/m0", 0), input("/w/m1", 1)];
        let (locations, ranges) = reduce_inputs_to_pb(&inputs);
        assert_eq!(locations, ["/w/m0", "/w/m1"]);
        assert_eq!(reduce_inputs_from_pb(locations.clone(), ranges.clone(), 3).unwrap(), inputs);
        let mut bad = ranges;
        bad[1].location = 2;
        assert_eq!(reduce_inputs_from_pb(locations, bad, 3).unwrap_err(), "input 1 names location 2 of 2");
    }

    #[test]
    fn map_streams_travel_as_sizes_with_partitions_and_offsets_implied() {
        let s = |partition, offset, bytes, records| StreamRange { partition, offset, bytes, records };
        let streams = vec![s(0, 0, 10, 1), s(1, 10, 0, 0), s(0, 10, 5, 2), s(1, 15, 7, 3)];
        let (bytes, records) = streams_to_pb(&streams);
        assert_eq!((bytes.as_slice(), records.as_slice()), (&[10, 0, 5, 7][..], &[1, 0, 2, 3][..]));
        assert_eq!(streams_from_pb(&bytes, &records, 2), Some(streams));
        assert_eq!(streams_from_pb(&bytes, &records, 3), None, "not whole runs");
        assert_eq!(streams_from_pb(&bytes, &records[..3], 2), None, "counts differ");
        assert_eq!(streams_from_pb(&[], &[], 1), None, "no stream");
        assert_eq!(streams_from_pb(&[u64::MAX, 1, 1], &[0, 0, 0], 1), None, "offsets overflow");
    }

    #[test]
    fn an_unset_or_unknown_compression_is_none() {
        assert_eq!(compression_from_pb(0), None);
        assert_eq!(compression_from_pb(9), None);
        assert_eq!(compression_from_pb(compression_to_pb(Compression::Lz4) as i32), Some(Compression::Lz4));
    }
}
