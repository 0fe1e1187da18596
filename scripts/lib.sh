# Shared by install.sh and test.sh (sourced, not run).

# The runtime Gantry needs on the host: containerd and runc run the
# containers, the CNI plugins and nftables give tasks their awsvpc network,
# busybox-static and tini are copied into task sandboxes, curl is how the
# walkthrough reaches a task, e2fsprogs makes each task's ephemeral storage.
GANTRY_PACKAGES=(containerd runc containernetworking-plugins nftables iproute2 busybox-static tini ca-certificates curl e2fsprogs)

# What only the tests need: skopeo pushes to and pulls from the registry.
GANTRY_TEST_PACKAGES=(skopeo)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

require_root() {
	[ "$(id -u)" = 0 ] || die "run as root (sudo $0): Gantry installs packages and runs containers"
}

# apt_install installs the packages that are not installed yet; apt-get update
# runs only when something is missing, so a second run is quick and offline.
apt_install() {
	local missing=() p
	for p in "$@"; do
		if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
			missing+=("$p")
		fi
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# use_go puts the preinstalled toolchain on PATH; we never download one.
use_go() {
	if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
		export PATH=/usr/local/go/bin:$PATH
	fi
	command -v go >/dev/null || die "Go is not installed (expected /usr/local/go/bin/go)"
}
