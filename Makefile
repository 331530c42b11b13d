# The one place for cargo flags. mail-auth 0.15 depends on mail-parser 1.0,
# which declares rust-version 1.98 although it builds with Rust 1.95, so every
# cargo call here passes --ignore-rust-version.
CARGO ?= cargo
CARGO_FLAGS ?= --ignore-rust-version
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

.PHONY: build release test lint fmt run clean bench deb

build:
	$(CARGO) build $(CARGO_FLAGS)

release:
	$(CARGO) build --release $(CARGO_FLAGS)

# Unit, milter-protocol and real-Postfix end-to-end tests, then the unit
# tests of the load generator (benches/milterload, its own crate).
# tests/deps.sh installs the Debian packages they use (Postfix, dkimpy,
# OpenDKIM) and parsedmarc (PyPI, into a venv) when missing; the Postfix
# tests run as root.
test:
	bash tests/deps.sh
	$(CARGO) test $(CARGO_FLAGS) -- --test-threads=4
	$(CARGO) test $(CARGO_FLAGS) --manifest-path benches/milterload/Cargo.toml

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy $(CARGO_FLAGS) --all-targets -- -D warnings
	$(CARGO) fmt --manifest-path benches/milterload/Cargo.toml -- --check
	$(CARGO) clippy $(CARGO_FLAGS) --manifest-path benches/milterload/Cargo.toml --all-targets -- -D warnings

# Criterion micro-benchmarks of the hot paths (message assembly, From
# gate, Authentication-Results writer, signer). The end-to-end comparison
# with OpenDKIM + OpenDMARC is benches/run.sh (see BENCHMARKS.md).
bench:
	$(CARGO) bench $(CARGO_FLAGS) --bench hot_paths

fmt:
	$(CARGO) fmt --all

# The Debian package rmilter_VERSION_ARCH.deb (release binary, man pages,
# completions, units, /etc/rmilter/rmilter.toml; see packaging/), checked
# with lintian. Installs debhelper and lintian from apt when missing.
deb: release
	bash packaging/deps.sh
	bash packaging/build-deb.sh $(TARGET_DIR)/release/rmilter $(TARGET_DIR)/deb >$(TARGET_DIR)/deb.path
	cp "$$(cat $(TARGET_DIR)/deb.path)" .
	lintian --fail-on error,warning "$$(basename "$$(cat $(TARGET_DIR)/deb.path)")"
	@echo "built $$(basename "$$(cat $(TARGET_DIR)/deb.path)")"

# Run on the embedded defaults (or /etc/rmilter/rmilter.toml when it exists).
run:
	$(CARGO) run --release $(CARGO_FLAGS) -- run

clean:
	$(CARGO) clean
