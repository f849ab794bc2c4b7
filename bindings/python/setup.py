"""Bundles the built libtryvox into the package and tags the wheel for this platform.

The library copied into the wheel (as tryvox/libtryvox.so.0) is $TRYVOX_BUNDLE_LIB if set,
else ../../target/release/libtryvox.so (`cargo build --release`, or `make wheel`). Its debug
info is stripped on the way (`objcopy --strip-debug`, from binutils; $OBJCOPY names another
one), writing the copy in the build directory and leaving the built library as it is: the
release library carries about 20 MB of it, the stripped one a few MB. Without objcopy the
copy is bundled as it is, with a warning.

The Python code itself is pure (ctypes), so the tag is py3-none-<platform>: any Python
3.8+, this OS and CPU only.
"""
import os
import shutil
import subprocess
import sys

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:  # setuptools >= 70.1
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # older setuptools, with the `wheel` package
    from wheel.bdist_wheel import bdist_wheel

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_LIB = os.path.join(HERE, "..", "..", "target", "release", "libtryvox.so")


def bundle(lib, dest):
    """Copies lib to dest without its debug sections (the source is not modified)."""
    objcopy = os.environ.get("OBJCOPY") or shutil.which("objcopy")
    if objcopy:
        if os.path.exists(dest):
            os.remove(dest)
        subprocess.run([objcopy, "--strip-debug", lib, dest], check=True)
    else:
        print("tryvox: objcopy not found (binutils): bundling the library with its debug info",
              file=sys.stderr)
        shutil.copyfile(lib, dest)


class BuildPyWithLibrary(build_py):
    def run(self):
        super().run()
        lib = os.environ.get("TRYVOX_BUNDLE_LIB") or DEFAULT_LIB
        if not os.path.isfile(lib):
            raise SystemExit(f"tryvox: {lib} does not exist: build the library first "
                             "(`make wheel` does, or `cargo build --release`), or set "
                             "TRYVOX_BUNDLE_LIB to a built libtryvox.so")
        dest = os.path.join(self.build_lib, "tryvox", "libtryvox.so.0")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        bundle(lib, dest)
        os.chmod(dest, 0o755)


class BinaryDistribution(Distribution):
    def has_ext_modules(self):
        return True  # it carries a native library: a platform wheel, installed in platlib


class PlatformWheel(bdist_wheel):
    def get_tag(self):
        _, _, plat = super().get_tag()
        return "py3", "none", plat


setup(distclass=BinaryDistribution,
      cmdclass={"build_py": BuildPyWithLibrary, "bdist_wheel": PlatformWheel})
