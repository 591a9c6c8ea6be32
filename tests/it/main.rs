//! Integration tests, compiled into one binary so the workspace links once.

mod errors;
mod faults;
mod processes;
mod security;
mod support;
mod wordcount;
