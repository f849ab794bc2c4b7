#!/usr/bin/env bash
# Builds the private Asterisk the module's tests run in, from the vendored release tarball,
# into target/asterisk/root (cached: a second run with the same tarball does nothing).
# usage: asterisk/build-asterisk.sh [TARBALL]   (default ../shared/vendor/asterisk-22.10.1.tar.xz)
# Prints the install root on its last line. Exit 3: the tarball is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
tarball="${1:-$here/../shared/vendor/asterisk-22.10.1.tar.xz}"
out="${CARGO_TARGET_DIR:-$here/target}/asterisk"
root="$out/root"
if [ ! -f "$tarball" ]; then
    echo "asterisk: $tarball is missing" >&2
    exit 3
fi
sums="$(dirname "$tarball")/SHA256SUMS"
if [ -f "$sums" ]; then
    (cd "$(dirname "$tarball")" && grep " $(basename "$tarball")\$" SHA256SUMS | sha256sum -c --quiet -) \
        || { echo "asterisk: $tarball does not match SHA256SUMS" >&2; exit 1; }
fi
sum="$(sha256sum "$tarball" | cut -c1-16)"
stamp="$root/.built-$sum"
if [ -f "$stamp" ]; then
    echo "$root"
    exit 0
fi
rm -rf "$out/src" "$root"
mkdir -p "$out/src"
log="$out/build.log"
start=$(date +%s)
echo "asterisk: building $(basename "$tarball") into $root (log: $log)" >&2
tar -xf "$tarball" -C "$out/src"
cd "$out/src"/asterisk-*
{
    ./configure --without-pjproject-bundled --with-jansson-bundled=no \
        --without-pjproject --without-srtp --without-opus --prefix=/usr \
        --sysconfdir=/etc --localstatedir=/var
    make menuselect.makeopts
    args=()
    for c in ADDONS APPS BRIDGES CDR CEL CHANNELS CODECS FORMATS FUNCS PBX RES TESTS \
             AGIS UTILS CORE_SOUNDS MOH EXTRA_SOUNDS; do
        args+=(--disable-category "MENUSELECT_$c")
    done
    # Only what the module's tests use: extensions.conf, UserEvent, Wait/Set/Hangup (core),
    # `channel originate`, and the function modules the test dialplan reads.
    for m in pbx_config app_userevent res_clioriginate func_strings func_logic; do
        args+=(--enable "$m")
    done
    menuselect/menuselect "${args[@]}" menuselect.makeopts
    make -j"$(nproc)"
    make install install-headers DESTDIR="$root"
} >"$log" 2>&1 || { tail -50 "$log" >&2; echo "asterisk: build failed (log: $log)" >&2; exit 1; }
echo "asterisk: built in $(( $(date +%s) - start )) s" >&2
touch "$stamp"
echo "$root"
