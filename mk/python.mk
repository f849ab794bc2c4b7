# Python package (bindings/python): `make wheel` builds target/release, then a platform
# wheel bundling libtryvox.so.0 (a copy without debug info: setup.py runs
# `objcopy --strip-debug`) into target/wheels/. Install it with
#   python3 -m venv .venv && .venv/bin/pip install target/wheels/tryvox-*.whl
# Offline when python3 already has setuptools and wheel (Debian: python3-setuptools
# python3-wheel); otherwise pip fetches them from PyPI into an isolated build env.
PYTHON ?= python3
WHEEL_DIR ?= target/wheels

.PHONY: wheel

wheel: build
	@rm -f $(WHEEL_DIR)/tryvox-*.whl
	@if $(PYTHON) -c 'import setuptools, wheel' 2>/dev/null; then iso=--no-build-isolation; else iso=; fi; \
	  echo "TRYVOX_BUNDLE_LIB=$(LIBDIR)/libtryvox.so $(PYTHON) -m pip wheel --no-deps $$iso -w $(WHEEL_DIR) bindings/python"; \
	  TRYVOX_BUNDLE_LIB=$(CURDIR)/$(LIBDIR)/libtryvox.so $(PYTHON) -m pip wheel --no-deps $$iso -w $(WHEEL_DIR) bindings/python
	@rm -rf bindings/python/build bindings/python/src/tryvox.egg-info
	@ls -l $(WHEEL_DIR)/tryvox-*.whl
