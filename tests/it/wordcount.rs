//! Word count through in-process workers behind real gRPC equals the sequential count.

use std::fs;

use mapreduce::{Cluster, JobSpec};
use mapreduce_core::shard::{InputFile, plan_shards};
use mapreduce_examples::corpus::generate_corpus;
use mapreduce_examples::wordcount::WordCount;

use crate::support::{assert_wordcount_output, init_tracing};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_shards_and_reducers_with_spills_equal_the_sequential_count() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    generate_corpus(&input, 3 << 20, 30_000, 1).unwrap();
    let out = dir.path().join("out");
    let cluster = Cluster::local(3).await.unwrap();
    // 64 KiB shards: ~49 map tasks; the smallest sort buffer forces spills and merges.
    let spec = JobSpec::new(WordCount, [&input], &out).reducers(5).shard_size(64 << 10).sort_buffer_bytes(64 << 10);
    let report = cluster.run(spec).await.unwrap();
    let counts = assert_wordcount_output(&out, 5, std::slice::from_ref(&input));

    let len = fs::metadata(&input).unwrap().len();
    let file = InputFile { path: input.to_string_lossy().into_owned(), len };
    let maps = plan_shards(&[file], 64 << 10).len() as u32;
    assert!(maps == len.div_ceil(64 << 10) as u32 || maps == len.div_ceil(64 << 10) as u32 - 1);
    assert!(maps > 40);
    assert_eq!(report.map_tasks, maps);
    assert_eq!(report.reduce_tasks, 5);
    assert_eq!(report.attempts.launched, u64::from(maps + 5));
    assert_eq!(report.attempts.succeeded, u64::from(maps + 5));
    assert_eq!(report.input_bytes, fs::metadata(&input).unwrap().len());
    assert_eq!(report.output_records, counts.len() as u64);
    assert!(report.intermediate_bytes > 0);
    assert_eq!(report.outputs.len(), 5);
    // The example's top words, read without holding the output, are the counts' best.
    let mut ranked: Vec<(String, u64)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for n in [1, 5, 5000] {
        let want: Vec<(String, u64)> = ranked.iter().take(n).cloned().collect();
        assert_eq!(mapreduce_examples::reference::top_words(&out, n).unwrap(), want, "top {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_inputs_are_read_exactly_once() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::create_dir_all(data.join("nested")).unwrap();
    fs::write(data.join("empty.txt"), "").unwrap();
    fs::write(data.join("no-final-newline.txt"), "alpha beta\ngamma alpha").unwrap();
    fs::write(data.join("crlf.txt"), "Alpha\r\nbeta\r\n\r\n").unwrap();
    fs::write(data.join("nested/latin1.txt"), b"caf\xe9 au lait\n\xff\xfe\ncaf\xc3\xa9\n").unwrap();
    fs::write(data.join("nested/long-line.txt"), "word ".repeat(400)).unwrap();
    fs::write(data.join(".hidden"), "ignored words").unwrap();
    let files: Vec<_> = ["crlf.txt", "empty.txt", "nested/latin1.txt", "nested/long-line.txt", "no-final-newline.txt"]
        .iter()
        .map(|f| data.join(f))
        .collect();
    let cluster = Cluster::local(2).await.unwrap();
    // Shards of 1 and 7 bytes cut lines, files and multi-byte characters everywhere
    // (and make more map outputs than a reduce merges at once).
    for (shard, reducers) in [(7, 3), (1, 1), (1 << 20, 2)] {
        let out = dir.path().join(format!("out-{shard}"));
        let spec = JobSpec::new(WordCount, [&data], &out).reducers(reducers).shard_size(shard);
        cluster.run(spec).await.unwrap();
        let counts = assert_wordcount_output(&out, reducers, &files);
        assert_eq!(counts["word"], 400);
        assert_eq!(counts["caf"], 1, "the invalid byte splits the word");
        assert_eq!(counts["café"], 1);
        assert!(!counts.contains_key("ignored"), "hidden files are not input");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_input_gives_r_empty_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("empty.txt");
    fs::write(&input, "").unwrap();
    let out = dir.path().join("out");
    let cluster = Cluster::local(1).await.unwrap();
    let report = cluster.run(JobSpec::new(WordCount, [&input], &out).reducers(3)).await.unwrap();
    assert_eq!((report.map_tasks, report.reduce_tasks, report.output_records), (0, 3, 0));
    assert_wordcount_output(&out, 3, &[input]);
    for r in 0..3 {
        assert_eq!(fs::read(out.join(format!("part-{r:05}"))).unwrap(), b"");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_words_long_lines_and_mixed_scripts_equal_the_sequential_count() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mixed.txt");
    // Words around the 16 bytes a short key holds (ASCII and two-byte letters), separators
    // that are not ASCII (—, ×, U+FFFD), letters outside the fast ranges (Greek, CJK, a
    // combining mark), and a line of 200 KiB: longer than the 64 KiB blocks map tasks read.
    let mut text = String::new();
    for i in 0..3000 {
        let n = 12 + i % 9;
        text.push_str(&"x".repeat(n));
        text.push(' ');
        text.push_str(&"é".repeat(n / 2));
        text.push_str(["—", " ", "×", "\u{fffd}", "\t"][i % 5]);
        text.push_str(["αβγ", "日本語", "e\u{301}t\u{e9}", "Straße", "жук"][i % 5]);
        text.push_str(if i % 7 == 0 { ".\r\n" } else { " " });
    }
    let long_line: String =
        (0..50_000).map(|i| format!("w{} ", ["a", "é", "ж", "b"][i % 4].repeat(1 + i % 5))).collect();
    text.push_str(&long_line);
    text.push('\n');
    text.push_str(&text.clone());
    fs::write(&input, &text).unwrap();
    assert!(long_line.len() > 3 * (64 << 10));

    let cluster = Cluster::local(2).await.unwrap();
    // The default shard size (one map task), then small shards that cut the long line.
    for (shard, reducers) in [(mapreduce::DEFAULT_SHARD_SIZE, 2), (50_000, 3)] {
        let out = dir.path().join(format!("out-{shard}"));
        let spec = JobSpec::new(WordCount, [&input], &out).reducers(reducers).shard_size(shard);
        cluster.run(spec).await.unwrap();
        let counts = assert_wordcount_output(&out, reducers, std::slice::from_ref(&input));
        assert_eq!(counts[&"x".repeat(20)], 2 * 333, "a word of 20 bytes");
        assert_eq!(counts["日本語"], 2 * 600);
        assert!(counts.keys().any(|w| w.len() > 16 && w.starts_with('é')), "long two-byte words");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_smaller_than_a_shard_per_worker_still_gives_every_worker_a_task() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.txt");
    generate_corpus(&input, 12 << 20, 20_000, 3).unwrap();
    let cluster = Cluster::local(3).await.unwrap();
    // The default shard size (128 MiB) would make one task of this 12 MiB input.
    let report = cluster.run(JobSpec::new(WordCount, [&input], dir.path().join("out"))).await.unwrap();
    assert_eq!(report.map_tasks, 3, "12 MiB over 3 workers: 4 MiB shards");
    assert!(report.workers.iter().all(|w| w.accepted >= 1), "{:?}", report.workers);
    assert_wordcount_output(&dir.path().join("out"), 1, std::slice::from_ref(&input));
}
