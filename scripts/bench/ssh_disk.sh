#!/usr/bin/env bash
# SSH disk collector benchmark: one private sshd on a free loopback port, configured in vitals
# as TARGETS targets (default 50) with the default concurrency. Prints
#   - how long the first refresh round of all targets took (from vitals' start to the last
#     target's first success, from vitals' own metrics), and the per-refresh durations;
#   - scrape latency while refreshes run, measured by a keep-alive HTTP client
#     (scripts/bench/scrape_probe.py) and split into scrapes during which sshd had established
#     connections and scrapes between rounds; next to it vitals' own handler time for the same
#     scrapes (vitals_http_request_duration_seconds{handler="metrics"}, buckets 1/5/10 ms) and
#     the CPU time of vitals' threads (the SSH refresher thread `vitals-ssh` apart).
# Two phases, each SECONDS long:
#   contended  every process may run on every core (sshd, its shells and df compete with
#              vitals and the client, as on a small host that also serves as the SSH target);
#   separated  sshd and everything it starts on the last core (taskset), vitals and the
#              client on core 0: what is left is vitals' own latency, its refresher thread
#              included (other processes of the machine still run anywhere).
# Needs root (sshd, and a test user it creates like the test harness does).
#
# VITALS_BIN=path uses that binary instead of building the release one; PERF_OUT=file records
# a CPU profile of vitals (perf record) during the contended phase.
#
#   [SSHD_NICE=19] [VITALS_BIN=...] [PERF_OUT=...] scripts/bench/ssh_disk.sh [TARGETS] [SECONDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

TARGETS=${1:-50}
SECONDS_OF_SCRAPES=${2:-12}
USER_NAME=vitalstest
SSHD=/usr/sbin/sshd
for bin in "$SSHD" /usr/bin/ssh-keygen /usr/bin/taskset /usr/bin/curl /usr/bin/python3; do
  [ -x "$bin" ] || { echo "bench: $bin missing: run scripts/setup-test-deps.sh" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "bench: run as root (sshd)" >&2; exit 1; }
VITALS=${VITALS_BIN:-$(vitals_bin)}

work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

id -u "$USER_NAME" >/dev/null 2>&1 || useradd -m -s /bin/sh "$USER_NAME"
mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N "" -C bench-host -f "$work/host_ed25519"
ssh-keygen -q -t ed25519 -N "" -C bench-client -f "$work/id_ed25519"
cp "$work/id_ed25519.pub" "$work/authorized_keys"
chmod 644 "$work/authorized_keys"

port=$(free_port)
cat > "$work/sshd_config" <<CFG
Port $port
ListenAddress 127.0.0.1
HostKey $work/host_ed25519
PidFile $work/sshd.pid
AuthorizedKeysFile $work/authorized_keys
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowUsers $USER_NAME
PrintMotd no
UseDNS no
MaxStartups 200:30:400
LogLevel ERROR
CFG
SSHD_NICE=${SSHD_NICE:-0}
nice -n "$SSHD_NICE" "$SSHD" -D -e -f "$work/sshd_config" 2>"$work/sshd.log" & pids+=($!)
echo "bench: $TARGETS targets on one sshd (nice $SSHD_NICE), $(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg)"
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$work/host_ed25519.pub")" > "$work/known_hosts"

{
  echo "exporter:"
  echo "  ssh_disk:"
  echo "    targets:"
  for i in $(seq -w "$TARGETS"); do
    cat <<T
      - name: t$i
        host: 127.0.0.1
        port: $port
        user: $USER_NAME
        key_file: $work/id_ed25519
        known_hosts: $work/known_hosts
        interval: 5s
T
  done
} > "$work/vitals.yml"

vp=$(free_port)
url="http://127.0.0.1:$vp/metrics"
"$VITALS" exporter --config.file="$work/vitals.yml" --web.listen-address=127.0.0.1:$vp \
  --collector.disable-defaults --collector.ssh_disk --collector.vitals --log.level=warn \
  2>"$work/vitals.log" & pids+=($!)
wait_http "$url"

# First round: wait until every target has succeeded once (30 s at most).
for _ in $(seq 300); do
  up=$(curl -fsS "$url" | awk '/^ssh_target_up\{/ && $2 == 1 { n++ } END { print n + 0 }')
  [ "$up" -ge "$TARGETS" ] && break
  sleep 0.1
done
curl -fsS "$url" > "$work/first.txt"
python3 - "$work/first.txt" "$TARGETS" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
want = int(sys.argv[2])
def values(name):
    return [float(m.group(1)) for m in re.finditer(r"^" + name + r"\{[^}]*\} (\S+)$", text, re.M)]
start = values("process_start_time_seconds") or [float(m) for m in re.findall(r"^process_start_time_seconds (\S+)$", text, re.M)]
succ = values("ssh_target_last_success_timestamp_seconds")
durs = sorted(values("ssh_target_duration_seconds"))
up = sum(1 for v in values("ssh_target_up") if v == 1)
if up < want or not start:
    sys.exit(f"bench: only {up}/{want} targets up")
print(f"first round: {up}/{want} targets up, last first success {max(succ) - start[0]:.3f} s after vitals started")
print(f"refresh duration per target: p50 {durs[len(durs)//2]:.3f} s, max {durs[-1]:.3f} s")
PY

# Scrapes while refreshes run (interval 5s: a new round starts every 5 s).
vpid=${pids[1]}
spid=${pids[0]}
last_cpu=$(( $(nproc) - 1 ))
probe() {
  local label=$1; shift
  "$@" python3 "$here/scrape_probe.py" --url "$url" --seconds "$SECONDS_OF_SCRAPES" \
    --ssh-port "$port" --pid "$vpid" --label "$label"
}
echo "load average before the contended phase: $(cut -d' ' -f1-3 /proc/loadavg)"
perf_pid=
if [ -n "${PERF_OUT:-}" ]; then
  perf record -q -F 2000 -g -p "$vpid" -o "$PERF_OUT" -- sleep "$SECONDS_OF_SCRAPES" 2>/dev/null &
  perf_pid=$!
fi
probe contended env
[ -z "$perf_pid" ] || wait "$perf_pid" || true
if [ "$last_cpu" -ge 1 ]; then
  # sshd's later sessions inherit its affinity; vitals' threads are pinned one by one (-a).
  taskset -p -c "$last_cpu" "$spid" >/dev/null
  taskset -a -p -c 0 "$vpid" >/dev/null
  echo "load average before the separated phase: $(cut -d' ' -f1-3 /proc/loadavg)"
  probe "separated (sshd on cpu $last_cpu, vitals and the client on cpu 0)" taskset -c 0
else
  echo "one core: no separated phase"
fi
grep -i "error" "$work/vitals.log" | head -5 || true
