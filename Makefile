# vdisk: the one entry point people type. meson and ninja do the work; this
# file only names the usual targets. `make help` lists them.
#
#   build/       release-ish build (debugoptimized, -Werror)
#   build-asan/  the same with AddressSanitizer + UndefinedBehaviorSanitizer
#   build-fuzz/  clang + libFuzzer build, only made by `make fuzz`

BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
MESON      ?= meson
NINJA      ?= ninja
# Debian's interpreter: a python3 earlier on PATH may lack pytest.
PYTHON     ?= /usr/bin/python3
# WERROR=false for a local build with a compiler that warns more; takes
# effect when the build directory is (re)configured, e.g. after make clean.
WERROR     ?= true

MESON_OPTS      = --buildtype=debugoptimized -Dwerror=$(WERROR)
ASAN_MESON_OPTS = $(MESON_OPTS) -Db_sanitize=address,undefined -Db_lundef=false

export BUILD ASAN_BUILD PYTHON

# Targets run one after another; ninja parallelises inside each build.
.NOTPARALLEL:
.PHONY: all asan deps demo check check-unit check-integration check-asan \
	check-vm bench fuzz install clean lint format help

all: $(BUILD)/build.ninja
	$(NINJA) -C $(BUILD)
	@$(call link_vdisk,$(BUILD))

asan: $(ASAN_BUILD)/build.ninja
	$(NINJA) -C $(ASAN_BUILD)
	@$(call link_vdisk,$(ASAN_BUILD))

# (Re)configure when build.ninja is missing; --reconfigure when a previous
# setup got as far as writing meson's state.
$(BUILD)/build.ninja:
	$(MESON) setup $(if $(wildcard $(BUILD)/meson-private/coredata.dat),--reconfigure) $(BUILD) $(MESON_OPTS)

$(ASAN_BUILD)/build.ninja:
	$(MESON) setup $(if $(wildcard $(ASAN_BUILD)/meson-private/coredata.dat),--reconfigure) $(ASAN_BUILD) $(ASAN_MESON_OPTS)

# meson puts the program at DIR/tools/vdisk/vdisk; DIR/vdisk is the stable
# name scripts and tests use. Never replaces a real file of that name.
define link_vdisk
if [ -x $(1)/tools/vdisk/vdisk ] && { [ -L $(1)/vdisk ] || [ ! -e $(1)/vdisk ]; }; then \
	ln -sfn tools/vdisk/vdisk $(1)/vdisk; fi
endef

deps:
	scripts/install-deps.sh

demo: deps all
	VDISK=$(abspath $(BUILD))/vdisk scripts/demo.sh

# Unit tests (meson test) and integration tests (pytest), first in build/,
# then in the sanitizer build. scripts/check.sh prints each runner's own
# output and ends with one line "N passed, N failed, N skipped".
check: deps lint all asan
	@scripts/check.sh unit integration asan-unit asan-integration

check-unit: deps all
	@scripts/check.sh unit

check-integration: deps all
	@scripts/check.sh integration

check-asan: deps asan
	@scripts/check.sh asan-unit asan-integration

# Boots a Linux guest in QEMU with PMEM images as nvdimm devices and mounts
# /dev/pmem0 with -o dax. Not part of `make check`: it needs /dev/kvm (or
# PMEM_BOOT_ACCEL=tcg), qemu-system-x86_64, /boot/vmlinuz-* and a static
# busybox, and skips with a message when one is missing.
check-vm: all
	@VDISK=$(abspath $(BUILD))/vdisk tests/vm/pmem-boot.sh; rc=$$?; \
	if [ $$rc -eq 77 ]; then echo "check-vm: skipped"; exit 0; fi; exit $$rc

bench: all
	@set -- bench/*.sh; \
	if [ ! -e "$$1" ]; then echo "bench: no benchmarks in bench/ yet"; exit 0; fi; \
	for b in "$$@"; do \
		echo "== $$b"; VDISK=$(abspath $(BUILD))/vdisk bash "$$b" || exit 1; \
	done

# fuzz/meson.build builds each fuzz/fuzz-<target>.c as a corpus-replay test
# normally, and as a libFuzzer program with -Dfuzzing=true. This builds the
# latter with clang, ASan+UBSan and coverage instrumentation of the library
# into $(FUZZ_BUILD)/fuzz/. libFuzzer adds new inputs to the FIRST corpus
# directory, so give it a scratch one before the seeds:
#   $(FUZZ_BUILD)/fuzz/fuzz-image /tmp/new-corpus fuzz/corpus/image
fuzz:
	@set -- fuzz/fuzz-*.c; \
	if [ ! -e "$$1" ]; then echo "fuzz: no harnesses in fuzz/ yet; nothing to build"; exit 0; fi; \
	if [ ! -f $(FUZZ_BUILD)/build.ninja ]; then \
		echo "CC=clang $(MESON) setup $(FUZZ_BUILD) ..."; \
		CC=clang $(MESON) setup $(FUZZ_BUILD) --buildtype=debugoptimized \
			-Dfuzzing=true -Db_sanitize=address,undefined -Db_lundef=false \
			|| exit 1; \
	fi; \
	targets=; for f in "$$@"; do targets="$$targets fuzz/$$(basename "$$f" .c)"; done; \
	$(NINJA) -C $(FUZZ_BUILD) $$targets && \
	echo "fuzz: built$$(for t in $$targets; do printf ' %s' $(FUZZ_BUILD)/$$t; done)"

install: all
	$(MESON) install -C $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) .pytest_cache

# Style: every C file is as the checked-in .clang-format (clang-format 14)
# prints it. `make format` rewrites them; `make lint` (part of check) fails
# on any difference.
C_FILES = $(shell find lib tools tests/unit include fuzz bench -name '*.[ch]' | sort)

lint:
	@clang-format --dry-run -Werror $(C_FILES) && echo "lint: clean"

format:
	clang-format -i $(C_FILES)

help:
	@echo "make                 build $(BUILD)/ (library, vdisk, tests)"
	@echo "make demo            install deps, build, run scripts/demo.sh"
	@echo "make check           install deps; unit + integration tests in $(BUILD)/ and $(ASAN_BUILD)/"
	@echo "make check-unit      meson test in $(BUILD)/"
	@echo "make check-integration  pytest tests/integration against $(BUILD)/vdisk"
	@echo "make check-asan      both test suites in the ASan+UBSan build only"
	@echo "make check-vm        boot a QEMU guest on PMEM images (not in check)"
	@echo "make bench           run bench/*.sh"
	@echo "make fuzz            build fuzz/fuzz-*.c with clang and libFuzzer"
	@echo "make install         meson install from $(BUILD)/"
	@echo "make lint            check C style with clang-format (part of check)"
	@echo "make format          rewrite C files in that style"
	@echo "make clean           remove all build directories"
