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
#
# Patches of ours are applied, every scripts/runsc-*.patch in name order
# (each says why at its top and how to drop it):
#   runsc-efs-append.patch    O_APPEND writes to an EFS volume append on the
#                             host, so two sandboxes appending to one file
#                             lose no write;
#   runsc-init-signals.patch  a container's init gets only the signals it
#                             handles, as in a Linux PID namespace, so
#                             stopping a task behaves as with runc (SIGTERM
#                             to an init without a handler does nothing;
#                             SIGKILL follows after stopTimeout, 137);
#   runsc-setstat-errors.patch a chown/chmod the host refuses fails in the
#                             sandbox too, instead of reporting success
#                             (an EFS access point or root-squashed volume).
set -euo pipefail

cd "$(dirname "$0")/.."
. scripts/lib.sh

# The pinned gVisor version (a "go" branch pseudo-version on proxy.golang.org).
RUNSC_VERSION=${RUNSC_VERSION:-v0.0.0-20260905035102-160fafc42237}
RUNSC_BIN=${RUNSC_BIN:-/usr/local/bin/runsc}
STAMP=$RUNSC_BIN.version
PATCHES=("$PWD"/scripts/runsc-*.patch)
[ -f "${PATCHES[0]}" ] || die "no scripts/runsc-*.patch"
# The stamp names the patches too (one hash of them all, in order), so
# adding, changing or removing one rebuilds, and a binary built without
# them is never taken for one built with them.
WANT="$RUNSC_VERSION+$(cat "${PATCHES[@]}" | sha256sum | cut -c1-12)"

require_root
use_go

if [ -z "${RUNSC_FORCE:-}" ] && [ -x "$RUNSC_BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ]; then
	exit 0
fi

log "building runsc (gvisor.dev/gvisor@$RUNSC_VERSION) into $RUNSC_BIN; this takes a few minutes"
gobin=$(mktemp -d)
trap 'rm -rf "$gobin"' EXIT
start=$(date +%s)
# The module as published, from the proxy (outside our go.mod, so go.sum is
# untouched), copied to apply the patch; gVisor's own go.mod and go.sum pin
# its dependencies.
src=$(cd "$gobin" && GOFLAGS=-mod=mod go mod download -json "gvisor.dev/gvisor@$RUNSC_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$src" ] || die "cannot download gvisor.dev/gvisor@$RUNSC_VERSION"
cp -r "$src" "$gobin/gvisor"
chmod -R u+w "$gobin/gvisor"
command -v git >/dev/null || apt_install git || die "cannot install git (it applies scripts/runsc-*.patch)"
for patch in "${PATCHES[@]}"; do
	(cd "$gobin/gvisor" && git apply -p1 "$patch") || die "cannot apply $patch to gVisor $RUNSC_VERSION"
done
(cd "$gobin/gvisor" && CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=mod" go build -trimpath -o "$gobin/runsc" \
	-ldflags "-X gvisor.dev/gvisor/runsc/version.version=$RUNSC_VERSION+gantry" ./runsc)
tmp=$(mktemp "$(dirname "$RUNSC_BIN")/.runsc.XXXXXX")
install -m 0755 "$gobin/runsc" "$tmp"
# rename, not copy: a running sandbox may be executing the old binary.
mv -f "$tmp" "$RUNSC_BIN"
echo "$WANT" >"$STAMP"
log "runsc built in $(( $(date +%s) - start ))s: $("$RUNSC_BIN" --version 2>&1 | head -n1)"
