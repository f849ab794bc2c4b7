# C# binding (bindings/csharp), built with Mono's mcs (Debian: mono-mcs, mono-runtime);
# .NET users use bindings/csharp/Tryvox.csproj instead (see bindings/csharp/README.md).
#   make csharp         target/csharp/: Tryvox.dll (+ Tryvox.dll.config), the native library
#                       at runtimes/linux-x64/native/libtryvox.so, the example and the tests
#   make csharp-test    the tests against a simulator started (and stopped) here
#   make csharp-native  copies libtryvox.so to bindings/csharp/runtimes/linux-x64/native/
#                       (what `dotnet pack` packs; not committed)
MCS ?= mcs
MONO ?= mono
CS_LIBDIR ?= $(LIBDIR)
CS_OUT ?= target/csharp
CS_DIR := bindings/csharp
CS_NATIVE := runtimes/linux-x64/native

.PHONY: csharp csharp-native csharp-test

csharp-native:
	@test -f $(CS_LIBDIR)/libtryvox.so || { echo "$(CS_LIBDIR)/libtryvox.so is not built: run make build" >&2; exit 1; }
	install -d $(CS_DIR)/$(CS_NATIVE)
	install -m 755 $(CS_LIBDIR)/libtryvox.so $(CS_DIR)/$(CS_NATIVE)/libtryvox.so

csharp:
	@test -f $(CS_LIBDIR)/libtryvox.so || { echo "$(CS_LIBDIR)/libtryvox.so is not built: run make build" >&2; exit 1; }
	install -d $(CS_OUT)/$(CS_NATIVE)
	install -m 755 $(CS_LIBDIR)/libtryvox.so $(CS_OUT)/$(CS_NATIVE)/libtryvox.so
	install -m 644 $(CS_DIR)/Tryvox.dll.config $(CS_OUT)/Tryvox.dll.config
	$(MCS) -nologo -warnaserror -target:library -doc:$(CS_OUT)/Tryvox.xml -nowarn:1591 \
	  -out:$(CS_OUT)/Tryvox.dll $(CS_DIR)/Tryvox.cs
	$(MCS) -nologo -warnaserror -r:$(CS_OUT)/Tryvox.dll -out:$(CS_OUT)/Tryvox.Example.exe $(CS_DIR)/example/Program.cs
	$(MCS) -nologo -warnaserror -r:$(CS_OUT)/Tryvox.dll -out:$(CS_OUT)/Tryvox.Tests.exe $(CS_DIR)/tests/TryvoxTests.cs

csharp-test: build csharp
	@set -e; out=$$(mktemp); \
	target/release/tryvox-sim --answer-delay-ms 60000 > $$out & sim=$$!; \
	trap 'kill $$sim 2>/dev/null; wait $$sim 2>/dev/null; rm -f $$out' EXIT; \
	for i in $$(seq 100); do url=$$(head -n1 $$out); [ -n "$$url" ] && break; sleep 0.1; done; \
	TRYVOX_BASE_URL=$$url TRYVOX_ACCOUNT_ID=AC123456 TRYVOX_API_KEY=tvx_sk_test_simulator \
	  $(MONO) --debug $(CS_OUT)/Tryvox.Tests.exe
