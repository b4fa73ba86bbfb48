#!/usr/bin/env bash
# Log pipeline benchmark: vitals vs mtail on the same synthetic 1M-line auth log, one pass
# each (`vitals logs check`, `mtail --one_shot`), with equivalent rules: lines counted,
# failed SSH authentications by reason and by source address, accepted logins by method.
# vitals also parses the syslog header, normalises levels and mines error patterns.
# Prints wall time, CPU time, lines/s per CPU second and peak RSS, and the ratios.
# Each tool runs RUNS times (default 3), alternating, and each figure is the median of its
# runs, so that a burst of load from other processes on a shared machine skews neither side;
# the load average before and after is printed with the results.
#
#   [RUNS=3] scripts/bench/logs.sh [LINES]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

LINES=${1:-1000000}
RUNS=${RUNS:-3}
command -v mtail >/dev/null || { echo "bench: install mtail (scripts/setup-test-deps.sh)" >&2; exit 1; }
VITALS=$(vitals_bin)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A synthetic auth.log in Debian's RFC 3164 format: failed and accepted logins, invalid users,
# PAM and session lines, from a few thousand addresses.
awk -v n="$LINES" 'BEGIN {
  srand(42);
  split("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec", mon, " ");
  for (i = 0; i < n; i++) {
    ip = int(rand()*200)+1 "." int(rand()*250) "." int(rand()*250) "." int(rand()*30)+1;
    pid = 1000 + int(rand()*30000); port = 1024 + int(rand()*60000);
    hdr = sprintf("%s %2d %02d:%02d:%02d db1 sshd[%d]: ", mon[int(i/100000)%12+1], (int(i/3600)%28)+1, int(i/3600)%24, int(i/60)%60, i%60, pid);
    r = rand();
    if (r < 0.35) msg = sprintf("Failed password for root from %s port %d ssh2", ip, port);
    else if (r < 0.50) msg = sprintf("Failed password for invalid user admin%d from %s port %d ssh2", int(rand()*50), ip, port);
    else if (r < 0.60) msg = sprintf("Invalid user admin%d from %s port %d", int(rand()*50), ip, port);
    else if (r < 0.70) msg = sprintf("Accepted publickey for deploy from %s port %d ssh2: ED25519 SHA256:abc%d", ip, port, int(rand()*9));
    else if (r < 0.80) msg = sprintf("pam_unix(sshd:session): session opened for user deploy(uid=1000) by (uid=0)");
    else if (r < 0.90) msg = sprintf("Connection closed by authenticating user root %s port %d [preauth]", ip, port);
    else msg = sprintf("Received disconnect from %s port %d:11: Bye Bye [preauth]", ip, port);
    print hdr msg;
  }
}' > "$work/auth.log"

mkdir -p "$work/progs"
cat > "$work/progs/auth.mtail" <<'MTAIL'
counter log_lines_total
counter log_ssh_auth_failures_total by reason
counter log_ssh_auth_failures_by_ip_total by ip
counter log_ssh_logins_total by method

/.*/ {
  log_lines_total++
}
/sshd\[\d+\]: Failed (?P<method>\S+) for (?P<invalid>invalid user )?\S+ from (?P<ip>\S+) port/ {
  log_ssh_auth_failures_total[$method]++
  log_ssh_auth_failures_by_ip_total[$ip]++
}
/sshd\[\d+\]: Accepted (?P<method>\S+) for \S+ from/ {
  log_ssh_logins_total[$method]++
}
MTAIL

measure() { # label, command... -> "wall cpu rss_kib"
  local out="$work/time.$1"; shift
  /usr/bin/time -f '%e %U %S %M' -o "$out" "$@" > "$work/stdout.$(basename "$out")" 2>/dev/null
  awk '{ printf "%.3f %.3f %d\n", $1, $2 + $3, $4 }' "$out"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
: > "$work/runs.vitals"
: > "$work/runs.mtail"
for _ in $(seq "$RUNS"); do
  measure vitals "$VITALS" logs check "$work/auth.log" --parser syslog --ip-budget 100000 >> "$work/runs.vitals"
  measure mtail mtail --one_shot --one_shot_format json --progs "$work/progs" --logs "$work/auth.log" --logtostderr >> "$work/runs.mtail"
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
pick() { awk -v c="$2" '{ print $c }' "$work/runs.$1" | median; }
v_wall=$(pick vitals 1) v_cpu=$(pick vitals 2) v_rss=$(pick vitals 3)
m_wall=$(pick mtail 1) m_cpu=$(pick mtail 2) m_rss=$(pick mtail 3)

v_fail=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(d["ssh_auth_failures"].values()))' "$work/stdout.time.vitals")
m_fail=$(python3 -c '
import json,sys
d=json.load(open(sys.argv[1]))
tot=0
for m in d if isinstance(d,list) else d.values():
    ms = m if isinstance(m,list) else [m]
    for x in ms:
        if x.get("Name")=="log_ssh_auth_failures_total":
            for lv in x.get("LabelValues",[]): tot+=lv["Value"]["Value"]
print(int(tot))' "$work/stdout.time.mtail" 2>/dev/null || echo "?")

rate() { awk -v n="$LINES" -v t="$1" 'BEGIN { if (t <= 0) print "inf"; else printf "%.0f", n / t }'; }
printf '\nlogs benchmark: %s lines, %s bytes; failed auth counted: vitals=%s mtail=%s\n' "$LINES" "$(stat -c %s "$work/auth.log")" "$v_fail" "$m_fail"
printf 'median of %s runs each; load average before: %s, after: %s\n' "$RUNS" "$load_before" "$load_after"
printf 'runs (wall cpu rss_kib): vitals: %s; mtail: %s\n' "$(paste -sd, "$work/runs.vitals")" "$(paste -sd, "$work/runs.mtail")"
printf '%-26s %14s %14s %10s\n' metric vitals mtail ratio
printf '%-26s %14s %14s %10s\n' "wall time (s)" "$v_wall" "$m_wall" "$(ratio "$v_wall" "$m_wall")"
printf '%-26s %14s %14s %10s\n' "CPU time (s)" "$v_cpu" "$m_cpu" "$(ratio "$v_cpu" "$m_cpu")"
printf '%-26s %14s %14s %10s\n' "lines/s (wall)" "$(rate "$v_wall")" "$(rate "$m_wall")" "$(ratio "$(rate "$v_wall")" "$(rate "$m_wall")")"
printf '%-26s %14s %14s %10s\n' "lines/s per CPU second" "$(rate "$v_cpu")" "$(rate "$m_cpu")" "$(ratio "$(rate "$v_cpu")" "$(rate "$m_cpu")")"
printf '%-26s %14s %14s %10s\n' "peak RSS (KiB)" "$v_rss" "$m_rss" "$(ratio "$v_rss" "$m_rss")"
