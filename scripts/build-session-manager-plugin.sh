#!/usr/bin/env bash
# Builds AWS's session-manager-plugin, the client `aws ecs execute-command`
# runs, from the Go module proxy and installs it as
# /usr/local/bin/session-manager-plugin, for the ECS Exec tests
# (test/exec_ssm_test.go). Skips the build when that binary is already the
# pinned version, so test.sh can call it on every run.
#
#   sudo ./scripts/build-session-manager-plugin.sh          # build if missing or outdated
#   SMP_FORCE=1 ./scripts/build-session-manager-plugin.sh   # rebuild anyway
#
# The plugin's repository has no usable go.mod at its root (its packages
# import github.com/aws/session-manager-plugin/src/...), so the module zip's
# src/ is built in a scratch directory with a go.mod of our own. Nothing of
# the plugin is copied into this repository.
set -euo pipefail

cd "$(dirname "$0")/.."
. scripts/lib.sh

# The pinned plugin version (a pseudo-version on proxy.golang.org).
SMP_VERSION=${SMP_VERSION:-v0.0.0-20260401221635-b79d06c1d3a2}
# twinj/uuid's later releases break the plugin's build; the plugin was
# written against this commit.
UUID_VERSION=v0.0.0-20151029044442-89173bcdda19
SMP_BIN=${SMP_BIN:-/usr/local/bin/session-manager-plugin}
STAMP=$SMP_BIN.version

require_root
use_go

if [ -z "${SMP_FORCE:-}" ] && [ -x "$SMP_BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$SMP_VERSION" ]; then
	exit 0
fi

log "building session-manager-plugin (github.com/aws/session-manager-plugin@$SMP_VERSION) into $SMP_BIN"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dir=$(cd "$work" && go mod download -json "github.com/aws/session-manager-plugin@$SMP_VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$dir" ] && [ -d "$dir/src" ] || die "go mod download did not extract the plugin's module"
mkdir "$work/build"
cp -r "$dir/src" "$work/build/src"
chmod -R u+w "$work/build"
cd "$work/build"
printf 'module github.com/aws/session-manager-plugin\n\ngo 1.21\n\nrequire github.com/twinj/uuid %s\n' "$UUID_VERSION" >go.mod
# -e: the plugin's tests import packages the proxy does not serve; the
# plugin itself needs none of them.
GOFLAGS=-mod=mod go mod tidy -e
GOFLAGS=-mod=mod go get "github.com/twinj/uuid@$UUID_VERSION"
GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o "$work/session-manager-plugin" ./src/sessionmanagerplugin-main
install -m 0755 "$work/session-manager-plugin" "$SMP_BIN"
echo "$SMP_VERSION" >"$STAMP"
log "installed $SMP_BIN"
