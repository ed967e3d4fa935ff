//! The ingest's tests, one binary (each test binary links librdkafka; one per crate keeps
//! the build short): over HTTP on the mock cluster, as a process under hostile clients and
//! operators, and on Apache Kafka where only a real broker shows the behaviour.

mod backfill;
mod cli;
mod common;
mod hostile;
mod kafka_failover;
mod kafka_limits;
mod robustness;
mod webhook;
