//! The segmenter's tests, one binary (each test binary links librdkafka; one per crate keeps
//! the build short): the spend rule, the service on the mock cluster, the binary killed and
//! fed poison, the operator commands, and Apache Kafka where only a real broker shows the
//! behaviour.

mod common;
mod crash;
mod kafka_changelog;
mod kafka_rejected;
mod kafka_replay;
mod poison;
mod replay;
mod rules;
mod service;
mod whatif;
