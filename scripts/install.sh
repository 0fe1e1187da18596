#!/usr/bin/env bash
# Installs Gantry on this host and starts `gantry server` in the background.
# Also builds gVisor's runsc (scripts/build-runsc.sh) when missing.
#
#   sudo ./scripts/install.sh
#
# Installs the missing Debian packages, builds /usr/local/bin/gantry from this
# checkout, and starts the server (data in /var/lib/gantry, API on
# http://127.0.0.1:8910, log in /var/log/gantry.log). Safe to run again: a
# server that is already running is stopped and started with the new binary.
# Stopping the server does not stop running tasks: they live in containerd,
# which the new server adopts.
set -euo pipefail

cd "$(dirname "$0")/.."
. scripts/lib.sh

DATA_DIR=/var/lib/gantry
LISTEN=127.0.0.1:8910
ENDPOINT=http://$LISTEN
LOG=/var/log/gantry.log
PIDFILE=/run/gantry-server.pid
BIN=/usr/local/bin/gantry

require_root
apt_install "${GANTRY_PACKAGES[@]}"
use_go
# gVisor's runsc, which runs tasks (isolation=sandbox, the default): built once (a few
# minutes), skipped while /usr/local/bin/runsc is the pinned version.
scripts/build-runsc.sh || log "warning: could not build runsc; new clusters (isolation=sandbox, the default) will be refused until it works; clusters created with --settings name=isolation,value=container still run"

log "building $BIN"
version=$(git describe --always --dirty 2>/dev/null || echo dev)
tmp=$(mktemp /usr/local/bin/.gantry.XXXXXX)
trap 'rm -f "$tmp"' EXIT
# Static (no cgo): sandboxed tasks run this binary inside the container for
# ECS Exec terminals (`gantry exec-tty`), where the host's libraries are not.
CGO_ENABLED=0 go build -trimpath -ldflags "-X main.version=$version" -o "$tmp" ./cmd/gantry
chmod 0755 "$tmp"
# rename, not copy: the old binary may be running and cannot be overwritten.
mv -f "$tmp" "$BIN"
trap - EXIT

# server_pid prints the pid of the gantry server on our port, if any: first
# from our pid file, else whatever gantry process listens on the port (a
# server someone started by hand).
server_pid() {
	local pid
	if [ -f "$PIDFILE" ]; then
		pid=$(cat "$PIDFILE")
		if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = gantry ]; then
			echo "$pid"
			return
		fi
	fi
	ss -Hltnp "sport = :${LISTEN##*:}" 2>/dev/null | grep -o '"gantry",pid=[0-9]*' | head -n1 | cut -d= -f2 || true
}

pid=$(server_pid)
if [ -n "$pid" ]; then
	log "stopping the running gantry server (pid $pid) to start the new binary"
	kill -TERM "$pid"
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	if kill -0 "$pid" 2>/dev/null; then
		die "gantry server (pid $pid) did not stop within 20s"
	fi
fi
if ss -Hltn "sport = :${LISTEN##*:}" | grep -q .; then
	die "$LISTEN is in use by another program: $(ss -Hltnp "sport = :${LISTEN##*:}")"
fi

log "starting gantry server (log: $LOG)"
mkdir -p "$DATA_DIR"
# setsid: its own session, so closing this terminal does not stop it.
setsid nohup "$BIN" server --data-dir "$DATA_DIR" --listen "$LISTEN" >>"$LOG" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$PIDFILE"

for _ in $(seq 1 300); do
	# Any HTTP answer (even an auth error) means the API is up.
	if curl -s -o /dev/null "$ENDPOINT/"; then
		break
	fi
	if ! kill -0 "$pid" 2>/dev/null; then
		tail -n 30 "$LOG" >&2
		die "gantry server exited; see $LOG"
	fi
	sleep 0.2
done
curl -s -o /dev/null "$ENDPOINT/" || { tail -n 30 "$LOG" >&2; die "gantry server did not answer on $ENDPOINT within 60s; see $LOG"; }

cat <<EOF

Gantry $version is running (pid $pid) on $ENDPOINT; data in $DATA_DIR, log in $LOG.
Stop it with: kill \$(cat $PIDFILE)

Next, point the aws CLI and SDKs at it:

    eval "\$(gantry env)"
    aws ecs list-clusters
EOF
