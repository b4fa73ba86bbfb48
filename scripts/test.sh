#!/usr/bin/env bash
# The README's test command: installs what the tests need, then checks formatting and lints
# and runs every test against real PostgreSQL, sshd, Prometheus and Alertmanager.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== tests"
cargo nextest run --locked --no-fail-fast --failure-output final "$@"
