#!/usr/bin/env bash
# tests/ktls/vm.sh - run test programs inside a throwaway QEMU virtual machine
# that boots a stock Debian 12 kernel, so the kernel-TLS (kTLS) path can be
# tested on hosts whose own kernel has no `tls` module.
#
# Usage: tests/ktls/vm.sh [--kernel 6.1|6.12] [--mem MB] [--smp N]
#                         [--env NAME=VALUE]... FILE... -- GUEST_COMMAND...
#
#   FILE...          copied into /t in the guest (static binaries, scripts, data)
#   GUEST_COMMAND    runs in /t under busybox sh; each word is passed as one
#                    argument (use `-- sh -c '...'` for a shell snippet)
#   --kernel         6.1 (Debian 12's linux-image-amd64, default) or 6.12
#                    (newest linux-image-6.12.*+deb12-amd64)
#   --mem MB         guest RAM, default 512 (needs ~128 MB + 2.5x the files)
#   --smp N          guest CPUs, default 2
#   --env NAME=VAL   exported in the guest before GUEST_COMMAND (repeatable)
#
# Prints the guest's serial console (CR stripped) on stdout and exits with
# GUEST_COMMAND's status; 202 if the guest never reported one (crash, panic,
# timeout), 2 for a usage error, 201 if the host cannot be prepared.
#
# Environment:
#   PORTCULLIS_VM_CACHE    cache dir (default <repo>/target/ktls-vm): the
#                          unpacked kernel, busybox and module archive live here
#   PORTCULLIS_VM_TIMEOUT  hard limit for one VM run in seconds (default 300)
#
# The VM has no network device: everything a test does stays on the guest's
# own loopback. Acceleration is TCG only (software emulation), so the VM
# checks behaviour, never speed.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${PORTCULLIS_VM_CACHE:-$REPO/target/ktls-vm}
TIMEOUT=${PORTCULLIS_VM_TIMEOUT:-300}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
  exit 2
}
log() { echo "vm.sh: $*" >&2; }
fail() { log "$*"; exit 201; }

SERIES=6.1 MEM=512 SMP=2
FILES=() CMD=() ENVS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) [ $# -ge 2 ] || usage; SERIES=$2; shift 2 ;;
    --mem) [ $# -ge 2 ] || usage; MEM=$2; shift 2 ;;
    --smp) [ $# -ge 2 ] || usage; SMP=$2; shift 2 ;;
    --env)
      [ $# -ge 2 ] || usage
      [[ $2 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || { log "--env wants NAME=VALUE, got '$2'"; exit 2; }
      ENVS+=("$2"); shift 2 ;;
    -h|--help) usage ;;
    --) shift; CMD=("$@"); break ;;
    -*) log "unknown option $1"; usage ;;
    *) FILES+=("$1"); shift ;;
  esac
done
[ ${#CMD[@]} -gt 0 ] || { log "no guest command (put it after --)"; usage; }
case "$SERIES" in 6.1|6.12) ;; *) log "--kernel must be 6.1 or 6.12"; exit 2 ;; esac
[[ $MEM =~ ^[0-9]+$ && $SMP =~ ^[0-9]+$ && $TIMEOUT =~ ^[0-9]+$ ]] \
  || { log "--mem, --smp and PORTCULLIS_VM_TIMEOUT must be numbers"; exit 2; }
for f in ${FILES[@]+"${FILES[@]}"}; do [ -e "$f" ] || { log "no such file: $f"; exit 2; }; done

mkdir -p "$CACHE"
# Several runs may share one cache (parallel tests): one preparer at a time.
exec 9>"$CACHE/.lock"
flock 9

# ---- host tools -------------------------------------------------------------
SUDO=()
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=(sudo -n); fi
APT_UPDATED=0
apt_update_once() {
  if [ $APT_UPDATED = 0 ]; then
    log "apt-get update"
    ${SUDO[@]+"${SUDO[@]}"} apt-get update -qq >&2 || fail "apt-get update failed"
    APT_UPDATED=1
  fi
}
# apt_download DIR PKG: fetch one .deb into DIR, without installing it. (The
# sandbox option keeps root's apt from warning that user _apt cannot write DIR.)
apt_download() {
  local get=(apt-get -qq -o APT::Sandbox::User="$(id -un)" download "$2")
  (cd "$1" && "${get[@]}" >&2) && return
  apt_update_once
  (cd "$1" && "${get[@]}" >&2)
}
need_pkgs=()
for pair in qemu-system-x86_64:qemu-system-x86 cpio:cpio depmod:kmod xz:xz-utils \
            zstd:zstd timeout:coreutils gzip:gzip dpkg-deb:dpkg flock:util-linux; do
  command -v "${pair%%:*}" >/dev/null || need_pkgs+=("${pair#*:}")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || fail "missing ${need_pkgs[*]} and no apt-get to install them"
  apt_update_once
  log "installing ${need_pkgs[*]}"
  had_qemu_img=$(command -v qemu-img || true)
  ${SUDO[@]+"${SUDO[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${need_pkgs[@]}" >&2 || fail "apt-get install ${need_pkgs[*]} failed"
  # A machine whose qemu-utils came from a newer suite (backports) loses it to
  # the older qemu-system-x86's dependencies: put qemu-img back, from the suite
  # that qemu-system-x86 came from.
  if [ -n "$had_qemu_img" ] && ! command -v qemu-img >/dev/null; then
    log "apt replaced qemu-utils; reinstalling it to keep qemu-img"
    ${SUDO[@]+"${SUDO[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      qemu-utils >&2 || log "could not reinstall qemu-utils (qemu-img is gone)"
  fi
fi

# ---- resolve the kernel ABI name (e.g. 6.1.0-56-amd64) -------------------------
# Old ABI packages vanish from the mirror, so ask apt rather than hard-coding
# one; once unpacked, the cached choice sticks (delete the cache to move on).
resolve_kver() {
  case "$SERIES" in
    6.1) apt-cache depends linux-image-amd64 2>/dev/null \
           | sed -n 's/^ *Depends: linux-image-\(6\.1\.[^ ]*-amd64\)$/\1/p' | head -n1 ;;
    6.12) apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64$' 2>/dev/null \
           | sed -n 's/^linux-image-\([^ ]*\) - .*/\1/p' | sort -V | tail -n1 ;;
  esac
}
KDIR_LINK=$CACHE/kernel-$SERIES
if [ -f "$KDIR_LINK/ready" ]; then
  KVER=$(cat "$KDIR_LINK/kver")
else
  KVER=$(resolve_kver)
  if [ -z "$KVER" ]; then apt_update_once; KVER=$(resolve_kver); fi
  [ -n "$KVER" ] || fail "apt knows no kernel package for series $SERIES"
fi
KDIR=$CACHE/$KVER

# ---- busybox (downloaded and unpacked, never installed) ----------------------
BUSYBOX=$CACHE/busybox/busybox
if [ ! -x "$BUSYBOX" ]; then
  tmp=$(mktemp -d "$CACHE/dl.XXXXXX")
  log "downloading busybox-static"
  apt_download "$tmp" busybox-static || fail "apt-get download busybox-static failed"
  dpkg-deb -x "$tmp"/busybox-static_*.deb "$tmp/root"
  mkdir -p "$CACHE/busybox"
  install -m 0755 "$tmp/root/bin/busybox" "$BUSYBOX.part" && mv "$BUSYBOX.part" "$BUSYBOX"
  rm -rf "$tmp"
fi

# ---- kernel: vmlinux for PVH boot + a cpio of busybox and the modules --------
# Everything that depends only on the kernel and busybox is packed once into
# base.cpio.gz; each run puts a small uncompressed archive with /init and its
# files in front of it (the kernel unpacks concatenated archives in order, but
# finds nothing after a compressed one, so the uncompressed part goes first).
if [ ! -f "$KDIR/ready" ]; then
  rm -rf "$KDIR"; mkdir -p "$KDIR"
  tmp=$(mktemp -d "$CACHE/dl.XXXXXX")
  log "downloading linux-image-$KVER"
  apt_download "$tmp" "linux-image-$KVER" || fail "apt-get download linux-image-$KVER failed"
  log "unpacking linux-image-$KVER"
  dpkg-deb -x "$tmp"/linux-image-"$KVER"_*.deb "$tmp/root"
  vmlinuz=$tmp/root/boot/vmlinuz-$KVER
  [ -f "$vmlinuz" ] || fail "no /boot/vmlinuz-$KVER in the package"

  # Booting the uncompressed ELF (QEMU enters it via its PVH note) skips the
  # in-guest decompressor, which is slow under TCG. Debian's 6.1 bzImage carries
  # an xz payload, 6.12 a zstd one: find the stream's magic and inflate from there.
  xz_at=$(LC_ALL=C grep -abo -m1 $'\xfd7zXZ\x00' "$vmlinuz" | head -n1 | cut -d: -f1 || true)
  if [ -n "$xz_at" ]; then
    tail -c +$((xz_at + 1)) "$vmlinuz" | xz -dc --single-stream > "$KDIR/vmlinux" 2>/dev/null || true
  else
    zst_at=$(LC_ALL=C grep -abo -m1 $'\x28\xb5\x2f\xfd' "$vmlinuz" | head -n1 | cut -d: -f1 || true)
    [ -n "$zst_at" ] || fail "vmlinuz-$KVER: neither an xz nor a zstd payload found"
    # trailing bytes after the frame make zstd complain; the frame itself is whole
    tail -c +$((zst_at + 1)) "$vmlinuz" | zstd -dcq > "$KDIR/vmlinux" 2>/dev/null || true
  fi
  [ "$(head -c4 "$KDIR/vmlinux" 2>/dev/null | od -An -tx1 | tr -d ' ')" = 7f454c46 ] \
    || fail "could not extract an ELF vmlinux from vmlinuz-$KVER"

  stage=$tmp/stage
  mkdir -p "$stage"/{bin,sbin,proc,sys,dev,tmp,t}
  cp "$BUSYBOX" "$stage/bin/busybox"
  for applet in $("$BUSYBOX" --list); do
    # `--list` names busybox itself: linking it would replace the binary
    [ "$applet" = busybox ] || ln -s busybox "$stage/bin/$applet"
  done
  ln -s ../bin/busybox "$stage/sbin/modprobe"   # request_module() runs /sbin/modprobe
  msrc=$tmp/root/lib/modules/$KVER mdst=$stage/lib/modules/$KVER
  # tls.ko itself, plus the AEAD pieces (gcm, ghash, aesni, ...) that the
  # kernel loads on demand at setsockopt(TLS_TX/TLS_RX).
  for d in net/tls crypto arch/x86/crypto lib/crypto; do
    mkdir -p "$mdst/kernel/$(dirname "$d")"
    cp -a "$msrc/kernel/$d" "$mdst/kernel/$(dirname "$d")/"
  done
  cp "$msrc"/modules.builtin "$msrc"/modules.builtin.modinfo "$msrc"/modules.order "$mdst/"
  # 6.12 ships compressed modules, which busybox modprobe cannot load
  find "$mdst" -name '*.ko.xz' -exec xz -d {} +
  find "$mdst" -name '*.ko.zst' -exec zstd -d -q --rm {} +
  depmod -b "$stage" "$KVER"   # the package carries no modules.dep / modules.alias
  (cd "$stage" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet | gzip -6) \
    > "$KDIR/base.cpio.gz"
  rm -rf "$tmp"
  echo "$KVER" > "$KDIR/kver"
  touch "$KDIR/ready"
  ln -sfn "$KVER" "$KDIR_LINK"
  log "cached $KVER in $KDIR"
fi
[ -f "$KDIR_LINK/ready" ] || ln -sfn "$KVER" "$KDIR_LINK"
flock -u 9

# ---- per-run archive: /init, the command, the environment, the files ----------
RUN=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-vm.XXXXXX")
trap 'rm -rf "$RUN"' EXIT
mkdir -p "$RUN/root/t"
for f in ${FILES[@]+"${FILES[@]}"}; do cp -rL "$f" "$RUN/root/t/"; done

# single-quote one word for sh
shq() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }
{
  for kv in ${ENVS[@]+"${ENVS[@]}"}; do
    printf 'export %s=%s\n' "${kv%%=*}" "$(shq "${kv#*=}")"
  done
} > "$RUN/root/env"
{
  for w in "${CMD[@]}"; do printf '%s ' "$(shq "$w")"; done
  echo
} > "$RUN/root/cmd"

cat > "$RUN/root/init" <<'EOF'
#!/bin/sh
export PATH=/bin:/sbin HOME=/t
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
ip link set lo up                     # loopback starts out down
modprobe tls || echo "PORTCULLIS_VM: modprobe tls failed"
echo "PORTCULLIS_VM_BOOTED kernel=$(uname -r) cpus=$(nproc) uptime=$(cut -d' ' -f1 /proc/uptime)s"
cd /t
rc=$( (. /env; . /cmd) >/dev/console 2>&1 </dev/null; echo $?)
echo "PORTCULLIS_VM_EXIT=$rc"
# isa-debug-exit at port 0xf4: QEMU exits with (byte << 1) | 1
printf "\\$(printf %03o $((rc & 255)))" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
poweroff -f
EOF
chmod 0755 "$RUN/root/init"
(cd "$RUN/root" && find . -print0 | cpio --null -o -H newc --quiet) > "$RUN/run.cpio"
cat "$RUN/run.cpio" "$KDIR/base.cpio.gz" > "$RUN/initrd"

# ---- boot ---------------------------------------------------------------------
set +e
timeout -k 10 "$TIMEOUT" qemu-system-x86_64 \
  -accel tcg,thread=multi -cpu max -M q35 -smp "$SMP" -m "$MEM" \
  -nodefaults -no-user-config -display none -no-reboot \
  -kernel "$KDIR/vmlinux" -initrd "$RUN/initrd" \
  -append "console=ttyS0 quiet panic=-1 oops=panic" \
  -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
  -serial stdio -monitor none </dev/null | tr -d '\r' | tee "$RUN/console.log"
qrc=${PIPESTATUS[0]}
set -e
[ "$qrc" = 124 ] && log "guest timed out after ${TIMEOUT}s (PORTCULLIS_VM_TIMEOUT)"
grc=$(sed -n 's/^PORTCULLIS_VM_EXIT=\([0-9][0-9]*\)$/\1/p' "$RUN/console.log" | tail -n1)
if [ -z "$grc" ]; then
  log "kernel $KVER: the guest reported no exit status (qemu status $qrc)"
  exit 202
fi
log "kernel $KVER: guest command exited $grc (qemu status $qrc)"
exit "$grc"
