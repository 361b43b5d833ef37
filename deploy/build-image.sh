#!/usr/bin/env bash
# Builds the static release binary (x86_64-unknown-linux-musl, the target added with rustup
# as the build script adds wasm32-wasip2) and, where podman or buildah works, the image from
# deploy/Containerfile. The binary that ships is target/image/conduit (stripped; its debug
# info in target/image/conduit.debug). Prints where it is; the image is tagged conduit:<version>.
#
#   deploy/build-image.sh            # binary, then the image if podman/buildah can build
#   deploy/build-image.sh --binary   # the binary only
#
# A release build on 2 cores takes about 15 minutes.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target=x86_64-unknown-linux-musl
cd "$root"

if ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi
# ring (rustls' cryptography) compiles C and assembly for the target: it needs musl's C
# compiler wrapper, from Debian's musl-tools.
if ! command -v musl-gcc >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y musl-tools || { apt-get update && apt-get install -y musl-tools; }
    else
        echo "error: musl-gcc not found: install musl-tools (Debian/Ubuntu) or musl-gcc, then run this again" >&2
        exit 1
    fi
fi
CC_x86_64_unknown_linux_musl=musl-gcc \
    cargo build --release --locked --target "$target" -p conduit --bin conduit
binary="$root/target/$target/release/conduit"
# Static: no program interpreter (dynamic loader) and no shared libraries needed.
if readelf -l "$binary" | grep -q INTERP; then
    echo "error: $binary is dynamically linked" >&2
    exit 1
fi
# What ships is stripped (the release profile keeps line tables for backtraces, which makes
# the binary ~185 MB); the symbols and line tables go to conduit.debug beside it, linked by a
# debuglink, for symbolising a backtrace or a core dump later.
shipped_dir="$root/target/image"
mkdir -p "$shipped_dir"
objcopy --only-keep-debug "$binary" "$shipped_dir/conduit.debug"
objcopy --strip-all --add-gnu-debuglink="$shipped_dir/conduit.debug" "$binary" "$shipped_dir/conduit"
binary="$shipped_dir/conduit"
echo "static binary: $binary ($(du -m "$binary" | cut -f1) MB; debug info in conduit.debug)"
[ "${1:-}" = "--binary" ] && exit 0

version="$(sed -n 's/^version = "\(.*\)"/\1/p' host/Cargo.toml | head -n1)"
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/conduit"
cp deploy/Containerfile "$context/Containerfile"
if command -v podman >/dev/null && podman info >/dev/null 2>&1; then
    podman build -t "conduit:$version" -f "$context/Containerfile" "$context"
    # The image runs: the demo to VERIFIED as its non-root user, in its read-only root.
    podman run --rm --read-only --tmpfs /tmp "conduit:$version" demo --contacts 500 --events 50 --dir /var/lib/conduit/demo
elif command -v buildah >/dev/null && buildah info >/dev/null 2>&1; then
    buildah build -t "conduit:$version" -f "$context/Containerfile" "$context"
else
    echo "neither podman nor buildah works here: the image was not built (the binary is; deploy/test-chroot.sh runs it in an empty root)" >&2
    exit 0
fi
echo "image: conduit:$version"
