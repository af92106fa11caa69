#!/usr/bin/env bash
# The production profile's services on one machine, from Debian and PyPI packages:
# PostgreSQL (Dagster's storage and MLflow's backend store) and an MLflow tracking server, both
# bound to 127.0.0.1 on free ports, with all state under $MLOPS_HOME/prod.
#
#   scripts/prod-stack.sh start [postgres|mlflow]   start (first time: install, initdb, databases)
#   scripts/prod-stack.sh stop  [postgres|mlflow]   stop; data stays
#   scripts/prod-stack.sh status                    exit 0 when both run
#   scripts/prod-stack.sh env                       print the variables (also in $MLOPS_HOME/prod/env)
#
# Then: source "$MLOPS_HOME/prod/env"   (MLOPS_ENV=prod, DAGSTER_HOME, MLFLOW_TRACKING_URI, ...)
#
# Overrides: MLOPS_LAKE_URI and MLOPS_ARTIFACTS_URI (e.g. s3://bucket/lake, s3://bucket/mlflow)
# replace the local folders; the code reads only URIs, so nothing else changes.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
MLOPS_HOME="$(realpath -m "${MLOPS_HOME:-$REPO/.mlops}")"
PROD="$MLOPS_HOME/prod"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
MLFLOW="$(dirname "$PYTHON")/mlflow"
PGDATA="$PROD/pg/data"
PG_LOG="$PROD/pg/postgres.log"
SECRETS="$PROD/secrets"
PORTS="$PROD/ports"
ENV_FILE="$PROD/env"
MLFLOW_PID="$PROD/mlflow.pid"
MLFLOW_LOG="$PROD/mlflow.log"
LAKE_URI="${MLOPS_LAKE_URI:-file://$PROD/lake}"
ARTIFACTS_URI="${MLOPS_ARTIFACTS_URI:-$PROD/artifacts}"
APP_ROLE=mlops

die() { echo "prod-stack: $*" >&2; exit 1; }
log() { echo "prod-stack: $*"; }

pg_bindir() {
  local bin
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [[ -n "$bin" && -x "$bin/initdb" ]] && echo "$bin"
}

ensure_postgres_binaries() {
  if [[ -z "$(pg_bindir)" ]]; then
    [[ "$(id -u)" == 0 ]] || die "no PostgreSQL server under /usr/lib/postgresql/*/bin; run: sudo apt-get install -y postgresql"
    log "installing the Debian postgresql package"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  fi
  PGBIN="$(pg_bindir)" || die "apt-get installed postgresql but no /usr/lib/postgresql/*/bin/initdb exists"
}

# PostgreSQL refuses to run as root: as root, the server runs as the package's system user.
as_pg() {
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_free() {
  # SO_REUSEADDR as the servers set it: connections of a just-stopped server in TIME_WAIT do not
  # block a restart on its port, a listening process still does.
  "$PYTHON" -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}

new_secret() {
  # Hex: safe unquoted in a URI, a YAML file and a shell file.
  "$PYTHON" -c 'import secrets; print(secrets.token_hex(24))'
}

load_ports() {
  if [[ ! -f "$PORTS" ]]; then
    # Chosen once: the env file, dagster.yaml and running clients keep pointing at them.
    printf 'PG_PORT=%s\nMLFLOW_PORT=%s\n' "$(free_port)" "$(free_port)" > "$PORTS"
  fi
  # shellcheck disable=SC1090
  source "$PORTS"
}

pg_running() { [[ -f "$PGDATA/postmaster.pid" ]] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }

mlflow_running() { [[ -f "$MLFLOW_PID" ]] && kill -0 "$(cat "$MLFLOW_PID")" 2>/dev/null; }

psql_admin() {
  PGPASSWORD="$(cat "$SECRETS/pg-admin-password")" "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres "$@"
}

init_postgres() {
  mkdir -p "$PROD/pg" "$SECRETS"
  chmod 700 "$SECRETS"
  [[ -f "$SECRETS/pg-admin-password" ]] || (umask 077 && new_secret > "$SECRETS/pg-admin-password")
  [[ -f "$SECRETS/pg-password" ]] || (umask 077 && new_secret > "$SECRETS/pg-password")
  if [[ "$(id -u)" == 0 ]]; then
    chown postgres: "$PROD/pg"
    as_pg test -w "$PROD/pg" || die "user postgres cannot write $PROD/pg: a parent folder of MLOPS_HOME is not traversable by others (chmod o+x it) or choose another MLOPS_HOME"
  fi
  log "initdb $PGDATA"
  local pwfile="$PROD/pg/.initdb-pw"
  (umask 077 && cp "$SECRETS/pg-admin-password" "$pwfile")
  [[ "$(id -u)" == 0 ]] && chown postgres: "$pwfile"
  as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --pwfile="$pwfile" --auth-local=scram-sha-256 \
    --auth-host=scram-sha-256 --encoding=UTF8 --no-instructions >/dev/null
  rm -f "$pwfile"
}

start_postgres() {
  ensure_postgres_binaries
  load_ports
  [[ -f "$PGDATA/PG_VERSION" ]] || init_postgres
  if pg_running; then
    log "postgres already running on 127.0.0.1:$PG_PORT"
  else
    port_free "$PG_PORT" || die "port $PG_PORT (from $PORTS) is in use by another process; stop it, or delete $PORTS to choose new ports"
    # TCP on loopback only and no Unix socket: nothing but this machine's clients can connect,
    # and no socket path depends on MLOPS_HOME's length.
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PG_LOG" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=''" start >/dev/null \
      || die "postgres did not start; see $PG_LOG"
    log "postgres on 127.0.0.1:$PG_PORT (data $PGDATA)"
  fi
  local password
  password="$(cat "$SECRETS/pg-password")"
  psql_admin <<SQL
SELECT 'CREATE ROLE $APP_ROLE LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$APP_ROLE')\gexec
ALTER ROLE $APP_ROLE PASSWORD '$password';
SELECT 'CREATE DATABASE dagster OWNER $APP_ROLE' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'dagster')\gexec
SELECT 'CREATE DATABASE mlflow OWNER $APP_ROLE' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow')\gexec
SQL
  write_config
}

write_config() {
  mkdir -p "$PROD/dagster" "$PROD/landing"
  # Dagster's instance (runs, event log, schedules) on PostgreSQL; the password stays in the
  # environment. The scheme names psycopg2 (installed with dagster-postgres): SQLAlchemy 2.1
  # maps a bare postgresql:// to psycopg 3, which is not installed. Failed runs are re-executed twice by the daemon, so a step that failed on a
  # briefly unreachable MLflow server gets another go once it is back.
  cat > "$PROD/dagster/dagster.yaml" <<YAML
# Written by scripts/prod-stack.sh: the production profile's Dagster instance.
storage:
  postgres:
    postgres_db:
      hostname: 127.0.0.1
      port: $PG_PORT
      username: $APP_ROLE
      password:
        env: DAGSTER_PG_PASSWORD
      db_name: dagster
      scheme: postgresql+psycopg2
run_retries:
  enabled: true
  max_retries: 2
concurrency:
  runs:
    max_concurrent_runs: 2
# Dagster's default looks at the run queue every 5 s, longer than a batch's scoring takes.
run_queue:
  dequeue_interval_seconds: 1
# Ends runs whose processes died: stuck starting or cancelling, past their dagster/max_runtime
# tag (or the default below), and frees the pool slots of ended runs. Runs here are local
# processes, which Dagster cannot health-check: <model>_run_watchdog_sensor ends a run whose worker
# is gone within one tick.
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_runtime_seconds: 86400
  poll_interval_seconds: 30
  free_slots_after_run_end_seconds: 60
telemetry:
  enabled: false
YAML
  local password
  password="$(cat "$SECRETS/pg-password")"
  (umask 077 && cat > "$ENV_FILE" <<ENV
# Written by scripts/prod-stack.sh: \`source\` it to use the production profile. Holds a secret.
export MLOPS_ENV=prod
export MLOPS_HOME=$MLOPS_HOME
export MLOPS_EXECUTOR=in_process
export DAGSTER_HOME=$PROD/dagster
export DAGSTER_PG_PASSWORD=$password
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
export MLOPS_LAKE_URI=$LAKE_URI
export MLOPS_LANDING_DIR=$PROD/landing
export MLOPS_REGISTRY_LOCK_URI=postgresql://$APP_ROLE:$password@127.0.0.1:$PG_PORT/mlflow
# Fail an MLflow call within seconds when the server is down (MLflow's default retries for
# about 4 minutes); the run fails with the server's address and the daemon retries the run.
export MLFLOW_HTTP_REQUEST_TIMEOUT=30
export MLFLOW_HTTP_REQUEST_MAX_RETRIES=2
export MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1
ENV
  )
}

start_mlflow() {
  ensure_postgres_binaries
  load_ports
  pg_running || die "postgres is not running; run: $0 start"
  if mlflow_running; then
    log "mlflow already running at http://127.0.0.1:$MLFLOW_PORT"
    return
  fi
  [[ -x "$MLFLOW" ]] || die "no mlflow at $MLFLOW; run make install (or set PYTHON to a Python with mlflow)"
  port_free "$MLFLOW_PORT" || die "port $MLFLOW_PORT (from $PORTS) is in use by another process; stop it, or delete $PORTS to choose new ports"
  [[ "$ARTIFACTS_URI" == *://* ]] || mkdir -p "$ARTIFACTS_URI"
  # The backend store URI holds the password: through the environment, not argv (ps shows argv).
  # +psycopg2: SQLAlchemy 2.1 defaults postgresql:// to psycopg 3, which is not installed.
  # Loopback only: this server has no authentication (see README, "Production profile").
  # No job runner: its eight huey consumers serve GenAI features this pipeline does not use.
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
  MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://$APP_ROLE:$(cat "$SECRETS/pg-password")@127.0.0.1:$PG_PORT/mlflow" \
    setsid "$MLFLOW" server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 2 \
      --serve-artifacts --artifacts-destination "$ARTIFACTS_URI" >> "$MLFLOW_LOG" 2>&1 < /dev/null &
  echo $! > "$MLFLOW_PID"
  local deadline=$((SECONDS + 180))
  until "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
      "http://127.0.0.1:$MLFLOW_PORT/health" 2>/dev/null; do
    mlflow_running || die "mlflow server exited; see $MLFLOW_LOG"
    (( SECONDS < deadline )) || die "mlflow server not healthy within 180s; see $MLFLOW_LOG"
    sleep 1
  done
  log "mlflow at http://127.0.0.1:$MLFLOW_PORT (backend postgresql mlflow, artifacts $ARTIFACTS_URI)"
}

stop_mlflow() {
  if mlflow_running; then
    local pid
    pid="$(cat "$MLFLOW_PID")"
    # setsid made it a process-group leader: the group holds its workers.
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    log "mlflow stopped"
  fi
  rm -f "$MLFLOW_PID"
}

stop_postgres() {
  PGBIN="$(pg_bindir)" || return 0
  if pg_running; then
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
    log "postgres stopped"
  fi
}

status() {
  local ok=0
  PGBIN="$(pg_bindir)" || PGBIN=/nonexistent
  [[ -f "$PORTS" ]] && source "$PORTS"
  if [[ -d "$PGDATA" ]] && pg_running; then log "postgres: running on 127.0.0.1:${PG_PORT:-?}"; else log "postgres: stopped"; ok=3; fi
  if mlflow_running; then log "mlflow: running at http://127.0.0.1:${MLFLOW_PORT:-?}"; else log "mlflow: stopped"; ok=3; fi
  log "env file: $ENV_FILE"
  return $ok
}

mkdir -p "$PROD"
case "${1:-}:${2:-}" in
  start:) start_postgres; start_mlflow; log "ready: source $ENV_FILE" ;;
  start:postgres) start_postgres ;;
  start:mlflow) start_mlflow ;;
  stop:) stop_mlflow; stop_postgres ;;
  stop:mlflow) stop_mlflow ;;
  stop:postgres) stop_mlflow; stop_postgres ;;
  status:) status ;;
  env:) [[ -f "$ENV_FILE" ]] || die "no $ENV_FILE yet; run: $0 start"; cat "$ENV_FILE" ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
