# Shared by scripts/stress/exporter.sh and scripts/soak/exporter.sh: starts, on free loopback
# ports in one throwaway directory, a real PostgreSQL 15 with a few databases, an sshd that
# stands for several SSH disk targets, a log writer, and vitals with every exporter
# collector on; plus samplers of vitals' RSS, open fds and PostgreSQL sessions. Source it,
# then call setup_all. Needs root (PostgreSQL runs as the postgres OS user; sshd) and the
# packages of scripts/setup-test-deps.sh.

PGBIN=/usr/lib/postgresql/15/bin
SSHD=/usr/sbin/sshd
SSH_USER=vitalstest
DBS=${DBS:-4}                 # databases besides postgres
SSH_TARGETS=${SSH_TARGETS:-3} # ssh_disk targets, all on the one sshd
PG_LIMIT=${PG_LIMIT:-4}       # the vitals target's max_connections
LOG_RATE=${LOG_RATE:-200}     # lines per second appended to the log

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PIDS=()
SSHD_PID=""
LOGW_PID=""

die() { echo "$TOOL: $*" >&2; exit 1; }

# free_port, wait_http (and rss_kib, redefined below to tolerate a vanished process).
. "$(dirname "${BASH_SOURCE[0]}")/../bench/lib.sh"

cleanup() {
  local p
  for p in "${PIDS[@]}" $SSHD_PID $LOGW_PID; do kill "$p" 2>/dev/null || true; done
  if [ -n "${WORK:-}" ]; then
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
    if [ -n "${KEEP_WORK:-}" ]; then echo "$TOOL: kept $WORK"; else rm -rf "$WORK"; fi
  fi
}

# The vitals binary: VITALS_BIN if set, else a build of VITALS_PROFILE (release by default;
# CI passes debug, which the test run has built already).
vitals_binary() {
  if [ -n "${VITALS_BIN:-}" ]; then echo "$VITALS_BIN"; return; fi
  local profile=${VITALS_PROFILE:-release}
  if [ "$profile" = release ]; then
    (cd "$ROOT" && cargo build --release --locked -q) >&2
  else
    (cd "$ROOT" && cargo build --locked -q) >&2
  fi
  echo "$ROOT/target/$profile/vitals"
}

check_tools() {
  local bin
  for bin in "$PGBIN/initdb" "$PGBIN/pg_ctl" "$PGBIN/psql" "$SSHD" /usr/bin/ssh-keygen /usr/bin/wrk /usr/bin/curl /usr/bin/python3; do
    [ -x "$bin" ] || die "$bin is missing: run scripts/setup-test-deps.sh"
  done
  [ "$(id -u)" -eq 0 ] || die "run as root (PostgreSQL runs as the postgres user; sshd)"
}

psql_() { "$PGBIN/psql" -X -q -A -t -h "$WORK" -p "$PGPORT" -U postgres "$@"; }

start_pg() {
  PGPORT=${PGPORT:-$(free_port)}
  echo "$TOOL: PostgreSQL 15 on 127.0.0.1:$PGPORT, $DBS databases"
  PGPW=stress-$RANDOM-$RANDOM
  echo "$PGPW" > "$WORK/pg.pw"
  chown postgres: "$WORK/pg.pw"
  runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/data" -U postgres --auth-local=trust \
    --auth-host=scram-sha-256 --pwfile="$WORK/pg.pw" --no-sync --locale=C -E UTF8 >/dev/null
  cat >> "$WORK/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$WORK'
max_connections = 100
shared_buffers = 32MB
fsync = off
synchronous_commit = off
EOF
  pg_up
  psql_ -d postgres -c "create role vitals_mon login password '$PGPW' in role pg_monitor" >/dev/null
  local i
  for i in $(seq "$DBS"); do psql_ -d postgres -c "create database app$i" >/dev/null; done
  printf '%s\n' "$PGPW" > "$WORK/vitals-pg.pass"
  chmod 600 "$WORK/vitals-pg.pass"
}
pg_up() { runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w start >/dev/null; }
pg_down() { runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -m fast -w stop >/dev/null; }

start_sshd() {
  id -u "$SSH_USER" >/dev/null 2>&1 || useradd -m -s /bin/sh "$SSH_USER"
  mkdir -p /run/sshd
  ssh-keygen -q -t ed25519 -N "" -C stress-host -f "$WORK/host_ed25519"
  ssh-keygen -q -t ed25519 -N "" -C stress-client -f "$WORK/id_ed25519"
  cp "$WORK/id_ed25519.pub" "$WORK/authorized_keys"
  chmod 644 "$WORK/authorized_keys"
  SSHPORT=$(free_port)
  cat > "$WORK/sshd_config" <<CFG
Port $SSHPORT
ListenAddress 127.0.0.1
HostKey $WORK/host_ed25519
PidFile $WORK/sshd.pid
AuthorizedKeysFile $WORK/authorized_keys
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowUsers $SSH_USER
PrintMotd no
UseDNS no
MaxStartups 100:30:200
LogLevel ERROR
CFG
  echo "[127.0.0.1]:$SSHPORT $(cut -d' ' -f1,2 "$WORK/host_ed25519.pub")" > "$WORK/known_hosts"
  echo "$TOOL: sshd on 127.0.0.1:$SSHPORT, $SSH_TARGETS ssh_disk targets"
  sshd_up
}
sshd_up() {
  "$SSHD" -D -e -f "$WORK/sshd_config" 2>>"$WORK/sshd.log" &
  SSHD_PID=$!
  local _
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$SSHPORT") 2>/dev/null && return 0
    sleep 0.1
  done
  die "sshd did not listen on $SSHPORT"
}
# Closes the SSH port: sshd stops listening (sessions in flight are cut).
sshd_down() { kill "$SSHD_PID" 2>/dev/null || true; wait "$SSHD_PID" 2>/dev/null || true; SSHD_PID=""; }

# Appends sshd-style syslog lines (failed passwords from a few addresses, accepted keys,
# errors) to $WORK/logs/auth.log at about LOG_RATE lines per second; the number written so
# far is kept in $WORK/logs/written.
start_log_writer() {
  mkdir -p "$WORK/logs" "$WORK/state"
  : > "$WORK/logs/auth.log"
  python3 - "$WORK/logs/auth.log" "$LOG_RATE" <<'PY' &
import sys, time, random, os
path, rate = sys.argv[1], int(sys.argv[2])
n = 0
f = open(path, "a")
ino = os.fstat(f.fileno()).st_ino
while True:
    try:
        st = os.stat(path)
        if st.st_ino != ino:  # rotated: write to the new file
            f.close(); f = open(path, "a"); ino = os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        f.close(); f = open(path, "a"); ino = os.fstat(f.fileno()).st_ino
    t = time.strftime("%b %e %H:%M:%S")
    for _ in range(max(1, rate // 10)):
        n += 1
        r = n % 4
        if r == 0:
            line = f"{t} host sshd[{1000 + n % 50}]: Failed password for root from 10.0.{n % 7}.{n % 13} port {40000 + n % 999} ssh2"
        elif r == 1:
            line = f"{t} host sshd[{1000 + n % 50}]: Accepted publickey for deploy from 10.1.0.{n % 5} port 22 ssh2"
        elif r == 2:
            line = f"{t} host postfix/smtpd[77]: error: connect to database failed (attempt {n % 3})"
        else:
            line = f"{t} host CRON[{n % 900}]: (root) CMD (run-parts /etc/cron.hourly)"
        f.write(line + "\n")
    f.flush()
    with open(path + ".written.tmp", "w") as w:
        w.write(str(n))
    os.replace(path + ".written.tmp", os.path.dirname(path) + "/written")
    time.sleep(0.1)
PY
  LOGW_PID=$!
}

# Rotates the log the way logrotate does without copytruncate: rename, new file.
rotate_log() {
  mv "$WORK/logs/auth.log" "$WORK/logs/auth.log.1"
  # touch, not `: >`: the writer may have re-created the file already; never truncate it.
  touch "$WORK/logs/auth.log"
}

stop_log_writer() { kill "$LOGW_PID" 2>/dev/null || true; wait "$LOGW_PID" 2>/dev/null || true; LOGW_PID=""; }

write_vitals_config() {
  {
    cat <<EOF
exporter:
  postgres:
    targets:
      - name: main
        host: 127.0.0.1
        port: $PGPORT
        user: vitals_mon
        password_file: $WORK/vitals-pg.pass
        sslmode: disable
        max_connections: $PG_LIMIT
  ssh_disk:
    targets:
EOF
    local i
    for i in $(seq "$SSH_TARGETS"); do
      cat <<EOF
      - name: ssh$i
        host: 127.0.0.1
        port: $SSHPORT
        user: $SSH_USER
        key_file: $WORK/id_ed25519
        known_hosts: $WORK/known_hosts
        interval: 5s
        connect_timeout: 5s
EOF
    done
    cat <<EOF
  process:
    groups:
      - name: "{comm}"
        cmdline: ['.+']
  logs:
    state_dir: $WORK/state
    sources:
      - name: auth
        path: $WORK/logs/auth.log
        parser: syslog
        # The writer starts first: count its lines from the first one (the default, end,
        # would skip what is there at vitals' very first start, as tail -F does).
        start_at: beginning
EOF
  } > "$WORK/vitals.yml"
}

start_vitals() {
  VPORT=$(free_port)
  write_vitals_config
  "$VITALS" exporter --config.file="$WORK/vitals.yml" --web.listen-address="127.0.0.1:$VPORT" \
    --log.level="${VITALS_LOG_LEVEL:-warn}" 2>"$WORK/vitals.log" &
  VPID=$!
  PIDS+=("$VPID")
  VURL="http://127.0.0.1:$VPORT"
  wait_http "$VURL/-/ready"
  echo "$TOOL: vitals $("$VITALS" --version | head -1) pid $VPID on $VURL"
}

setup_all() {
  check_tools
  VITALS=$(vitals_binary)
  WORK=$(mktemp -d "/tmp/vitals-$TOOL.XXXXXX")
  chmod 755 "$WORK"
  chown postgres: "$WORK"
  trap cleanup EXIT
  start_pg
  start_sshd
  start_log_writer
  start_vitals
}

# The wrk Lua script: every request picks the next of /metrics and each /probe target, with
# Prometheus' scrape timeout header.
write_wrk_script() {
  {
    echo 'local paths = {"/metrics", "/probe?target=main"'
    local i
    for i in $(seq "$SSH_TARGETS"); do echo ", \"/probe?target=ssh$i\""; done
    echo '}'
    cat <<'LUA'
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1], {["X-Prometheus-Scrape-Timeout-Seconds"] = "10"})
end
LUA
  } > "$WORK/paths.lua"
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
pg_sessions() { psql_ -d postgres -c "select count(*) from pg_stat_activity where usename = 'vitals_mon'" 2>/dev/null || echo -1; }
