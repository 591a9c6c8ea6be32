//! Integration tests, compiled into one binary so the workspace links once.

mod claims;
mod corruption;
mod errors;
mod faults;
mod hostile;
mod processes;
mod security;
mod support;
mod wordcount;
