#!/usr/bin/env bash
# The project's test command (README, .ci/run): install the non-Rust test tools if missing,
# run every test in the workspace (Kafka: the in-process librdkafka mock cluster, and Apache
# Kafka started by scripts/kafka.py where only a real broker shows the behaviour), then the
# end-to-end suite again against a standalone broker, a Tansu process with sqlite storage.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
# Apache Kafka's jars (Maven Central, cached per machine): tests that need what only a real
# broker does (size limits on the compressed batch, DescribeConfigs) start a node with it.
scripts/kafka.py install >/dev/null
TANSU_BIN="$(scripts/install-tansu.sh)"
export TANSU_BIN
# The e2e kill test runs the services' binaries as processes: build them from this tree first.
cargo build --workspace --bins --locked
cargo test --workspace --locked
echo "end-to-end suite against Tansu ($TANSU_BIN)" >&2
TIERFLOW_E2E_BROKER=tansu cargo test -p e2e --locked
