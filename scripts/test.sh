#!/usr/bin/env bash
# The project's test command (README, .ci/run): install the non-Rust test tools if missing,
# run every test in the workspace (on librdkafka's in-process mock cluster, and on Apache Kafka
# started by scripts/kafka.py where only a real broker shows the behaviour: failover, size
# limits, offsets-for-times, the log cleaner, the group coordinator), then the suites about
# Kafka behaviour again on an Apache Kafka node (`TIERFLOW_TEST_BROKER=kafka`, see testkit).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
# Apache Kafka's jars (Maven Central, cached per machine in ~/.cache/tierflow).
scripts/kafka.py install >/dev/null
# The e2e kill test runs the services' binaries as processes: build them from this tree first.
cargo build --workspace --bins --locked
# A failing test prints the warnings its in-process services logged (testkit::log; libtest
# shows a test's output only when it fails).
export TEST_LOG="${TEST_LOG:-warn}"
cargo test --workspace --locked
echo "the Kafka-facing suites again, on Apache Kafka" >&2
# One invocation over the workspace (not `-p` per crate, which would resolve features
# differently and rebuild dependencies). Each crate's tests are one binary, `it`
# (tests/it/main.rs), and a suite is a module of it: e2e pipeline/faults/kills, segmenter and
# okta-writer crash, segmenter service/poison, okta-writer writer and reconcile, and the
# backfill (the e2e one with webhooks on Apache Kafka; the ingest's own run on the mock again).
TIERFLOW_TEST_BROKER=kafka cargo test --locked --workspace --test it -- \
  pipeline:: faults:: kills:: crash:: service:: poison:: writer:: reconcile:: backfill::
