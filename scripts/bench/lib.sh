# Shared helpers for the side-by-side benchmarks in scripts/bench/. Source it.

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits until a URL answers 200 (30 s at most).
wait_http() {
  for _ in $(seq 300); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "${TOOL:-bench}: $1 did not answer" >&2
  return 1
}

# CPU time (user+system) of a process in clock ticks.
cpu_ticks() {
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

# Resident memory of a process in KiB.
rss_kib() {
  awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# Scrapes a URL N times; prints one latency (seconds) per line.
scrape_times() {
  local url=$1 n=$2
  for _ in $(seq "$n"); do
    curl -fsS -o /dev/null -w '%{time_total}\n' "$url"
  done
}

# p50 and p95 of numbers on stdin, as "p50 p95".
percentiles() {
  sort -g | awk '{ v[NR] = $1 } END { i50 = int(NR * 0.50 + 0.5); i95 = int(NR * 0.95 + 0.5); if (i50 < 1) i50 = 1; if (i95 < 1) i95 = 1; printf "%.6f %.6f\n", v[i50], v[i95] }'
}

ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "inf"; else printf "%.3f\n", a / b }'
}

# Builds the release binary once and prints its path.
vitals_bin() {
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  (cd "$root" && cargo build --release --locked -q) >&2
  echo "$root/target/release/vitals"
}
