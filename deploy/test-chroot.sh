#!/usr/bin/env bash
# The binary runs `conduit demo` to VERIFIED inside an empty chroot holding only the binary,
# the CA certificates and a writable data directory (as the scratch image does: no /tmp,
# /proc, /dev, libc, shell or home). Needs root (chroot), or unprivileged user namespaces
# (`unshare`), in which case it runs as the namespace's root instead of the image's user.
#
#   deploy/test-chroot.sh [path/to/static/conduit]
#   deploy/test-chroot.sh --with-libs path/to/dynamic/conduit
#
# Without an argument it takes the static binary deploy/build-image.sh builds, and refuses a
# dynamically linked one: the image holds no libc. `--with-libs` copies a dynamic binary's
# loader and shared libraries (as `ldd` lists them) into the root too; the test suite uses it
# with the debug binary to check, on every run, that Conduit needs nothing else from the
# filesystem, without building the static binary (a 15-minute release build).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
with_libs=false
if [ "${1:-}" = "--with-libs" ]; then
    with_libs=true
    shift
fi
binary="${1:-$root/target/image/conduit}"
[ -x "$binary" ] || { echo "no binary at $binary: run deploy/build-image.sh --binary first" >&2; exit 1; }
dynamic=false
readelf -l "$binary" | grep -q INTERP && dynamic=true
if $dynamic && ! $with_libs; then
    echo "error: $binary is dynamically linked; it would not run in an empty root (pass --with-libs to copy its libraries in)" >&2
    exit 1
fi

jail="$(mktemp -d)"
log="$(mktemp)"
# The non-root user must be able to walk from the root down to the binary and its data.
chmod 0755 "$jail"
trap 'rm -rf "$jail" "$log"' EXIT
install -D -m 0555 "$binary" "$jail/usr/local/bin/conduit"
install -D -m 0444 /etc/ssl/certs/ca-certificates.crt "$jail/etc/ssl/certs/ca-certificates.crt"
if $dynamic; then
    # Each library at the path the loader looks for it (ldd prints `name => path (addr)` for
    # libraries and `path (addr)` for the loader itself).
    ldd "$binary" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | sort -u |
        while read -r lib; do install -D -m 0555 "$(readlink -f "$lib")" "$jail$lib"; done
fi

# As the image's non-root user where we are root; otherwise as a user namespace's root.
if [ "$(id -u)" = 0 ]; then
    install -d -m 0700 -o 65532 -g 65532 "$jail/data"
    enter=("$(command -v chroot)" --userspec=65532:65532 "$jail")
elif unshare --user --map-root-user true 2>/dev/null; then
    install -d -m 0700 "$jail/data"
    enter=("$(command -v unshare)" --user --map-root-user --root="$jail")
else
    echo "error: entering the empty root needs root (chroot) or unprivileged user namespaces (unshare)" >&2
    exit 1
fi
echo "the root holds only:"; (cd "$jail" && find . -mindepth 1 | sort)

# With an environment as empty as the image's.
set +e
env -i TMPDIR=/data "${enter[@]}" /usr/local/bin/conduit demo \
    --contacts "${CONDUIT_CHROOT_CONTACTS:-2000}" --events 100 --dir /data/demo >"$log" 2>&1
code=$?
set -e
tail -n 20 "$log"
if [ "$code" -ne 0 ] || ! grep -q "^VERIFIED:" "$log"; then
    echo "FAILED: conduit demo exited $code in the empty root" >&2
    exit 1
fi
echo "the binary ran the demo to VERIFIED in an empty root"
