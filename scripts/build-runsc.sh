#!/usr/bin/env bash
# Builds gVisor's runsc (the sandbox runtime for clusters with
# isolation=sandbox) from the Go module proxy and installs it as
# /usr/local/bin/runsc. Skips the build when that binary is already the
# pinned version, so install.sh and test.sh can call it on every run.
#
#   sudo ./scripts/build-runsc.sh          # build if missing or outdated
#   RUNSC_FORCE=1 ./scripts/build-runsc.sh # rebuild anyway
#
# gVisor publishes its Go source on the "go" branch; the module proxy serves
# it as pseudo-versions of gvisor.dev/gvisor. runsc builds with CGO disabled.
# Takes several minutes on two cores the first time (see docs/architecture.md).
set -euo pipefail

cd "$(dirname "$0")/.."
. scripts/lib.sh

# The pinned gVisor version (a "go" branch pseudo-version on proxy.golang.org).
RUNSC_VERSION=${RUNSC_VERSION:-v0.0.0-20260905035102-160fafc42237}
RUNSC_BIN=${RUNSC_BIN:-/usr/local/bin/runsc}
STAMP=$RUNSC_BIN.version

require_root
use_go

if [ -z "${RUNSC_FORCE:-}" ] && [ -x "$RUNSC_BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$RUNSC_VERSION" ]; then
	exit 0
fi

log "building runsc (gvisor.dev/gvisor@$RUNSC_VERSION) into $RUNSC_BIN; this takes a few minutes"
gobin=$(mktemp -d)
trap 'rm -rf "$gobin"' EXIT
start=$(date +%s)
# go install pkg@version builds the module as published, outside our go.mod.
GOBIN=$gobin CGO_ENABLED=0 GOFLAGS=-buildvcs=false go install -trimpath -ldflags "-X gvisor.dev/gvisor/runsc/version.version=$RUNSC_VERSION" "gvisor.dev/gvisor/runsc@$RUNSC_VERSION"
tmp=$(mktemp "$(dirname "$RUNSC_BIN")/.runsc.XXXXXX")
install -m 0755 "$gobin/runsc" "$tmp"
# rename, not copy: a running sandbox may be executing the old binary.
mv -f "$tmp" "$RUNSC_BIN"
echo "$RUNSC_VERSION" >"$STAMP"
log "runsc built in $(( $(date +%s) - start ))s: $("$RUNSC_BIN" --version 2>&1 | head -n1)"
