# The one place for cargo flags. mail-auth 0.15 depends on mail-parser 1.0,
# which declares rust-version 1.98 although it builds with Rust 1.95, so every
# cargo call here passes --ignore-rust-version.
CARGO ?= cargo
CARGO_FLAGS ?= --ignore-rust-version

.PHONY: build release test lint fmt run clean bench

build:
	$(CARGO) build $(CARGO_FLAGS)

release:
	$(CARGO) build --release $(CARGO_FLAGS)

# Unit, milter-protocol and real-Postfix end-to-end tests, then the unit
# tests of the load generator (benches/milterload, its own crate).
# tests/deps.sh installs the Debian packages they use (Postfix, dkimpy,
# OpenDKIM) when missing; the Postfix tests run as root.
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

# Run on the embedded defaults (or /etc/rmilter/rmilter.toml when it exists).
run:
	$(CARGO) run --release $(CARGO_FLAGS) -- run

clean:
	$(CARGO) clean
