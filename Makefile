# libtryvox: the two newcomer commands are `make demo` and `make test`.
CARGO ?= cargo
PREFIX ?= /usr/local
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
LIBDIR := target/release
# Where install-files takes the built libraries from (tests use target/debug).
BUILD ?= target/release

.PHONY: all build demo test test-suites lint header bench clean install install-files fuzz

all: build

# WIPE=0 builds the C library without its key-wiping allocator (see README, SECURITY.md).
WIPE ?= 1
ifeq ($(WIPE),0)
FEATURES := --no-default-features
endif

build:
	$(CARGO) build --release --workspace $(FEATURES)

# The main job: build the library and the simulator, start the simulator, run the C demo.
demo: build
	@examples/run-demo.sh $(LIBDIR)

# Everything CI runs (see .ci/run): formatting, lints, and all test suites, failing if
# any process a suite started (a server, a proxy, a worker) outlives the run.
test:
	tools/no-leftovers.py $(MAKE) --no-print-directory test-suites

test-suites:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) build --workspace
	$(CARGO) test --workspace
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc -p tryvox-core --no-deps
	$(CARGO) package -p tryvox-core --allow-dirty --quiet
	fuzz/run.sh

# Just the bounded fuzz run (FUZZ_SECONDS per target, default 60).
fuzz:
	fuzz/run.sh

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The side-by-side benchmark (needs nginx, wrk, libcurl4-openssl-dev, python3 requests);
# prints the table and records it in BENCHMARKS.md. Not part of `make test`.
bench:
	bench/run.sh --write

# Regenerate include/tryvox.h from the sources.
header:
	TRYVOX_UPDATE_HEADER=1 $(CARGO) build

# Installs lib/libtryvox.so.$(VERSION) (+ .so.0 and .so links), lib/libtryvox.a, the
# headers and lib/pkgconfig/tryvox.pc under $(DESTDIR)$(PREFIX).
install: build install-files

install-files:
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 755 $(BUILD)/libtryvox.so $(DESTDIR)$(PREFIX)/lib/libtryvox.so.$(VERSION)
	ln -sf libtryvox.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libtryvox.so.0
	ln -sf libtryvox.so.0 $(DESTDIR)$(PREFIX)/lib/libtryvox.so
	install -m 644 $(BUILD)/libtryvox.a $(DESTDIR)$(PREFIX)/lib/libtryvox.a
	install -m 644 include/tryvox.h include/tryvox.hpp $(DESTDIR)$(PREFIX)/include/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' tryvox.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/tryvox.pc

clean:
	$(CARGO) clean

# Packaging and per-ecosystem targets (wheel, deb, cmake, ...), one file per concern.
-include mk/*.mk
