#!/usr/bin/env bash
# Build the operator image from the repository's Dockerfile with buildah (no Docker engine).
#
#   scripts/build-image.sh                    # FROM python:3.11-slim (needs a reachable registry)
#   scripts/build-image.sh --local-base       # FROM a Debian bookworm base built here from Debian's
#                                             # packages (debootstrap): what the tests use
#   scripts/build-image.sh --tag registry.example.com/platform/kms-storage-migrator:0.1.0
#   scripts/build-image.sh --base-image python:3.11-slim@sha256:<digest>
#
# Installs buildah, podman, runc and debootstrap from Debian's packages when they are missing
# (as root). An image whose inputs (Dockerfile, sources, base image, build arguments) have not
# changed since the last build is reused, not rebuilt; --force rebuilds it. The last line
# printed is "image <name> <id> <size in bytes>".
#
# Images live in the containers storage of this user with the vfs driver (overlay needs kernel
# features these VMs do not always offer); run podman with the same `--storage-driver vfs`.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEFAULT_TAG="localhost/kms-storage-migrator:dev"
LOCAL_BASE="localhost/kms-storage-migrator-base:bookworm"
DEBIAN_SUITE="bookworm"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# What the local base holds beyond debootstrap's minbase: Debian's Python 3.11 with venv (and
# its bundled pip wheel), which the Dockerfile's builder stage needs to make the virtualenv.
LOCAL_BASE_PACKAGES="python3.11,python3-venv"
STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}"
export STORAGE_DRIVER
# Labels the build puts on the image so a later run can tell whether its inputs changed.
DIGEST_LABEL="io.kms-storage-migrator.inputs-digest"

tag="$DEFAULT_TAG"
base_image=""
use_local_base=0
force=0
usage() {
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --local-base) use_local_base=1 ;;
        --base-image) base_image="${2:?--base-image needs an image name}"; shift ;;
        --tag) tag="${2:?--tag needs an image name}"; shift ;;
        --force) force=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "build-image.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [[ $use_local_base == 1 && -n $base_image ]]; then
    echo "build-image.sh: --local-base and --base-image exclude each other: choose one" >&2
    exit 2
fi

log() { echo "build-image.sh: $*" >&2; }

ensure_tools() {
    local missing=()
    command -v buildah >/dev/null || missing+=(buildah)
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || missing+=(runc)
    if [[ $use_local_base == 1 ]]; then
        command -v debootstrap >/dev/null || missing+=(debootstrap)
    fi
    [[ ${#missing[@]} -eq 0 ]] && return
    if [[ $(id -u) != 0 ]]; then
        log "missing ${missing[*]}: install them (apt-get install ${missing[*]}) or run this as root"
        exit 1
    fi
    log "installing ${missing[*]} from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

buildah_() { nice -n 10 buildah --storage-driver "$STORAGE_DRIVER" "$@"; }

image_exists() { buildah_ inspect --type image "$1" >/dev/null 2>&1; }

# A Debian bookworm root filesystem made with debootstrap, committed as a local image: the
# stand-in for python:3.11-slim where no registry is reachable. Built once, then reused.
ensure_local_base() {
    if image_exists "$LOCAL_BASE"; then
        log "reusing the local base image $LOCAL_BASE"
        return
    fi
    local started rootfs container
    started=$(date +%s)
    rootfs=$(mktemp -d /var/tmp/kms-storage-migrator-rootfs.XXXXXX)
    # shellcheck disable=SC2064  # expand now: the path is fixed
    trap "rm -rf '$rootfs'" RETURN
    log "building the local base image $LOCAL_BASE with debootstrap ($DEBIAN_SUITE, $DEBIAN_MIRROR)"
    nice -n 10 debootstrap --variant=minbase --include="$LOCAL_BASE_PACKAGES" \
        "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1 || {
        tail -n 30 "$rootfs.log" >&2
        log "debootstrap failed (full log: $rootfs.log)"
        exit 1
    }
    # What debootstrap leaves that an image does not need: downloaded .debs and apt's lists.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    container=$(buildah_ from scratch)
    buildah_ copy --quiet "$container" "$rootfs" / >/dev/null
    buildah_ config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd /bin/bash "$container"
    buildah_ commit --quiet --rm "$container" "$LOCAL_BASE" >/dev/null
    rm -f "$rootfs.log"
    log "built $LOCAL_BASE in $(($(date +%s) - started)) s"
}

# The build context as .dockerignore lets it through: pyproject.toml, README.md, operator/
# without bytecode or egg-info. Its digest, with the Dockerfile's and the base image's, keys
# the cache.
inputs_digest() {
    local base_id="$1"
    {
        echo "base $base_id"
        echo "uid/gid defaults are in the Dockerfile"
        sha256sum "$REPO/Dockerfile" "$REPO/.dockerignore" "$REPO/pyproject.toml" "$REPO/README.md"
        (cd "$REPO" && find operator -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
            ! -path '*.egg-info/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    } | sed "s#$REPO/##" | sha256sum | cut -d' ' -f1
}

main() {
    ensure_tools
    local build_args=()
    if [[ $use_local_base == 1 ]]; then
        ensure_local_base
        base_image="$LOCAL_BASE"
    fi
    local base_id="${base_image:-default}"
    if [[ -n $base_image ]]; then
        build_args+=(--build-arg "PYTHON_IMAGE=$base_image")
        if image_exists "$base_image"; then
            base_id=$(buildah_ inspect --type image --format '{{.FromImageID}}' "$base_image")
        fi
    fi
    local digest
    digest=$(inputs_digest "$base_id")
    if [[ $force == 0 ]] && image_exists "$tag" &&
        [[ $(buildah_ inspect --type image --format "{{index .OCIv1.Config.Labels \"$DIGEST_LABEL\"}}" "$tag") == "$digest" ]]; then
        log "reusing $tag: its inputs are unchanged"
    else
        local started previous=""
        started=$(date +%s)
        if image_exists "$tag"; then
            previous=$(buildah_ inspect --type image --format '{{.FromImageID}}' "$tag")
        fi
        log "building $tag${base_image:+ from $base_image}"
        # The host's CA bundle is lent to pip as a build secret: behind a TLS-inspecting proxy
        # the base image's own bundle would not trust PyPI. It never lands in a layer.
        local secrets=()
        if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
            secrets+=(--secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt)
        fi
        # Docker's image format: the OCI format has no SHELL, and buildah would then run the
        # Dockerfile's pipes without pipefail.
        buildah_ build --quiet --layers --isolation chroot --format docker \
            --file "$REPO/Dockerfile" --tag "$tag" \
            --label "$DIGEST_LABEL=$digest" \
            "${build_args[@]}" "${secrets[@]}" "$REPO" >/dev/null
        log "built $tag in $(($(date +%s) - started)) s"
        # vfs keeps a full copy of every image: drop the one this build replaced (the layer
        # cache stays, so the next build of a small change is still quick).
        if [[ -n $previous && $previous != $(buildah_ inspect --type image --format '{{.FromImageID}}' "$tag") ]]; then
            buildah_ rmi "$previous" >/dev/null 2>&1 || true
        fi
    fi
    local id size
    id=$(buildah_ inspect --type image --format '{{.FromImageID}}' "$tag")
    size=$(podman --storage-driver "$STORAGE_DRIVER" image inspect --format '{{.Size}}' "$tag")
    log "$tag: $((size / 1000000)) MB (uncompressed)"
    echo "image $tag $id $size"
}

main
