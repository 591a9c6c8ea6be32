//! A distributed sort (TeraSort in text form): the job, its record layout, and key sampling
//! for the partition boundaries. The records come from
//! [`generate_records`](crate::corpus::generate_records); the sequential sort the job must
//! equal, and the output check, are in [`reference`](crate::reference).
//!
//! A record is a line of exactly [`RECORD_LEN`] bytes including its `\n`: a
//! [`KEY_LEN`]-byte key of printable ASCII, then [`PAYLOAD_LEN`] bytes of payload. Records
//! sort by key, then by payload (so that the output is fully determined even when two keys
//! are equal).
//!
//! The job is range-partitioned: [`Sort::boundaries`] holds `R - 1` sorted keys, and
//! partition `p` gets the keys from boundary `p - 1` (inclusive) to boundary `p`
//! (exclusive). Each reduce partition is sorted by the framework's merge, so
//! `part-00000`, `part-00001`, ... concatenated are the sorted input.
//!
//! ```
//! use mapreduce::{Cluster, JobSpec};
//! use mapreduce_examples::corpus::generate_records;
//! use mapreduce_examples::reference::{output_equals, sort_sequential};
//! use mapreduce_examples::sort::Sort;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let input = dir.path().join("records.txt");
//! generate_records(&input, 1000, 7)?;
//! let job = Sort::sampled(&[&input], 3, 100)?;
//! let spec = JobSpec::new(job, [&input], dir.path().join("out")).reducers(3);
//! Cluster::local(2).await?.run(spec).await?;
//!
//! sort_sequential(&[&input], &dir.path().join("expected.txt"))?;
//! assert!(output_equals(&dir.path().join("out"), &dir.path().join("expected.txt"))?);
//! # Ok(()) }
//! ```

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use mapreduce::{BoxError, Emitter, Job, Mapper, Output, Reducer};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes of a record, including its `\n`.
pub const RECORD_LEN: usize = 100;
/// Bytes of a record's key.
pub const KEY_LEN: usize = 10;
/// Bytes of a record's payload: what follows the key, before the `\n`.
pub const PAYLOAD_LEN: usize = RECORD_LEN - KEY_LEN - 1;

/// A record's key. A plain array: no allocation per record, and postcard writes it as its
/// 10 bytes.
pub type SortKey = [u8; KEY_LEN];

/// A record's payload, kept inline (serde's derives stop at arrays of 32, so this type
/// serializes itself as a byte string).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Payload(pub [u8; PAYLOAD_LEN]);

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({:?})", String::from_utf8_lossy(&self.0))
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(PayloadVisitor)
    }
}

struct PayloadVisitor;

impl<'de> Visitor<'de> for PayloadVisitor {
    type Value = Payload;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PAYLOAD_LEN} bytes")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Payload, E> {
        v.try_into().map(Payload).map_err(|_| E::invalid_length(v.len(), &self))
    }

    /// Formats without byte strings (JSON) write a sequence of numbers.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Payload, A::Error> {
        let mut out = [0u8; PAYLOAD_LEN];
        for (i, b) in out.iter_mut().enumerate() {
            *b = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(i, &self))?;
        }
        if seq.next_element::<u8>()?.is_some() {
            return Err(de::Error::invalid_length(PAYLOAD_LEN + 1, &self));
        }
        Ok(Payload(out))
    }
}

/// The sort job: its fields are the range-partition boundaries, shipped to every task
/// (sampled from the input, never a flag).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
pub struct Sort {
    /// `R - 1` sorted keys for `R` reducers: partition `p` holds the keys `k` with
    /// `boundaries[p - 1] <= k < boundaries[p]`. Empty: everything goes to partition 0.
    #[arg(skip)]
    pub boundaries: Vec<String>,
}

impl Sort {
    /// A job with the given boundaries, which must be sorted.
    pub fn new(boundaries: Vec<String>) -> Self {
        debug_assert!(boundaries.is_sorted(), "sort boundaries must be sorted");
        Sort { boundaries }
    }

    /// Samples about `samples` keys spread evenly over `files` (in proportion to their
    /// sizes, one short read each) and picks the `reducers - 1` boundaries that cut
    /// the sorted sample into equal parts, as TeraSort's input sampler does.
    pub fn sampled(files: &[impl AsRef<Path>], reducers: u32, samples: usize) -> io::Result<Sort> {
        let mut keys = sample_keys(files, samples)?;
        keys.sort_unstable();
        let reducers = reducers.max(1) as usize;
        let boundaries = if keys.is_empty() {
            Vec::new()
        } else {
            (1..reducers).map(|i| String::from_utf8_lossy(&keys[i * keys.len() / reducers]).into_owned()).collect()
        };
        Ok(Sort::new(boundaries))
    }

    /// The partition of `key`: the number of boundaries at or below it (a binary search),
    /// capped at `reducers - 1` in case the job runs with fewer reducers than it has
    /// boundaries for. Monotone in the key.
    pub fn partition_of(&self, key: &[u8], reducers: u32) -> u32 {
        let p = self.boundaries.partition_point(|b| b.as_bytes() <= key) as u32;
        p.min(reducers.saturating_sub(1))
    }
}

/// Reads one key at each of `samples` offsets spread over `files`: the key of the first
/// record that starts at or after the offset.
fn sample_keys(files: &[impl AsRef<Path>], samples: usize) -> io::Result<Vec<SortKey>> {
    let sizes = files.iter().map(|f| Ok(std::fs::metadata(f)?.len())).collect::<io::Result<Vec<u64>>>()?;
    let total: u64 = sizes.iter().sum();
    let mut keys = Vec::with_capacity(samples);
    if total == 0 || samples == 0 {
        return Ok(keys);
    }
    let step = (total / samples as u64).max(1);
    let mut window = Vec::with_capacity(2 * RECORD_LEN);
    let mut file_start = 0u64;
    for (path, &size) in files.iter().zip(&sizes) {
        let mut file = File::open(path)?;
        let first = file_start.div_ceil(step) * step; // the first sample offset in this file
        let mut at = first - file_start;
        while at < size {
            // Read from one byte before `at`, so a record starting exactly at `at` is seen
            // to follow a newline.
            let from = at.saturating_sub(1);
            file.seek(SeekFrom::Start(from))?;
            window.clear();
            (&mut file).take(2 * RECORD_LEN as u64).read_to_end(&mut window)?;
            let start = if at == 0 { Some(0) } else { window.iter().position(|&b| b == b'\n').map(|i| i + 1) };
            if let Some(key) = start.and_then(|s| window.get(s..s + KEY_LEN))
                && !key.contains(&b'\n')
            {
                keys.push(key.try_into().expect("KEY_LEN bytes"));
            }
            at += step;
        }
        file_start += size;
    }
    Ok(keys)
}

impl Mapper for Sort {
    type Key = SortKey;
    type Value = Payload;

    fn map(&self, line: &str, emit: &mut Emitter<'_, SortKey, Payload>) -> Result<(), BoxError> {
        let bytes = line.as_bytes();
        if bytes.len() != RECORD_LEN - 1 {
            return Err(format!(
                "a sort record has {} bytes before its newline, this one {}",
                RECORD_LEN - 1,
                bytes.len()
            )
            .into());
        }
        let (key, payload) = bytes.split_at(KEY_LEN);
        emit.emit(key.try_into().expect("KEY_LEN bytes"), Payload(payload.try_into().expect("PAYLOAD_LEN bytes")));
        Ok(())
    }
}

impl Reducer for Sort {
    fn reduce(
        &self,
        key: &SortKey,
        values: &mut dyn Iterator<Item = Payload>,
        out: &mut Output<'_>,
    ) -> Result<(), BoxError> {
        let Some(first) = values.next() else { return Ok(()) };
        match values.next() {
            None => write_record(out, key, &first),
            // Equal keys (rare with random keys): order them by payload, as a sort of
            // whole lines would.
            Some(second) => {
                let mut all = vec![first, second];
                all.extend(values);
                all.sort_unstable();
                all.iter().try_for_each(|p| write_record(out, key, p))
            }
        }
    }

    fn partition(&self, key: &SortKey, reducers: u32) -> u32 {
        self.partition_of(key, reducers)
    }
}

fn write_record(out: &mut Output<'_>, key: &SortKey, payload: &Payload) -> Result<(), BoxError> {
    let mut line = [0u8; RECORD_LEN - 1];
    line[..KEY_LEN].copy_from_slice(key);
    line[KEY_LEN..].copy_from_slice(&payload.0);
    // The map got these bytes as one `&str`, so they are UTF-8 again once put together.
    out.write_line(std::str::from_utf8(&line)?)?;
    Ok(())
}

impl Job for Sort {
    const NAME: &'static str = "sort";
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use mapreduce::{Cluster, Compression, JobSpec};
    use mapreduce_core::shuffle::record::{RecordReader, RecordWriter};

    use super::*;
    use crate::corpus::{SplitMix64, generate_records};
    use crate::reference::{output_equals, output_parts, sort_sequential};

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path).unwrap().lines().map(String::from).collect()
    }

    #[test]
    fn sampled_boundaries_are_sorted_and_balance_the_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        generate_records(&a, 6000, 1).unwrap();
        generate_records(&b, 4000, 2).unwrap();
        let job = Sort::sampled(&[&a, &b], 5, 2000).unwrap();
        assert_eq!(job.boundaries.len(), 4);
        assert!(job.boundaries.windows(2).all(|w| w[0] < w[1]), "{:?}", job.boundaries);
        assert!(job.boundaries.iter().all(|k| k.len() == KEY_LEN));
        let mut counts = [0u32; 5];
        for line in lines(&a).iter().chain(&lines(&b)) {
            counts[job.partition_of(&line.as_bytes()[..KEY_LEN], 5) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (1500..2500).contains(&c)), "{counts:?}");
        assert_eq!(Sort::sampled(&[&a], 1, 100).unwrap().boundaries, Vec::<String>::new());
    }

    #[test]
    fn partition_is_monotone_in_the_key_and_in_range() {
        let job = Sort::new(vec!["B".repeat(10), "M".repeat(10), "M".repeat(10), "x".repeat(10)]);
        let mut keys: Vec<SortKey> = (0..2000u64)
            .scan(SplitMix64::new(9), |rng, _| Some(std::array::from_fn(|_| b'!' + rng.below(94) as u8)))
            .collect();
        keys.extend([*b"BBBBBBBBBB", *b"MMMMMMMMMM", *b"!!!!!!!!!!", *b"~~~~~~~~~~"]);
        keys.sort_unstable();
        let parts: Vec<u32> = keys.iter().map(|k| job.partition(k, 5)).collect();
        assert!(parts.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!((parts[0], parts[parts.len() - 1]), (0, 4));
        assert_eq!(job.partition(b"BBBBBBBBBB", 5), 1, "a boundary starts its partition");
        assert_eq!(job.partition(b"MMMMMMMMMM", 5), 3, "an empty partition between equal boundaries");
        assert!(keys.iter().all(|k| job.partition(k, 2) < 2), "fewer reducers than boundaries: capped");
    }

    #[test]
    fn payloads_round_trip_through_record_files_and_json() {
        let p = Payload(std::array::from_fn(|i| b'a' + (i % 26) as u8));
        let mut w = RecordWriter::new(Vec::new()).unwrap();
        w.write(b"0123456789", &p).unwrap();
        let (bytes, _, _) = w.finish().unwrap();
        let got: Vec<(SortKey, Payload)> = RecordReader::new(&bytes[..]).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, [(*b"0123456789", p)]);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Payload>(&json).unwrap(), p);
        assert!(serde_json::from_str::<Payload>("[1, 2]").is_err());
    }

    #[test]
    fn map_splits_a_record_and_rejects_other_lengths() {
        let mut got = Vec::new();
        let mut sink = |k: SortKey, v: Payload| got.push((k, v));
        let line = format!("0123456789{}", "x".repeat(PAYLOAD_LEN));
        Sort::default().map(&line, &mut Emitter::new(&mut sink)).unwrap();
        let err = Sort::default().map(&line[1..], &mut Emitter::new(&mut sink)).unwrap_err();
        assert!(err.to_string().contains("98"), "{err}");
        assert_eq!(got, [(*b"0123456789", Payload([b'x'; PAYLOAD_LEN]))]);
    }

    #[tokio::test]
    async fn a_cluster_sort_equals_sorting_the_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
        generate_records(&a, 3000, 11).unwrap();
        generate_records(&b, 2000, 12).unwrap();
        // Equal keys with different payloads, across both files.
        let mut extra = String::new();
        for (i, payload) in ["z", "a", "m"].iter().enumerate() {
            extra.push_str(&format!("KKKKKKKKKK{}\n", payload.repeat(PAYLOAD_LEN)));
            extra.push_str(&format!("{:0>10}{}\n", i, "p".repeat(PAYLOAD_LEN)));
        }
        let mut file = std::fs::OpenOptions::new().append(true).open(&b).unwrap();
        file.write_all(extra.as_bytes()).unwrap();
        drop(file);

        let job = Sort::sampled(&[&a, &b], 3, 500).unwrap();
        let out = dir.path().join("out");
        // The smallest sort buffer: each map attempt spills, and writes a run per spill
        // that the reduces merge; the runs stored plain (every other cluster test
        // runs with the default, LZ4).
        let spec = JobSpec::new(job, [&a, &b], &out)
            .reducers(3)
            .shard_size(100 << 10)
            .sort_buffer_bytes(64 << 10)
            .compression(Compression::None);
        let cluster = Cluster::local(2).await.unwrap();
        let report = cluster.run(spec).await.unwrap();
        assert_eq!(report.output_records, 5006);

        let mut want: Vec<String> = lines(&a).into_iter().chain(lines(&b)).collect();
        want.sort();
        let got: Vec<String> = output_parts(&out).unwrap().iter().flat_map(|p| lines(p)).collect();
        assert_eq!(got, want);
        assert_eq!(output_parts(&out).unwrap().len(), 3);
        assert!(output_parts(&out).unwrap().iter().all(|p| std::fs::metadata(p).unwrap().len() > 0));

        let expected = dir.path().join("expected.txt");
        assert_eq!(sort_sequential(&[&a, &b], &expected).unwrap(), 5006);
        assert_eq!(lines(&expected), want);
        assert!(output_equals(&out, &expected).unwrap());
    }
}
