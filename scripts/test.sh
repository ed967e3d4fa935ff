#!/usr/bin/env bash
# The project's test command (README, .ci/run): install the non-Rust test tools if missing,
# then run every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo test --workspace --locked
