# libtryvox: the two newcomer commands are `make demo` and `make test`.
CARGO ?= cargo
PREFIX ?= /usr/local
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
LIBDIR := target/release
# Where install-files takes the built libraries from (tests use target/debug).
BUILD ?= target/release

.PHONY: all build demo test test-suites lint header bench clean install install-files fuzz \
	asterisk-module install-asterisk-module

all: build

# WIPE=0 builds the C library without its key-wiping allocator (see README, SECURITY.md).
WIPE ?= 1
ifeq ($(WIPE),0)
FEATURES := --no-default-features
endif

# The release workspace, then the CLI the README names (target/release/tryvox-hangup).
build:
	$(CARGO) build --release --workspace $(FEATURES)
	@$(MAKE) --no-print-directory $(LIBDIR)/tryvox-hangup

# The incident CLI, linked against the libtryvox.so next to it; it finds the library at
# run time through its RUNPATH: $$ORIGIN/../lib (installed as bin/tryvox-hangup next to
# lib/, so a relocated prefix works without LD_LIBRARY_PATH), then $$ORIGIN (the build
# directory: the SONAME link libtryvox.so.0 -> libtryvox.so made here beside it lets
# target/release/tryvox-hangup run in place). CLI_RPATH= drops the RUNPATH.
CLI_CFLAGS ?= -O2 -std=c99 -Wall -Wextra -Werror
CLI_RPATH ?= $$ORIGIN/../lib:$$ORIGIN
comma := ,
%/tryvox-hangup: examples/tryvox-hangup.c include/tryvox.h %/libtryvox.so
	ln -sfn libtryvox.so $*/libtryvox.so.0
	$(CC) $(CLI_CFLAGS) -Iinclude $< -o $@.tmp$$$$ -L$* -ltryvox $(if $(CLI_RPATH),'-Wl$(comma)-rpath$(comma)$(CLI_RPATH)') \
	    && mv -f $@.tmp$$$$ $@

# The main job: build the library and the simulator, start the simulator, run the C demo.
demo: build
	@examples/run-demo.sh $(LIBDIR)

# Everything CI runs (see .ci/run): formatting, lints, and all test suites, failing if
# any process a suite started (a server, a proxy, a worker) outlives the run.
test:
	tools/no-leftovers.py $(MAKE) --no-print-directory test-suites

test-suites:
	$(CARGO) fmt --all -- --check
	tools/layers.py --quiet
	tools/layers.py --self-test
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	tools/newest-deps.sh
	$(CARGO) build --workspace
	$(CARGO) test --workspace
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc -p tryvox-core --no-deps
	$(CARGO) package -p tryvox-core --allow-dirty --quiet
	fuzz/run.sh

# The Asterisk module: target/asterisk/res_tryvox.so, one self-contained file (libtryvox
# linked in statically, its symbols hidden) built against the Asterisk headers in
# ASTERISK_INCLUDE (the directory holding asterisk.h; default: the system's). TRYVOX_A is
# the static library it embeds (default: the release build, made here first).
ASTERISK_INCLUDE ?= /usr/include
ASTMODDIR ?= /usr/lib/asterisk/modules
TRYVOX_A ?= $(LIBDIR)/libtryvox.a
AST_CFLAGS ?= -O2 -g -Wall -Wextra -Werror
asterisk-module:
	@test -f '$(ASTERISK_INCLUDE)/asterisk.h' || { echo "asterisk-module: no asterisk.h in" \
	    "ASTERISK_INCLUDE=$(ASTERISK_INCLUDE) (Debian: apt install asterisk-dev, or" \
	    "'make install-headers' in an Asterisk source tree)" >&2; exit 1; }
	@if [ '$(TRYVOX_A)' = '$(LIBDIR)/libtryvox.a' ]; then \
	    $(CARGO) build --release -p tryvox $(FEATURES); fi
	mkdir -p target/asterisk
	$(CC) $(AST_CFLAGS) -fPIC -shared -pthread -D_GNU_SOURCE \
	    -DAST_MODULE=\"res_tryvox\" -DAST_MODULE_SELF_SYM=__internal_res_tryvox_self \
	    -isystem '$(ASTERISK_INCLUDE)' -Iinclude asterisk/res_tryvox.c -o target/asterisk/res_tryvox.so.tmp \
	    '$(TRYVOX_A)' -Wl,--exclude-libs,ALL -lgcc_s -lutil -lrt -ldl -lm
	mv -f target/asterisk/res_tryvox.so.tmp target/asterisk/res_tryvox.so

# Copies the module into Asterisk's modules directory (ASTMODDIR), its documentation
# into ASTDATADIR/documentation/thirdparty (for `core show function TRYVOX_HANGUP`) and,
# if there is none yet, the sample configuration into ASTETCDIR (mode 0600: the key).
ASTETCDIR ?= /etc/asterisk
ASTDATADIR ?= /var/lib/asterisk
install-asterisk-module:
	install -D -m 0755 target/asterisk/res_tryvox.so '$(DESTDIR)$(ASTMODDIR)/res_tryvox.so'
	install -D -m 0644 asterisk/res_tryvox-en_US.xml \
	    '$(DESTDIR)$(ASTDATADIR)/documentation/thirdparty/res_tryvox-en_US.xml'
	@if [ ! -e '$(DESTDIR)$(ASTETCDIR)/tryvox.conf' ]; then \
	    install -D -m 0600 asterisk/tryvox.conf.sample '$(DESTDIR)$(ASTETCDIR)/tryvox.conf'; fi

# Just the bounded fuzz run (FUZZ_SECONDS per target, default 60).
fuzz:
	fuzz/run.sh

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The side-by-side benchmark (needs nginx, wrk, openssl, libcurl4-openssl-dev, python3
# requests); prints the table and records it in BENCHMARKS.md. Not part of `make test`.
# Honours CARGO_TARGET_DIR; REV=HEAD (any revision) measures that commit's library instead
# of the working tree's (see bench/run.sh).
bench:
	bench/run.sh --write

# Regenerate include/tryvox.h from the sources.
header:
	TRYVOX_UPDATE_HEADER=1 $(CARGO) build

# Installs under $(DESTDIR)$(PREFIX):
#   lib/libtryvox.so.$(VERSION) (stripped; + .so.0 and .so links), lib/libtryvox.a (debug
#   sections stripped), include/tryvox.h and tryvox.hpp, lib/pkgconfig/tryvox.pc,
#   lib/cmake/tryvox/ (find_package(tryvox CONFIG): tryvox::tryvox), bin/tryvox-hangup,
#   and the library's debug info apart, as distributions keep it:
#   lib/debug$(libdir)/libtryvox.so.$(VERSION).debug, named by the library's
#   .gnu_debuglink (gdb finds it there when PREFIX=/usr, or with
#   `set debug-file-directory $(PREFIX)/lib/debug`). SPLIT_DEBUG=0 installs unstripped.
# libdir/includedir/bindir may be moved (Debian: libdir=/usr/lib/x86_64-linux-gnu).
install: build install-files

libdir ?= $(PREFIX)/lib
includedir ?= $(PREFIX)/include
bindir ?= $(PREFIX)/bin
debugdir ?= $(PREFIX)/lib/debug
cmakedir ?= $(libdir)/cmake/tryvox
OBJCOPY ?= objcopy
SPLIT_DEBUG ?= 1
# For the relocatable CMake package: libdir and includedir relative to PREFIX (absolute
# when outside it) and the way from cmakedir back up to PREFIX.
rel_to_prefix = $(if $(filter $(PREFIX)/%,$(1)),$(patsubst $(PREFIX)/%,%,$(1)),$(1))
cmake_up = $(if $(filter $(PREFIX)/%,$(cmakedir)),$(shell echo '$(call rel_to_prefix,$(cmakedir))' | sed 's|[^/][^/]*|..|g'),$(PREFIX))
so_debug = $(DESTDIR)$(debugdir)$(libdir)/libtryvox.so.$(VERSION).debug

install-files: $(BUILD)/tryvox-hangup
	install -d $(DESTDIR)$(libdir)/pkgconfig $(DESTDIR)$(includedir) $(DESTDIR)$(bindir) $(DESTDIR)$(cmakedir)
ifeq ($(SPLIT_DEBUG),1)
	install -d $(DESTDIR)$(debugdir)$(libdir)
	$(OBJCOPY) --only-keep-debug --compress-debug-sections $(BUILD)/libtryvox.so $(so_debug)
	chmod 644 $(so_debug)
	$(OBJCOPY) --strip-unneeded --remove-section=.comment --add-gnu-debuglink=$(so_debug) $(BUILD)/libtryvox.so $(DESTDIR)$(libdir)/libtryvox.so.$(VERSION)
	chmod 755 $(DESTDIR)$(libdir)/libtryvox.so.$(VERSION)
	$(OBJCOPY) -D --strip-debug $(BUILD)/libtryvox.a $(DESTDIR)$(libdir)/libtryvox.a
	chmod 644 $(DESTDIR)$(libdir)/libtryvox.a
else
	install -m 755 $(BUILD)/libtryvox.so $(DESTDIR)$(libdir)/libtryvox.so.$(VERSION)
	install -m 644 $(BUILD)/libtryvox.a $(DESTDIR)$(libdir)/libtryvox.a
endif
	ln -sf libtryvox.so.$(VERSION) $(DESTDIR)$(libdir)/libtryvox.so.0
	ln -sf libtryvox.so.0 $(DESTDIR)$(libdir)/libtryvox.so
	install -m 644 include/tryvox.h include/tryvox.hpp $(DESTDIR)$(includedir)/
	install -m 755 $(BUILD)/tryvox-hangup $(DESTDIR)$(bindir)/tryvox-hangup
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' -e 's|@LIBDIR@|$(libdir)|' \
	    -e 's|@INCLUDEDIR@|$(includedir)|' tryvox.pc.in > $(DESTDIR)$(libdir)/pkgconfig/tryvox.pc
	sed -e 's|@VERSION@|$(VERSION)|g' -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@CMAKEDIR@|$(cmakedir)|g' \
	    -e 's|@CMAKE_UP@|$(cmake_up)|g' -e 's|@LIBDIR_REL@|$(call rel_to_prefix,$(libdir))|g' \
	    -e 's|@INCLUDEDIR_REL@|$(call rel_to_prefix,$(includedir))|g' \
	    cmake/tryvox-config.cmake.in > $(DESTDIR)$(cmakedir)/tryvox-config.cmake
	sed -e 's|@VERSION@|$(VERSION)|g' cmake/tryvox-config-version.cmake.in > $(DESTDIR)$(cmakedir)/tryvox-config-version.cmake

clean:
	$(CARGO) clean

# Packaging and per-ecosystem targets (wheel, deb, cmake, ...), one file per concern.
-include mk/*.mk
