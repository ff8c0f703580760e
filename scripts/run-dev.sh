#!/usr/bin/env bash
# Start the Celery worker (with its beat scheduler) and the web server; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBUG="${DEBUG:-1}"
# runserver serves each request on a new thread, and a persistent connection belongs to its
# thread: with CONN_MAX_AGE > 0 every request left one open until PostgreSQL ran out.
export CONN_MAX_AGE="${CONN_MAX_AGE:-0}"
PORT="${PORT:-8000}"
VAR_DIR="${CRM_VAR_DIR:-var}"
mkdir -p "$VAR_DIR/log"

if (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null; then
  echo "Port ${PORT} is already in use (another CRM Hub?): stop it, or pick another with PORT=8001 make run" >&2
  exit 1
fi

# In a session of its own: a closed terminal's SIGHUP made Celery restart itself (a new process this
# script no longer knew) instead of stopping; it stops when this script tells it to.
.venv/bin/python -c 'import os, sys; os.setsid(); os.execv(sys.argv[1], sys.argv[1:])' \
  .venv/bin/celery -A crm_hub worker --beat --loglevel=INFO --concurrency=2 \
  --schedule "$VAR_DIR/celerybeat-schedule" >"$VAR_DIR/log/worker.log" 2>&1 &
WORKER_PID=$!
ANNOUNCE_PID=""
WEB_PID=""

stop() {
  trap - EXIT INT TERM HUP
  kill "$ANNOUNCE_PID" 2>/dev/null || true
  echo
  echo "Stopping the web server and the Celery worker..."
  if [ -n "$WEB_PID" ]; then
    # runserver's autoreloader serves from a child process: stop it, then the parent.
    pkill -TERM -P "$WEB_PID" 2>/dev/null || true
    kill -TERM "$WEB_PID" 2>/dev/null || true
  fi
  kill -TERM "$WORKER_PID" 2>/dev/null || true
  # A warm shutdown finishes running tasks; don't let a stuck one hold the terminal.
  for _ in $(seq 30); do
    kill -0 "$WORKER_PID" 2>/dev/null || break
    sleep 0.5
  done
  kill -KILL "$WORKER_PID" 2>/dev/null || true
  wait "$WORKER_PID" 2>/dev/null || true
}
# TERM and HUP too: started without a terminal (nohup, a script), Ctrl-C is not how it is stopped.
trap stop EXIT
trap 'stop; exit 0' INT TERM HUP  # asked to stop: a clean exit, not "Error 143" from make

sleep 1
if ! kill -0 "$WORKER_PID" 2>/dev/null; then
  echo "The Celery worker did not start; see $VAR_DIR/log/worker.log" >&2
  exit 1
fi

# The banner waits until the web server answers, so the URL it prints works when it appears.
announce() {
  for _ in $(seq 240); do
    if (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null; then
      break
    fi
    sleep 0.25
  done
  cat <<BANNER

  CRM Hub is running at  http://127.0.0.1:${PORT}/
  Django admin:          http://127.0.0.1:${PORT}/admin/
  Logins:                admin / crmhub-admin   (admin)
                         sales / crmhub-sales   (sales user)
  Celery worker + beat:  pid ${WORKER_PID}, log in ${VAR_DIR}/log/worker.log
  Press Ctrl-C to stop both (or: kill $$).

BANNER
}
announce &
ANNOUNCE_PID=$!

# In the background, waited for: bash runs a trap only between commands, so with runserver in the
# foreground a `kill` of this script waited until runserver exited by itself (never).
.venv/bin/python manage.py runserver "127.0.0.1:${PORT}" &
WEB_PID=$!
wait "$WEB_PID"
