//! A distributed grep: a map-only job whose output lines are `path:line:text`, as
//! `grep -Hn` prints them, with each file named by its absolute path and lines numbered
//! from 1. Files are read whole by one task each (small ones share a task), so that every
//! line's number is known.

use std::sync::OnceLock;

use mapreduce::{BoxError, Emitter, Job, JobSpec, Mapper, Output, Reducer};
use regex::Regex;
use serde::{Deserialize, Serialize};

/// The grep job: the pattern is its one field (`--pattern REGEX`).
#[derive(Debug, Serialize, Deserialize, clap::Args)]
pub struct Grep {
    /// The regular expression to look for (Rust's `regex` syntax)
    #[arg(long, value_name = "REGEX")]
    pub pattern: String,
    /// The pattern, compiled once per task.
    #[serde(skip)]
    #[arg(skip)]
    compiled: OnceLock<Result<Regex, String>>,
}

impl Grep {
    /// A grep for `pattern`.
    pub fn new(pattern: impl Into<String>) -> Self {
        Grep { pattern: pattern.into(), compiled: OnceLock::new() }
    }

    /// What a grep job needs of its spec: no reduce, whole files.
    pub fn configure(spec: JobSpec<Grep>) -> JobSpec<Grep> {
        spec.reducers(0).split_files(false)
    }

    fn regex(&self) -> Result<&Regex, BoxError> {
        let compiled = self.compiled.get_or_init(|| Regex::new(&self.pattern).map_err(|e| e.to_string()));
        compiled.as_ref().map_err(|e| format!("bad --pattern {:?}: {e}", self.pattern).into())
    }
}

impl Mapper for Grep {
    type Key = String;
    type Value = ();

    fn map(&self, line: &str, emit: &mut Emitter<'_, String, ()>) -> Result<(), BoxError> {
        if self.regex()?.is_match(line) {
            let at = emit.position();
            let number = at.line().ok_or("grep reads whole files: every line's number is known")?;
            emit.emit(format!("{}:{number}:{line}", at.path_str()), ());
        }
        Ok(())
    }
}

impl Reducer for Grep {
    fn reduce(&self, _: &String, _: &mut dyn Iterator<Item = ()>, _: &mut Output<'_>) -> Result<(), BoxError> {
        Err("grep is map-only: it has no reduce".into())
    }
}

impl Job for Grep {
    const NAME: &'static str = "grep";
}
