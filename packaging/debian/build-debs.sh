#!/bin/bash
# Builds libtryvox's Debian packages with dpkg-deb from a tree staged by
# `make install-files` (PREFIX=/usr, multiarch libdir), no debhelper needed:
#
#   libtryvox0          usr/lib/<multiarch>/libtryvox.so.<version> and the libtryvox.so.0
#                       link, stripped; DEBIAN/symbols (dpkg-gensymbols), DEBIAN/shlibs and
#                       an ldconfig trigger
#   libtryvox-dev       headers, the libtryvox.so link, libtryvox.a, tryvox.pc, the CMake
#                       package (usr/lib/<multiarch>/cmake/tryvox)
#   libtryvox0-dbgsym   the library's debug info: usr/lib/debug/usr/lib/<multiarch>/
#                       libtryvox.so.<version>.debug (its .gnu_debuglink) and the
#                       usr/lib/debug/.build-id/ link gdb looks up first
#   tryvox-hangup       the incident CLI, usr/bin/tryvox-hangup
#   tryvox-sim          the simulator, usr/bin/tryvox-sim, stripped
#   tryvox-sim-dbgsym   its debug info, usr/lib/debug/.build-id/
#
# Depends come from dpkg-shlibdeps (a minimal debian/control in a scratch directory).
# The version is Cargo.toml's ("0.1.0" -> "0.1.0-1"; a "-rc.1" pre-release becomes "~rc.1").
#
# usage: build-debs.sh BUILD_DIR OUT_DIR
#   BUILD_DIR: where cargo put libtryvox.so, libtryvox.a, tryvox-sim (target/release)
#   env: DEB_VERSION (whole Debian version), DEB_COMPRESS (dpkg-deb options, default
#        "-Zxz"), DEB_MAINTAINER
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 BUILD_DIR OUT_DIR" >&2; exit 64; }
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "$1" && pwd)
mkdir -p "$2"
out=$(cd "$2" && pwd)
for f in libtryvox.so libtryvox.a tryvox-sim; do
    [ -f "$build/$f" ] || { echo "build-debs: $build/$f is not built" >&2; exit 1; }
done
for t in dpkg-deb dpkg-shlibdeps dpkg-gensymbols objcopy readelf cc; do
    command -v "$t" >/dev/null || { echo "build-debs: $t is missing (dpkg-dev, binutils, gcc)" >&2; exit 1; }
done

upstream=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
debver=${DEB_VERSION:-$(printf '%s' "$upstream" | sed 's/-/~/')-1}
arch=$(dpkg --print-architecture)
ma=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || cc -print-multiarch)
maint=${DEB_MAINTAINER:-libtryvox developers <libtryvox@localhost>}
read -r -a compress <<<"${DEB_COMPRESS:--Zxz}"
libdir=/usr/lib/$ma
sover=0

work=$(mktemp -d "${TMPDIR:-/tmp}/tryvox-deb.XXXXXX")
trap "${KEEP_WORK:+:} rm -rf \"\$work\"" EXIT
stage=$work/stage
cd "$work"
mkdir debian
pkgs=(libtryvox0 libtryvox-dev libtryvox0-dbgsym tryvox-hangup tryvox-sim tryvox-sim-dbgsym)
for p in "${pkgs[@]}"; do mkdir -p "debian/$p/DEBIAN"; done

# dpkg-shlibdeps and dpkg-gensymbols read debian/control (and the changelog).
{
    printf 'Source: tryvox\nMaintainer: %s\n' "$maint"
    for p in "${pkgs[@]}"; do printf '\nPackage: %s\nArchitecture: any\n' "$p"; done
} >debian/control
cat >debian/changelog <<EOF
tryvox ($debver) unstable; urgency=medium

  * Built from the libtryvox sources (Cargo version $upstream).

 -- $maint  $(date -R -u -d "@${SOURCE_DATE_EPOCH:-$(stat -c %Y "$root/Cargo.toml")}")
EOF

# 1. Stage the install tree (the library stripped, its debug info apart).
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C "$root" install-files \
    DESTDIR="$stage" PREFIX=/usr libdir="$libdir" BUILD="$build" >/dev/null

# 2. Split it into packages.
mv_into() { # PKG PATH...: moves staged paths into a package tree
    local p=$1 f
    shift
    for f in "$@"; do
        mkdir -p "debian/$p$(dirname "$f")"
        mv "$stage$f" "debian/$p$f"
    done
}
mv_into libtryvox0 "$libdir/libtryvox.so.$upstream" "$libdir/libtryvox.so.$sover"
mv_into libtryvox-dev /usr/include "$libdir/libtryvox.so" "$libdir/libtryvox.a" \
    "$libdir/pkgconfig" "$libdir/cmake"
mv_into libtryvox0-dbgsym /usr/lib/debug
rm -f "$stage/usr/bin/tryvox-hangup"

build_id() { readelf -n "$1" | sed -n 's/.*Build ID: *\([0-9a-f]*\).*/\1/p' | head -1; }

# The .build-id link gdb looks up first, to the debuglink-named file.
lib_id=$(build_id "debian/libtryvox0$libdir/libtryvox.so.$upstream")
if [ -n "$lib_id" ]; then
    d=debian/libtryvox0-dbgsym/usr/lib/debug/.build-id/${lib_id:0:2}
    mkdir -p "$d"
    ln -s "../..$libdir/libtryvox.so.$upstream.debug" "$d/${lib_id:2}.debug"
fi

# The simulator: stripped, its debug info under .build-id in tryvox-sim-dbgsym.
install -D -m 755 "$build/tryvox-sim" debian/tryvox-sim/usr/bin/tryvox-sim
sim_id=$(build_id debian/tryvox-sim/usr/bin/tryvox-sim)
if [ -n "$sim_id" ]; then
    dbg=debian/tryvox-sim-dbgsym/usr/lib/debug/.build-id/${sim_id:0:2}/${sim_id:2}.debug
    mkdir -p "$(dirname "$dbg")"
    objcopy --only-keep-debug --compress-debug-sections debian/tryvox-sim/usr/bin/tryvox-sim "$dbg"
    chmod 644 "$dbg"
    objcopy --strip-all --remove-section=.comment --add-gnu-debuglink="$dbg" debian/tryvox-sim/usr/bin/tryvox-sim
else
    objcopy --strip-all --remove-section=.comment debian/tryvox-sim/usr/bin/tryvox-sim
fi

# The CLI, linked again without the RUNPATH a prefix install gives it (/usr/lib is searched).
mkdir -p debian/tryvox-hangup/usr/bin
cc -O2 -std=c99 -Wall -Wextra -Werror -I"debian/libtryvox-dev/usr/include" \
    "$root/examples/tryvox-hangup.c" -o debian/tryvox-hangup/usr/bin/tryvox-hangup \
    -L"debian/libtryvox0$libdir" -l:libtryvox.so.$sover
objcopy --strip-all --remove-section=.comment debian/tryvox-hangup/usr/bin/tryvox-hangup

leftover=$(find "$stage" -type f -o -type l)
[ -z "$leftover" ] || { echo "build-debs: staged but not packaged: $leftover" >&2; exit 1; }

# 3. The library's symbols and shlibs files, and the ldconfig trigger.
dpkg-gensymbols -q -plibtryvox0 -Pdebian/libtryvox0 -v"${debver%-*}" -c0 \
    -Odebian/libtryvox0/DEBIAN/symbols
grep -q "^libtryvox.so.$sover libtryvox$sover " debian/libtryvox0/DEBIAN/symbols
echo "libtryvox $sover libtryvox$sover (>= ${debver%-*})" >debian/libtryvox0/DEBIAN/shlibs
echo "activate-noawait ldconfig" >debian/libtryvox0/DEBIAN/triggers

# 4. Depends from the ELF files (libtryvox.so.0 resolves through libtryvox0's symbols).
shlibs() { # FILE...: the shlibs:Depends value
    dpkg-shlibdeps -O -e "$@" >"$work/shlibdeps.out" 2>"$work/shlibdeps.err" ||
        { cat "$work/shlibdeps.err" >&2; return 1; }
    sed -n 's/^shlibs:Depends=//p' "$work/shlibdeps.out"
}
dep_lib=$(shlibs "debian/libtryvox0$libdir/libtryvox.so.$upstream")
dep_cli=$(shlibs debian/tryvox-hangup/usr/bin/tryvox-hangup)
dep_sim=$(shlibs debian/tryvox-sim/usr/bin/tryvox-sim)
case "$dep_cli" in *libtryvox$sover*) ;; *)
    echo "build-debs: dpkg-shlibdeps did not resolve libtryvox.so.$sover: $dep_cli" >&2; exit 1 ;;
esac

control() { # PKG SECTION MULTIARCH DEPENDS SHORT LONG [EXTRA FIELDS]
    local p=$1
    {
        printf 'Package: %s\nSource: tryvox\nVersion: %s\nArchitecture: %s\n' "$p" "$debver" "$arch"
        printf 'Maintainer: %s\n' "$maint"
        printf 'Installed-Size: %s\n' "$(du -sk --exclude=DEBIAN "debian/$p" | cut -f1)"
        [ -z "$4" ] || printf 'Depends: %s\n' "$4"
        [ -z "$3" ] || printf 'Multi-Arch: %s\n' "$3"
        printf 'Section: %s\nPriority: optional\n' "$2"
        [ -z "${7:-}" ] || printf '%s\n' "$7"
        printf 'Description: %s\n' "$5"
        printf '%s\n' "$6" | fold -s -w 78 | sed 's/ *$//; s/^/ /'
    } >"debian/$p/DEBIAN/control"
}
long="libtryvox hangs up calls on the TryVox voice API from C and C++: blocking, \
asynchronous and bulk hangups with retries, deadlines and key-safe error messages."
control libtryvox0 libs same "$dep_lib" "TryVox voice API client library (hang up calls)" "$long"
control libtryvox-dev libdevel same "libtryvox$sover (= $debver)" \
    "TryVox voice API client library - development files" \
    "$long This package has the headers (tryvox.h, the C++ wrapper tryvox.hpp), the static \
library, the pkg-config file and the CMake package (find_package(tryvox CONFIG), target \
tryvox::tryvox)."
control tryvox-hangup utils "" "$dep_cli" "hang up TryVox calls from the command line" \
    "tryvox-hangup ends the calls named on its command line or on its standard input, or \
every live call of the account (--all, with filters), through the TryVox voice API, with \
a progress bar on a terminal, JSON output and documented exit codes; the account and key \
are taken from the environment."
control tryvox-sim devel "" "$dep_sim" "simulator of the TryVox voice API" \
    "tryvox-sim serves the TryVox voice API on a local port, with live calls, webhooks \
and scripted faults, for testing programs that use it."
dbg_fields() { # BUILD-ID
    printf 'Auto-Built-Package: debug-symbols%s' "${1:+
Build-Ids: $1}"
}
control libtryvox0-dbgsym debug same "libtryvox$sover (= $debver)" \
    "debug symbols for libtryvox$sover" "The separate debug information of libtryvox.so.$sover." \
    "$(dbg_fields "$lib_id")"
control tryvox-sim-dbgsym debug "" "tryvox-sim (= $debver)" "debug symbols for tryvox-sim" \
    "The separate debug information of tryvox-sim." "$(dbg_fields "$sim_id")"

# 5. Documentation, md5sums, modes, and the packages.
gzip -9nc debian/changelog >"$work/changelog.Debian.gz"
for p in "${pkgs[@]}"; do
    doc=debian/$p/usr/share/doc/$p
    mkdir -p "$doc"
    install -m 644 "$root/packaging/debian/copyright" "$doc/copyright"
    install -m 644 "$work/changelog.Debian.gz" "$doc/changelog.Debian.gz"
    find "debian/$p" -type d -exec chmod 755 {} +
    (cd "debian/$p" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
        xargs -0r md5sum >DEBIAN/md5sums)
    chmod 644 "debian/$p/DEBIAN/"*
    deb=$out/${p}_${debver}_$arch.deb
    dpkg-deb --root-owner-group "${compress[@]}" --build "debian/$p" "$deb" >/dev/null
    echo "$deb"
done
