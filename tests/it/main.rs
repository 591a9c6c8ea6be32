//! Integration tests, compiled into one binary so the workspace links once.

mod claims;
mod corruption;
mod errors;
mod faults;
mod formats;
mod hostile;
mod hosts;
mod membership;
mod processes;
mod runner;
mod security;
mod shuffle;
mod support;
mod wordcount;
