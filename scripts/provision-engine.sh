#!/usr/bin/env bash
# Installs and starts what the build and the container tests need on a bare Debian 12 host
# (root, no engine, only the Debian mirror reachable):
#   - a modern Docker engine (sid's dockerd/containerd/buildx unpacked into a private prefix,
#     Debian 12's runc) with the containerd image store,
#   - a loopback-only OCI registry,
#   - arm64 emulation (qemu-user-static + binfmt_misc),
#   - debootstrap, which creates upstream images that cannot be pulled,
#   - with --test-tools: what the tests need besides the engine (Debian's chromium and
#     chromium-driver for the portal's browser test, aria2 for the launcher's download tests).
# With --empty-registry (invoke clean) it only empties the loopback registry it started.
# Every part is checked first and left alone when it already works, so a host that has an
# engine is not touched. Re-running is safe.
set -euo pipefail

PREFIX="${LLAMA_IMAGES_ENGINE_PREFIX:-/opt/llama-images-engine}"
REGISTRY_ADDR="${LLAMA_IMAGES_REGISTRY:-127.0.0.1:5000}"
STATE_DIR="${LLAMA_IMAGES_STATE_DIR:-/var/lib/llama-images}"
LOG_DIR="${LLAMA_IMAGES_LOG_DIR:-/var/log/llama-images}"
SID_PACKAGES=(docker.io containerd tini-static docker-buildx)
HOST_PACKAGES=(runc iptables debootstrap qemu-user-static binfmt-support docker-registry ca-certificates)
TEST_PACKAGES=(chromium chromium-driver aria2)

log() { printf 'engine: %s\n' "$*" >&2; }
die() { printf 'engine: error: %s\n' "$*" >&2; exit 1; }

engine_ready() { docker info >/dev/null 2>&1; }
buildx_ready() { docker buildx version >/dev/null 2>&1; }
registry_ready() { curl -fsS --max-time 2 "http://${REGISTRY_ADDR}/v2/" >/dev/null 2>&1; }
arm64_ready() { [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; }

# wait_until CHECK SECONDS WHAT LOG: poll CHECK once a second until it succeeds.
wait_until() {
    local check=$1 seconds=$2 what=$3 logfile=$4 waited=0
    until "$check"; do
        sleep 1
        waited=$((waited + 1))
        [ "$waited" -lt "$seconds" ] || die "$what did not answer within $seconds s; see $logfile"
    done
}

require_root() {
    [ "$(id -u)" -eq 0 ] || die "$1 needs root (run as root, or start a Docker engine yourself)"
}

mirror_uri() {
    # The host's own Debian mirror, so the sid packages come from the same place as the rest.
    local uri
    uri=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
    if [ -z "$uri" ]; then
        uri=$(sed -n 's/^deb[[:space:]]\+\(http[^[:space:]]*\).*/\1/p' /etc/apt/sources.list 2>/dev/null | head -n 1)
    fi
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

# The packages among the arguments that are not installed, one per line.
missing_packages() {
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || printf '%s\n' "$pkg"
    done
}

install_packages() {
    local missing=()
    mapfile -t missing < <(missing_packages "$@")
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# sid's engine packages run on Debian 12 (they need GLIBC_2.34 only) but must not enter the
# host's apt sources: apt would then want to upgrade libc. They are unpacked into PREFIX.
unpack_sid_engine() {
    [ -x "$PREFIX/bin/dockerd" ] && [ -x "$PREFIX/bin/docker-buildx" ] && return 0
    local apt_dir="$PREFIX/apt" unpack_dir="$PREFIX/root" deb
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs" "$unpack_dir" "$PREFIX/bin"
    printf 'deb %s sid main\n' "$(mirror_uri)" >"$apt_dir/sources.list"
    local apt_opts=(
        -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
        -o Acquire::Check-Valid-Until=false -o APT::Get::List-Cleanup=false
    )
    log "fetching sid packages: ${SID_PACKAGES[*]}"
    apt-get "${apt_opts[@]}" update -qq
    (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" download "${SID_PACKAGES[@]}" >/dev/null)
    for deb in "$apt_dir"/debs/*.deb; do
        dpkg -x "$deb" "$unpack_dir"
    done
    local bin
    for bin in dockerd docker-proxy containerd containerd-shim-runc-v2 ctr; do
        if [ -x "$unpack_dir/usr/bin/$bin" ]; then ln -sf "$unpack_dir/usr/bin/$bin" "$PREFIX/bin/$bin"; fi
        if [ -x "$unpack_dir/usr/sbin/$bin" ]; then ln -sf "$unpack_dir/usr/sbin/$bin" "$PREFIX/bin/$bin"; fi
    done
    ln -sf "$unpack_dir/usr/bin/tini-static" "$PREFIX/bin/docker-init"
    ln -sf "$unpack_dir/usr/libexec/docker/cli-plugins/docker-buildx" "$PREFIX/bin/docker-buildx"
    [ -x "$PREFIX/bin/dockerd" ] || die "sid's docker.io did not provide dockerd"
}

install_buildx_plugin() {
    buildx_ready && return 0
    mkdir -p /usr/local/lib/docker/cli-plugins
    ln -sf "$PREFIX/bin/docker-buildx" /usr/local/lib/docker/cli-plugins/docker-buildx
    buildx_ready || die "docker buildx does not run from $PREFIX/bin/docker-buildx"
}

# A daemon killed without cleanup (a session's processes end that way before CI) leaves its pid
# file; once that pid is gone, a zombie, or reused, dockerd would refuse to start.
remove_stale_pidfile() {
    local file=$1 pid state
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    state=$(ps -o stat= -p "$pid" 2>/dev/null || true)
    if [ -z "$state" ] || [[ $state == Z* ]] || ! grep -qE '^(dockerd|containerd)$' "/proc/$pid/comm" 2>/dev/null; then
        log "removing stale $file (pid $pid is not a running daemon)"
        rm -f "$file"
    fi
}

start_engine() {
    mkdir -p /etc/docker "$LOG_DIR"
    if [ ! -f /etc/docker/daemon.json ]; then
        # The containerd image store gives the default builder multi-platform builds,
        # attestations and --load of image indexes.
        printf '{"features": {"containerd-snapshotter": true}}\n' >/etc/docker/daemon.json
    fi
    remove_stale_pidfile /var/run/docker.pid
    remove_stale_pidfile /var/run/docker/containerd/containerd.pid
    log "starting dockerd (log: $LOG_DIR/dockerd.log)"
    PATH="$PREFIX/bin:$PATH" nohup dockerd >"$LOG_DIR/dockerd.log" 2>&1 </dev/null &
    wait_until engine_ready 60 "dockerd" "$LOG_DIR/dockerd.log"
}

start_registry() {
    mkdir -p "$STATE_DIR/registry" "$LOG_DIR"
    cat >"$STATE_DIR/registry.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STATE_DIR/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
YAML
    log "starting the loopback registry at $REGISTRY_ADDR"
    nohup docker-registry serve "$STATE_DIR/registry.yml" >"$LOG_DIR/registry.log" 2>&1 </dev/null &
    wait_until registry_ready 30 "the registry" "$LOG_DIR/registry.log"
}

enable_arm64_emulation() {
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    # binfmt-support registers qemu at install time only where it can; do it explicitly.
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || update-binfmts --import qemu-aarch64 >/dev/null 2>&1 || true
    arm64_ready || die "qemu-aarch64 is not registered in binfmt_misc"
}

# Our own engine: its dockerd runs from PREFIX. Any other engine belongs to the host's owner.
engine_is_ours() {
    local pid
    pid=$(pgrep -x dockerd | head -n 1) || return 1
    [[ $(readlink -f "/proc/$pid/exe" 2>/dev/null) == "$(readlink -f "$PREFIX")"/* ]]
}

install_test_tools() {
    local missing=()
    mapfile -t missing < <(missing_packages "${TEST_PACKAGES[@]}")
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        log "the tests need ${missing[*]}: install them (apt-get install ${missing[*]}); those tests skip until then"
        return 0
    fi
    install_packages "${missing[@]}"
}

# The loopback registry this script started (its config file is ours) is emptied by stopping it,
# removing its storage and starting it again: each test run pushes to new namespaces there.
empty_registry() {
    local pid
    if ! pid=$(pgrep -f "^docker-registry serve $STATE_DIR/registry.yml\$" | head -n 1) || [ -z "$pid" ]; then
        log "the registry at $REGISTRY_ADDR was not started by this script; left as it is"
        return 0
    fi
    require_root "emptying the loopback registry"
    kill "$pid"
    registry_stopped() { ! registry_ready && ! pgrep -f "^docker-registry serve $STATE_DIR/registry.yml\$" >/dev/null; }
    wait_until registry_stopped 30 "the registry's stop" "$LOG_DIR/registry.log"
    log "emptying the loopback registry ($(du -sh "$STATE_DIR/registry" 2>/dev/null | cut -f1) in $STATE_DIR/registry)"
    rm -rf "$STATE_DIR/registry"
    start_registry
}

main() {
    case "${1:-}" in
        --test-tools) install_test_tools ;;
        --empty-registry) empty_registry; return 0 ;;
        "") ;;
        *) die "unknown option $1 (known: --test-tools, --empty-registry)" ;;
    esac
    if engine_ready && buildx_ready && ! engine_is_ours; then
        local missing=()
        registry_ready || missing+=("no registry at $REGISTRY_ADDR")
        arm64_ready || missing+=("no arm64 emulation")
        log "a Docker engine with buildx already runs here; leaving this host as it is${missing[*]:+ (${missing[*]})}"
        return 0
    fi
    if engine_ready && buildx_ready && registry_ready && arm64_ready; then
        log "engine, buildx, registry and arm64 emulation already work; nothing to do"
        return 0
    fi
    require_root "setting up the engine"
    install_packages "${HOST_PACKAGES[@]}"
    if ! engine_ready; then
        unpack_sid_engine
        start_engine
    fi
    if ! buildx_ready; then
        unpack_sid_engine
        install_buildx_plugin
    fi
    registry_ready || start_registry
    arm64_ready || enable_arm64_emulation
    log "ready: $(docker version --format 'engine {{.Server.Version}}'), $(docker buildx version), registry $REGISTRY_ADDR, arm64 emulation"
}

main "$@"
