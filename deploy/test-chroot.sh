#!/usr/bin/env bash
# The static binary runs `conduit demo` to VERIFIED inside an empty chroot holding only the
# binary, the CA certificates and a writable data directory (as the scratch image does; no
# /tmp, /proc, /dev, libc or shell). Needs root (chroot); the binary defaults to the one
# deploy/build-image.sh builds.
#
#   sudo deploy/test-chroot.sh [path/to/static/conduit]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
binary="${1:-$root/target/x86_64-unknown-linux-musl/release/conduit}"
[ -x "$binary" ] || { echo "no binary at $binary: run deploy/build-image.sh --binary first" >&2; exit 1; }
if readelf -l "$binary" | grep -q INTERP; then
    echo "error: $binary is dynamically linked; it would not run in an empty root" >&2
    exit 1
fi
[ "$(id -u)" = 0 ] || { echo "chroot needs root" >&2; exit 1; }

jail="$(mktemp -d)"
log="$(mktemp)"
# The non-root user must be able to walk from the root down to the binary and its data.
chmod 0755 "$jail"
trap 'rm -rf "$jail" "$log"' EXIT
install -D -m 0555 "$binary" "$jail/usr/local/bin/conduit"
install -D -m 0444 /etc/ssl/certs/ca-certificates.crt "$jail/etc/ssl/certs/ca-certificates.crt"
install -d -m 0700 -o 65532 -g 65532 "$jail/data"
echo "the root holds only:"; (cd "$jail" && find . -mindepth 1 | sort)

# As the image's non-root user, with an environment as empty as the image's.
set +e
env -i TMPDIR=/data chroot --userspec=65532:65532 "$jail" /usr/local/bin/conduit demo \
    --contacts "${CONDUIT_CHROOT_CONTACTS:-2000}" --events 100 --dir /data/demo >"$log" 2>&1
code=$?
set -e
tail -n 20 "$log"
if [ "$code" -ne 0 ] || ! grep -q "^VERIFIED:" "$log"; then
    echo "FAILED: conduit demo exited $code in the empty root" >&2
    exit 1
fi
echo "the static binary ran the demo to VERIFIED in an empty root"
