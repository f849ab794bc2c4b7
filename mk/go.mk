# Go binding (bindings/go): pkg-config file for the in-tree build, vet, race tests and the
# example against a simulator. `make go-test` is what a contributor runs; users follow
# bindings/go/README.md (make install, then pkg-config finds the library).
GO ?= go
# The in-tree layout the .pc file points at: libtryvox.so and its SONAME link
# libtryvox.so.0 (which a linked program asks for) next to each other.
# GO_OUT (default target/go) holds both; GO_LIBDIR is the build they point at.
GO_OUT ?= target/go
GO_LIBDIR ?= $(LIBDIR)
GO_TREE_LIB = $(abspath $(GO_OUT))/lib
GO_PKGCONFIG = $(abspath $(GO_OUT))/pkgconfig
GO_ENV = PKG_CONFIG_PATH=$(GO_PKGCONFIG)$${PKG_CONFIG_PATH:+:$$PKG_CONFIG_PATH} CGO_ENABLED=1

.PHONY: go-pkgconfig go-vet go-test go-example

# Writes target/go/pkgconfig/tryvox.pc for the library in $(GO_LIBDIR) (default
# target/release), with an rpath so programs run without LD_LIBRARY_PATH.
go-pkgconfig:
	@test -f $(GO_LIBDIR)/libtryvox.so || { echo "$(GO_LIBDIR)/libtryvox.so is not built: run make build" >&2; exit 1; }
	@mkdir -p $(GO_TREE_LIB) $(GO_PKGCONFIG)
	@ln -sfn $(abspath $(GO_LIBDIR))/libtryvox.so $(GO_TREE_LIB)/libtryvox.so
	@ln -sfn $(abspath $(GO_LIBDIR))/libtryvox.so $(GO_TREE_LIB)/libtryvox.so.0
	@printf '%s\n' 'libdir=$(GO_TREE_LIB)' 'includedir=$(CURDIR)/include' '' \
	  'Name: tryvox' 'Description: Hang up calls on the TryVox voice API (in-tree build)' \
	  'Version: $(VERSION)' 'Libs: -L$${libdir} -Wl,-rpath,$${libdir} -ltryvox' \
	  'Cflags: -I$${includedir}' > $(GO_PKGCONFIG)/tryvox.pc
	@echo "wrote $(GO_PKGCONFIG)/tryvox.pc; use: export PKG_CONFIG_PATH=$(GO_PKGCONFIG)"

go-vet: go-pkgconfig
	cd bindings/go && $(GO_ENV) $(GO) vet ./...

# go vet, then go test -race against a simulator started here (and stopped after).
go-test: build go-vet
	@set -e; out=$$(mktemp); \
	target/release/tryvox-sim --answer-delay-ms 60000 > $$out & sim=$$!; \
	trap 'kill $$sim 2>/dev/null; wait $$sim 2>/dev/null; rm -f $$out' EXIT; \
	for i in $$(seq 100); do url=$$(head -n1 $$out); [ -n "$$url" ] && break; sleep 0.1; done; \
	cd bindings/go && $(GO_ENV) TRYVOX_BASE_URL=$$url TRYVOX_ACCOUNT_ID=AC123456 \
	  TRYVOX_API_KEY=tvx_sk_test_simulator $(GO) test -race -count=1 ./...

# Builds the example to target/go/example.
go-example: go-pkgconfig
	cd bindings/go && $(GO_ENV) $(GO) build -o $(abspath $(GO_OUT))/example ./example
