# libtryvox: the two newcomer commands are `make demo` and `make test`.
CARGO ?= cargo
PREFIX ?= /usr/local
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
LIBDIR := target/release

.PHONY: all build demo test lint header bench clean install

all: build

build:
	$(CARGO) build --release --workspace

# The main job: build the library and the simulator, start the simulator, run the C demo.
demo: build
	@examples/run-demo.sh $(LIBDIR)

# Everything CI runs (see .ci/run): formatting, lints, and all test suites.
test:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) build --workspace
	$(CARGO) test --workspace

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Regenerate include/tryvox.h from the sources.
header:
	TRYVOX_UPDATE_HEADER=1 $(CARGO) build

clean:
	$(CARGO) clean
