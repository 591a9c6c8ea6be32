//! Word count with timely dataflow (2 worker threads): each worker reads the lines of its
//! own byte range of the file and counts their words in a HashMap (a combiner, as a
//! timely user would write it: sending every word across costs several times more), then
//! exchanges its `(word, count)` pairs by the word's hash to the worker that sums them;
//! the main thread collects the workers' sums (disjoint sets of words), sorts them and
//! writes them.
//!
//! usage: timely-wordcount INPUT_FILE OUTPUT_FILE    (writes `word<TAB>count` lines sorted by word)

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::rc::Rc;

use external_wordcount::{args, part_lines, words, write_sorted};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::ToStream;
use timely::dataflow::operators::{Exchange, Operator};

fn main() {
    let (input, output) = args("timely-wordcount");
    let guards = timely::execute(timely::Config::process(2), move |worker| {
        let lines = part_lines(&input, worker.index(), worker.peers())
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", input.display()));
        let mut local = HashMap::<String, u64>::new();
        for line in lines {
            for word in words(&line) {
                match local.get_mut(word) {
                    Some(n) => *n += 1,
                    None => {
                        local.insert(word.to_owned(), 1);
                    }
                }
            }
        }
        let counts = Rc::new(RefCell::new(HashMap::<String, u64>::new()));
        let sink = Rc::clone(&counts);
        worker.dataflow::<(), _, _>(|scope| {
            local
                .into_iter()
                .collect::<Vec<_>>()
                .to_stream(scope)
                // A fixed hasher: both workers must route a word alike.
                .exchange(|(word, _): &(String, u64)| BuildHasherDefault::<DefaultHasher>::default().hash_one(word))
                .sink(Pipeline, "Sum", move |(input, _frontier)| {
                    let mut counts = sink.borrow_mut();
                    input.for_each(|_time, batch| {
                        for (word, n) in batch.drain(..) {
                            *counts.entry(word).or_default() += n;
                        }
                    });
                });
        });
        while worker.step_or_park(None) {}
        counts.take().into_iter().collect::<Vec<_>>()
    })
    .expect("starting timely");
    let mut counts = Vec::new();
    for result in guards.join() {
        counts.extend(result.expect("a timely worker failed"));
    }
    write_sorted(&output, counts).unwrap_or_else(|e| panic!("cannot write {}: {e}", output.display()));
}
