#!/usr/bin/env bash
# Runs a command with a private Redis server, for the fleet tests and example:
#
#   scripts/with-redis.sh cargo test --workspace --all-features
#   scripts/with-redis.sh cargo run -p resilience-examples --example fleet
#
# Installs redis-server with apt-get when it is missing (needs root or sudo),
# starts one on a free port in a temporary directory (no persistence), waits until
# it answers, exports
#
#   RESILIENCE_TEST_REDIS_URL   redis://127.0.0.1:<port>/
#   RESILIENCE_TEST_REDIS_PORT  <port>
#   REDIS_SERVER_BIN            the redis-server binary (tests start their own too)
#
# runs the command, stops the server on exit, and exits with the command's status.
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 <command> [args...]" >&2
  exit 2
fi

log() { echo "with-redis: $*" >&2; }

install_redis() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo="sudo -n"
    else
      log "redis-server is not installed, and installing it needs root (or sudo without a password)."
      log "Install it yourself (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) and rerun."
      exit 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    log "redis-server is not installed and apt-get is not available: install redis-server and rerun."
    exit 1
  fi
  log "installing redis-server with apt-get"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >&2
}

if ! command -v redis-server >/dev/null 2>&1; then
  install_redis
fi
REDIS_SERVER_BIN="$(command -v redis-server)"

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
  else
    local p
    while :; do
      p=$((20000 + RANDOM % 40000))
      if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        echo "$p"
        return
      fi
    done
  fi
}

ping_redis() {
  local port="$1"
  if command -v redis-cli >/dev/null 2>&1; then
    [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = "PONG" ]
  else
    # Plain bash: send PING, expect +PONG.
    local reply
    exec 3<>"/dev/tcp/127.0.0.1/$port" 2>/dev/null || return 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 1 reply <&3 || true
    exec 3<&- 3>&-
    [ "${reply%$'\r'}" = "+PONG" ]
  fi
}

DIR="$(mktemp -d "${TMPDIR:-/tmp}/with-redis.XXXXXX")"
PID=""
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill "$PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$PID" 2>/dev/null || true
  fi
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started=""
for _attempt in 1 2 3; do
  PORT="$(free_port)"
  (cd "$DIR" && exec "$REDIS_SERVER_BIN" --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize no --dir "$DIR" >"$DIR/redis.log" 2>&1) &
  PID=$!
  for _ in $(seq 1 100); do
    if ping_redis "$PORT"; then
      started=1
      break
    fi
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.05
  done
  [ -n "$started" ] && break
  log "redis-server did not start on port $PORT; retrying"
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=""
done
if [ -z "$started" ]; then
  log "could not start redis-server; its log:"
  cat "$DIR/redis.log" >&2 || true
  exit 1
fi
log "redis-server $("$REDIS_SERVER_BIN" --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on 127.0.0.1:$PORT"

export RESILIENCE_TEST_REDIS_URL="redis://127.0.0.1:$PORT/"
export RESILIENCE_TEST_REDIS_PORT="$PORT"
export REDIS_SERVER_BIN

status=0
"$@" || status=$?
exit "$status"
