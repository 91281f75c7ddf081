#!/usr/bin/env bash
# Builds portcullis_<version>_<arch>.deb with dpkg-deb alone (no debhelper,
# no cargo-deb: dpkg-deb is on every Debian machine, and the package is a
# binary, a unit, three config files, a man page and three maintainer scripts).
#
#   packaging/deb/build.sh [--binary FILE] [--out DIR] [--fast]
#
# Without --binary: cargo build --release --locked, then the binary is
# stripped of debug info. --binary packages a binary already built (the test
# packages the debug build it already has). --fast: no compression (tests).
# Prints the path of the .deb on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
binary="" out="$root/target/deb" fast=0
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --fast) fast=1; shift ;;
        *) echo "build.sh: unknown argument $1 (--binary FILE, --out DIR, --fast)" >&2; exit 2 ;;
    esac
done
for tool in dpkg-deb dpkg gzip; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool is required (Debian: apt-get install dpkg gzip)" >&2; exit 2; }
done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n1)
arch=$(dpkg --print-architecture)
if [ -z "$binary" ]; then
    (cd "$root" && cargo build --release --locked -p portcullis --bin portcullis)
    binary="$root/target/release/portcullis"
fi
[ -x "$binary" ] || { echo "build.sh: $binary is not an executable" >&2; exit 2; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg="$stage/portcullis_${version}_${arch}"
install -d "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/lib/systemd/system" "$pkg/etc/portcullis" \
    "$pkg/usr/lib/sysctl.d" "$pkg/usr/lib/modules-load.d" "$pkg/usr/share/man/man8" \
    "$pkg/usr/share/doc/portcullis"
install -m 0755 "$binary" "$pkg/usr/bin/portcullis"
# Debug info stays in the build tree; the edge node gets the code.
objcopy --strip-debug "$pkg/usr/bin/portcullis" 2>/dev/null || true
install -m 0644 "$here/portcullis.service" "$pkg/lib/systemd/system/portcullis.service"
install -m 0644 "$here/portcullis.toml" "$pkg/etc/portcullis/portcullis.toml"
install -m 0644 "$root/tuning/99-portcullis.conf" "$pkg/usr/lib/sysctl.d/99-portcullis.conf"
# Named for the package: a plain tls.conf could be another package's file.
install -m 0644 "$root/tuning/tls.conf" "$pkg/usr/lib/modules-load.d/portcullis-tls.conf"
install -m 0644 "$root/tuning/README.md" "$pkg/usr/share/doc/portcullis/tuning.md"
install -m 0644 "$root/README.md" "$pkg/usr/share/doc/portcullis/README.md"
gzip -9n "$pkg/usr/share/doc/portcullis/README.md" "$pkg/usr/share/doc/portcullis/tuning.md"

# The man page is the binary's own --help, so the two cannot disagree.
{
    echo ".TH PORTCULLIS 8 \"\" \"portcullis $version\" \"System Administration\""
    echo ".SH NAME"
    echo "portcullis \\- thread-per-core mTLS API gateway"
    echo ".SH SYNOPSIS"
    echo ".nf"
    "$pkg/usr/bin/portcullis" --help | sed -e 's/\\/\\\\/g' -e 's/^\./\\\&./' -e "s/^'/\\\\\\&'/"
    echo ".fi"
    echo ".SH FILES"
    echo ".TP"
    echo "/etc/portcullis/portcullis.toml"
    echo "the config (systemctl reload portcullis applies it)"
    echo ".TP"
    echo "/run/portcullis/upgrade.sock"
    echo "where a new binary takes the listening sockets over (portcullis upgrade)"
    echo ".TP"
    echo "/usr/lib/sysctl.d/99-portcullis.conf, /usr/lib/modules-load.d/portcullis-tls.conf"
    echo "kernel tuning and the kernel TLS module; override in /etc"
    echo ".SH SEE ALSO"
    echo "/usr/share/doc/portcullis/README.md.gz, /usr/share/doc/portcullis/tuning.md.gz"
} > "$pkg/usr/share/man/man8/portcullis.8"
gzip -9n "$pkg/usr/share/man/man8/portcullis.8"

cat > "$pkg/usr/share/doc/portcullis/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: portcullis
Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
COPY

install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$pkg/DEBIAN/"
echo "/etc/portcullis/portcullis.toml" > "$pkg/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
cat > "$pkg/DEBIAN/control" <<CONTROL
Package: portcullis
Version: $version
Architecture: $arch
Maintainer: Portcullis maintainers <portcullis@example.invalid>
Installed-Size: $size
Depends: libc6 (>= 2.34), libgcc-s1, adduser
Section: net
Priority: optional
Homepage: https://example.invalid/portcullis
Description: thread-per-core mTLS API gateway
 Portcullis terminates mutual TLS (a verified client certificate is
 required), speaks HTTP/1.1 and HTTP/2 to clients and forwards HTTP/1.1 to
 backends; one pinned io_uring runtime per core, kernel TLS where the kernel
 has it. The binary can be upgraded without dropping a connection.
CONTROL

mkdir -p "$out"
deb="$out/portcullis_${version}_${arch}.deb"
if [ "$fast" = 1 ]; then
    dpkg-deb --root-owner-group -Znone --build "$pkg" "$deb" >/dev/null
else
    dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
fi
echo "$deb"
