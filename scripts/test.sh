#!/usr/bin/env bash
# Installs what the tests need and runs Gantry's whole test suite.
#
#   ./scripts/test.sh                       # go vet + every test
#   ./scripts/test.sh -run TestSigV4 ./test # only some tests (go test args)
#
# The integration tests start real servers, containerd and containers, so
# they run as root and one package at a time (-p 1). The state tests also run
# against PostgreSQL: a throwaway cluster is started for them unless
# GANTRY_TEST_POSTGRES already names one. Exits with the tests' status.
set -uo pipefail

cd "$(dirname "$0")/.."
. scripts/lib.sh

require_root
apt_install "${GANTRY_PACKAGES[@]}" "${GANTRY_TEST_PACKAGES[@]}" postgresql python3 || die "package installation failed"
use_go
# The sandbox isolation tests run tasks in gVisor: build runsc once (skipped
# while /usr/local/bin/runsc is the pinned version).
scripts/build-runsc.sh || die "could not build gVisor's runsc (scripts/build-runsc.sh)"
scripts/build-session-manager-plugin.sh || die "could not build session-manager-plugin (scripts/build-session-manager-plugin.sh)"
# Registry clients the image tests push and pull with besides skopeo:
# podman (Debian's) and crane (go-containerregistry's, at go.mod's version).
apt_install podman || die "could not install podman"
crane_version=$(go list -m -f '{{.Version}}' github.com/google/go-containerregistry) || die "go list failed"
if ! crane version 2>/dev/null | grep -qx "$crane_version"; then
	GOBIN=/usr/local/bin go install "github.com/google/go-containerregistry/cmd/crane@$crane_version" || die "could not install crane"
fi

# Our clients: the aws CLI v1 (>= 1.29, which honours AWS_ENDPOINT_URL) and
# boto3. Installed only when missing; Debian's awscli is the fallback.
if ! command -v aws >/dev/null || ! python3 -c 'import boto3' 2>/dev/null; then
	log "aws CLI or boto3 missing: installing Debian's awscli and python3-boto3"
	apt_install awscli python3-boto3 || die "could not install awscli/boto3"
fi
log "$(aws --version 2>&1)"
# `aws logs tail` exists only in CLI v2. Debian's awscli package is v2 and
# installs /usr/bin/aws, which the logs tail test calls by that path; the
# v1 CLI above stays first in PATH for everything else.
if ! /usr/bin/aws --version 2>&1 | grep -q '^aws-cli/2\.'; then
	apt_install awscli || die "could not install Debian's awscli (CLI v2, for aws logs tail)"
fi

if [ -z "${GANTRY_TEST_POSTGRES:-}" ]; then
	GANTRY_TEST_POSTGRES=$(scripts/test-postgres.sh) || die "could not start PostgreSQL for the state tests"
fi
export GANTRY_TEST_POSTGRES
log "PostgreSQL for the state tests: $GANTRY_TEST_POSTGRES"

status=0
if [ $# -eq 0 ]; then
	log "go vet ./..."
	go vet ./... || status=1
	set -- ./...
fi
log "go test $*"
go test -count=1 -timeout 120m -p 1 "$@" || status=1
if [ $status -ne 0 ]; then
	log "FAILED"
else
	log "all passed"
fi
exit $status
