//! The `tierflow` command's tests on Apache Kafka, one binary: the lag the services export
//! and `tierflow topics ensure`.

mod kafka_lag;
mod topics;
