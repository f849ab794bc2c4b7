# Debian packages (see packaging/debian/build-debs.sh): `make deb` builds the release
# workspace, then libtryvox0, libtryvox-dev, libtryvox0-dbgsym, tryvox-hangup and
# tryvox-sim (+ -dbgsym) into $(DEBDIR); `make deb-files` packages what is already built in
# $(BUILD) (the tests use target/debug). Needs dpkg-dev (build-essential has it).
DEBDIR ?= target/debian

.PHONY: deb deb-files

deb: build deb-files

deb-files:
	packaging/debian/build-debs.sh $(BUILD) $(DEBDIR)
