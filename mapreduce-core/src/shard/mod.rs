//! Input sharding: the input files and the [`Shard`]s that cut them (the line reader
//! that reads a shard, [`LineReader`], lives in `shard/lines.rs` and is re-exported here).
//!
//! The inputs are seen as one concatenation of files, cut every `shard_size` bytes into
//! [`Shard`]s; a shard may span files. Cuts fall anywhere, and lines are given to shards by
//! where they *start*: a line belongs to the shard holding its first byte, and the reader of
//! that shard reads it to its end even past the cut. So every line is read exactly once,
//! whatever the cut points (this is Hadoop's `LineRecordReader` rule).

use serde::{Deserialize, Serialize};

/// One input file and its length in bytes, as listed when the job starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// The file's path (absolute, so that every worker resolves it the same way).
    pub path: String,
    /// Its length when listed.
    pub len: u64,
}

/// A byte range `[start, end)` of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The file's path.
    pub path: String,
    /// First byte of the range.
    pub start: u64,
    /// One past the last byte of the range.
    pub end: u64,
}

/// The input of one map task: consecutive segments, about `shard_size` bytes in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// The ranges, in input order.
    pub segments: Vec<Segment>,
}

impl Shard {
    /// Total bytes of the shard's ranges (a backwards range counts 0, a total past
    /// `u64::MAX` is `u64::MAX`: a hostile plan is refused elsewhere, never a panic here).
    pub fn len(&self) -> u64 {
        self.segments.iter().fold(0u64, |n, s| n.saturating_add(s.end.saturating_sub(s.start)))
    }

    /// Whether the shard covers no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for Shard {
    /// The first segment and the shard's size, never every segment: a shard may hold
    /// [`MAX_SHARD_SEGMENTS`] files, and errors that name it stay short.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.segments.as_slice() {
            [] => f.write_str("an empty shard"),
            [s] => write!(f, "{}[{}..{})", s.path, s.start, s.end),
            [s, rest @ ..] => {
                write!(f, "{}[{}..{}) and {} more segments, {} bytes", s.path, s.start, s.end, rest.len(), self.len())
            }
        }
    }
}

/// The most segments (so files) in one shard: [`plan_shards`] starts a new shard past it,
/// so that a map request stays small whatever the files' sizes. With paths of at most
/// [`MAX_PATH_BYTES`], a shard's segments take at most 4096 × (4096 + 30) bytes, about
/// 16 MiB, a quarter of a 64 MiB message.
pub const MAX_SHARD_SEGMENTS: usize = 4096;

/// The longest input path in bytes (Linux's `PATH_MAX`): longer ones are refused when
/// inputs are listed, and by workers.
pub const MAX_PATH_BYTES: usize = 4096;

/// How much longer than `shard_size` the last shard may be, in tenths: a remainder of up
/// to 10% of a shard joins the shard before it instead of making a task of its own
/// (Hadoop's `SPLIT_SLOP`).
const SLOP_TENTHS: u128 = 11;

/// How a text input is compressed, by its name: such a file cannot be cut, so one task
/// reads it whole (the master plans so, and the worker decompresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// `.gz`: gzip (members read one after another, as `gzip -d` does).
    Gzip,
    /// `.zst`: zstd.
    Zstd,
}

impl Codec {
    /// The codec of the file `path`, if its name says it is compressed.
    pub fn of(path: &str) -> Option<Codec> {
        if path.ends_with(".gz") {
            Some(Codec::Gzip)
        } else if path.ends_with(".zst") {
            Some(Codec::Zstd)
        } else {
            None
        }
    }
}

/// Spark's `openCostInBytes`: the smallest shard [`split_size`] makes to spread an input
/// over workers (4 MiB), below which a task's fixed cost outweighs what it reads.
pub const MIN_SPREAD_SHARD: u64 = 4 << 20;

/// The shard size for `total` input bytes on `parallelism` workers, at most `shard_size`:
/// `min(shard_size, max(4 MiB, total / parallelism))`, Spark's rule for its splits, so
/// that an input smaller than a shard per worker still gives every worker a task.
pub fn split_size(total: u64, shard_size: u64, parallelism: u32) -> u64 {
    let spread = total.div_ceil(u64::from(parallelism.max(1)));
    shard_size.min(spread.max(MIN_SPREAD_SHARD)).max(1)
}

/// Cuts `files` into shards of `shard_size` bytes of the concatenated input. The last
/// shard may be shorter, or up to 10% longer, so that no task gets a sliver of input
/// (the rule of Hadoop's `FileInputFormat`); a shard of [`MAX_SHARD_SEGMENTS`] files ends
/// there, however short. Empty files contribute nothing; no shard is empty. Panics if
/// `shard_size` is 0 (a validated `JobSpec` never has it).
pub fn plan_shards(files: &[InputFile], shard_size: u64) -> Vec<Shard> {
    plan_shards_with(files, shard_size, |_| true)
}

/// [`plan_shards`] where only the files for which `splittable` holds may be cut: any other
/// file is read whole by one task (Hadoop's rule for compressed text, and ours for
/// [`crate::JobSpec::split_files`] off). Whole files still share a shard while they fit
/// in it, and one longer than `shard_size` makes a shard of its own, so many small files
/// still make few tasks.
pub fn plan_shards_with(files: &[InputFile], shard_size: u64, splittable: impl Fn(&InputFile) -> bool) -> Vec<Shard> {
    assert!(shard_size > 0, "shard size must be positive");
    // Bytes of the input not yet in a shard (u128: the lengths' sum may pass u64).
    let mut left: u128 = files.iter().map(|f| u128::from(f.len)).sum();
    let room_for = |left: u128| match left * 10 <= u128::from(shard_size) * SLOP_TENTHS {
        true => u64::try_from(left).unwrap_or(u64::MAX),
        false => shard_size,
    };
    let mut shards = Vec::new();
    let mut current = Vec::new();
    let mut room = room_for(left);
    for file in files {
        if file.len > 0 && !splittable(file) {
            if file.len > room && !current.is_empty() {
                shards.push(Shard { segments: std::mem::take(&mut current) });
                room = room_for(left);
            }
            current.push(Segment { path: file.path.clone(), start: 0, end: file.len });
            left -= u128::from(file.len);
            room = room.saturating_sub(file.len);
            if room == 0 || current.len() == MAX_SHARD_SEGMENTS {
                shards.push(Shard { segments: std::mem::take(&mut current) });
                room = room_for(left);
            }
            continue;
        }
        let mut pos = 0;
        while pos < file.len {
            let take = room.min(file.len - pos);
            current.push(Segment { path: file.path.clone(), start: pos, end: pos + take });
            pos += take;
            room -= take;
            left -= u128::from(take);
            if room == 0 || current.len() == MAX_SHARD_SEGMENTS {
                shards.push(Shard { segments: std::mem::take(&mut current) });
                room = room_for(left);
            }
        }
    }
    if !current.is_empty() {
        shards.push(Shard { segments: current });
    }
    shards
}

mod lines;

pub use lines::{BadUtf8, Block, DEFAULT_MAX_LINE, LINE_BLOCK, LineReader, LineTooLong};

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, len: u64) -> InputFile {
        InputFile { path: path.into(), len }
    }

    #[test]
    fn shards_cut_the_concatenation() {
        let shards = plan_shards(&[file("a", 10), file("empty", 0), file("b", 5)], 6);
        let seg = |p: &str, s, e| Segment { path: p.into(), start: s, end: e };
        assert_eq!(
            shards,
            vec![
                Shard { segments: vec![seg("a", 0, 6)] },
                Shard { segments: vec![seg("a", 6, 10), seg("b", 0, 2)] },
                Shard { segments: vec![seg("b", 2, 5)] },
            ]
        );
        assert_eq!(shards[1].len(), 6);
        assert!(plan_shards(&[file("e", 0)], 4).is_empty());
    }

    #[test]
    fn a_remainder_within_a_tenth_of_a_shard_joins_the_last_shard() {
        let lens = |files: &[InputFile], shard| plan_shards(files, shard).iter().map(Shard::len).collect::<Vec<_>>();
        // 10% of 100 is 10: a remainder of 10 joins, one of 11 is a shard of its own.
        assert_eq!(lens(&[file("a", 210)], 100), vec![100, 110]);
        assert_eq!(lens(&[file("a", 211)], 100), vec![100, 100, 11]);
        assert_eq!(lens(&[file("a", 105)], 100), vec![105]);
        // Across files: the slop counts the whole input left, not the file's.
        assert_eq!(lens(&[file("a", 150), file("b", 55)], 100), vec![100, 105]);
        let last = plan_shards(&[file("a", 150), file("b", 55)], 100).pop().unwrap();
        assert_eq!(last.segments.len(), 2);
        // Huge sizes do not overflow the comparison.
        assert_eq!(lens(&[file("a", u64::MAX)], u64::MAX / 2), vec![u64::MAX / 2, u64::MAX / 2 + 1]);
        assert_eq!(lens(&[file("a", u64::MAX), file("b", 4)], u64::MAX), vec![u64::MAX, 4]);
    }

    #[test]
    fn a_shard_of_many_files_is_cut_at_the_segment_limit_and_displays_short() {
        let files: Vec<InputFile> = (0..MAX_SHARD_SEGMENTS + 10).map(|i| file(&format!("/in/{i}"), 1)).collect();
        let shards = plan_shards(&files, 1 << 30);
        assert_eq!(shards.iter().map(|s| s.segments.len()).collect::<Vec<_>>(), vec![MAX_SHARD_SEGMENTS, 10]);
        let text = shards[0].to_string();
        assert_eq!(
            text,
            format!("/in/0[0..1) and {} more segments, {MAX_SHARD_SEGMENTS} bytes", MAX_SHARD_SEGMENTS - 1)
        );
        assert_eq!(shards[1].segments[..1].len(), 1);
        let one = Shard { segments: vec![Segment { path: "a".into(), start: 3, end: 9 }] };
        assert_eq!(one.to_string(), "a[3..9)");
    }

    #[test]
    fn small_inputs_are_spread_over_the_workers_and_large_ones_keep_the_shard_size() {
        let mib = 1u64 << 20;
        assert_eq!(split_size(100 * mib, 128 * mib, 2), 50 * mib, "100 MiB on 2 workers: 2 tasks");
        assert_eq!(split_size(1 << 30, 128 * mib, 2), 128 * mib, "1 GiB: the shard size");
        assert_eq!(split_size(6 * mib, 128 * mib, 4), 4 * mib, "no sliver under 4 MiB");
        assert_eq!(split_size(6 * mib, mib, 4), mib, "a smaller shard size asked for wins");
        assert_eq!(split_size(0, 128 * mib, 0), 4 * mib);
        let file = InputFile { path: "a".into(), len: 100 * mib };
        assert_eq!(plan_shards(&[file], split_size(100 * mib, 128 * mib, 2)).len(), 2);
    }

    #[test]
    fn files_that_may_not_be_split_are_read_whole_and_small_ones_share_a_shard() {
        let files = [file("a", 40), file("b.gz", 250), file("c", 30), file("d.gz", 30), file("e.gz", 60), file("f", 0)];
        let whole = |f: &InputFile| !f.path.ends_with(".gz");
        let shards = plan_shards_with(&files, 100, whole);
        let got: Vec<Vec<(&str, u64, u64)>> =
            shards.iter().map(|s| s.segments.iter().map(|g| (g.path.as_str(), g.start, g.end)).collect()).collect();
        assert_eq!(
            got,
            vec![
                vec![("a", 0, 40)],
                vec![("b.gz", 0, 250)],
                vec![("c", 0, 30), ("d.gz", 0, 30)],
                vec![("e.gz", 0, 60)],
            ],
            "a is cut nowhere: it fits; b is longer than a shard and whole; c and d share one"
        );
        // Nothing splittable: every file starts its segment at 0, and every byte is in once.
        let none = plan_shards_with(&files, 64, |_| false);
        assert!(none.iter().flat_map(|s| &s.segments).all(|g| g.start == 0));
        assert_eq!(none.iter().map(Shard::len).sum::<u64>(), 410);
    }
}

/// Hostile sizes for [`plan_shards`]: file lengths up to `u64::MAX`, shard sizes of 1 and
/// `u64::MAX`, many empty files, totals past `u64::MAX`.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn len() -> impl Strategy<Value = u64> {
        prop_oneof![
            3 => Just(0u64),
            3 => 1u64..50,
            1 => Just(u64::MAX),
            1 => (1u64..50).prop_map(|d| u64::MAX - d),
            1 => Just(u64::MAX / 2 + 1),
            1 => any::<u64>(),
        ]
    }

    fn shard_size() -> impl Strategy<Value = u64> {
        prop_oneof![
            2 => Just(1u64),
            2 => 2u64..100,
            2 => Just(u64::MAX),
            1 => (0u64..50).prop_map(|d| u64::MAX / 2 + d),
            1 => any::<u64>().prop_map(|s| s.max(1)),
        ]
    }

    /// Files and a shard size, raised if need be so that the plan has at most a few
    /// thousand shards (a shard size of 1 over a file of `u64::MAX` bytes would have
    /// `u64::MAX` of them).
    fn input() -> impl Strategy<Value = (Vec<InputFile>, u64)> {
        let files = proptest::collection::vec(len(), 0..120).prop_map(|lens| {
            lens.into_iter().enumerate().map(|(i, len)| InputFile { path: format!("f{i}"), len }).collect::<Vec<_>>()
        });
        (files, shard_size()).prop_map(|(files, shard)| {
            let total: u128 = files.iter().map(|f| u128::from(f.len)).sum();
            let least = u64::try_from(total / 2000 + 1).expect("at most 120 files of u64::MAX");
            (files, shard.max(least))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every byte of every file is in exactly one shard, in input order; no shard or
        /// segment is empty; every shard but the last holds `shard_size` bytes, and the last
        /// at most 10% more.
        #[test]
        fn plan_shards_covers_every_byte_once_in_order_whatever_the_sizes((files, shard) in input()) {
            let shards = plan_shards(&files, shard);
            let segments: Vec<&Segment> = shards.iter().flat_map(|s| &s.segments).collect();
            let mut next = segments.iter().peekable();
            for file in files.iter().filter(|f| f.len > 0) {
                let mut pos = 0u64;
                while pos < file.len {
                    let s = next.next().unwrap_or_else(|| panic!("{} not covered past {pos}", file.path));
                    prop_assert_eq!((&s.path, s.start), (&file.path, pos), "a gap, an overlap or out of order");
                    prop_assert!(s.end > s.start && s.end <= file.len, "segment {:?} of {:?}", s, file);
                    pos = s.end;
                }
            }
            prop_assert!(next.peek().is_none(), "segments past the input: {:?}", next.peek());

            let lens: Vec<u128> = shards
                .iter()
                .map(|s| s.segments.iter().map(|g| u128::from(g.end - g.start)).sum())
                .collect();
            let total: u128 = files.iter().map(|f| u128::from(f.len)).sum();
            prop_assert_eq!(lens.iter().sum::<u128>(), total);
            // Full shards, then the remainder of at most 110% of a shard; a remainder of
            // more than u64::MAX bytes (shard sizes above u64::MAX / 1.1) is cut in two at
            // u64::MAX, as a Shard's length is a u64.
            let full = lens.iter().take_while(|&&l| l == u128::from(shard)).count();
            let tail = &lens[full..];
            let max = u128::from(u64::MAX);
            let tail_ok = match tail {
                [] => true,
                [last] => *last * 10 <= u128::from(shard) * 11,
                [first, last] => *first == max && (first + last) * 10 <= u128::from(shard) * 11,
                _ => false,
            };
            prop_assert!(tail_ok && tail.iter().all(|&l| l > 0), "{:?} (shard {})", lens, shard);
            // Shard::len cannot overflow: a shard never holds more than u64::MAX bytes.
            prop_assert!(lens.iter().all(|&l| l <= u128::from(u64::MAX)));
        }
    }

    #[test]
    fn many_empty_files_and_totals_past_u64_max_plan_without_overflow() {
        let empty = (0..10_000).map(|i| InputFile { path: format!("e{i}"), len: 0 });
        let files: Vec<InputFile> =
            empty.chain((0..3).map(|i| InputFile { path: format!("h{i}"), len: u64::MAX })).collect();
        let shards = plan_shards(&files, u64::MAX);
        assert_eq!(shards.iter().map(Shard::len).collect::<Vec<_>>(), [u64::MAX; 3]);
        assert!(plan_shards(&files[..10_000], 1).is_empty());
        // A remainder within the slop but past u64::MAX bytes is cut at u64::MAX.
        let files = [InputFile { path: "h".into(), len: u64::MAX }, InputFile { path: "t".into(), len: 4 }];
        let lens: Vec<u64> = plan_shards(&files, u64::MAX - 10).iter().map(Shard::len).collect();
        assert_eq!(lens, [u64::MAX, 4]);
    }
}
