//! The end-to-end tests of the whole pipeline, one binary (each test binary links
//! librdkafka; one per crate keeps the build short). `tracing.rs` is its own binary: it
//! installs a process-wide subscriber that would collect every other test's spans.

mod backfill;
mod compose;
mod faults;
mod kafka_cluster;
mod kills;
mod pipeline;
mod prometheus;
