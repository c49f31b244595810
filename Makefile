# sgflows — developer commands. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
EXAMPLE ?= examples/two-tier.json
DEB_PACKAGES := openvswitch-switch iproute2 ethtool openssl dpdk-dev librte-net-null23 librte-net-ring23 dnsmasq-base udhcpc curl ncat iputils-ping iputils-arping mariadb-server rabbitmq-server qemu-system-x86 busybox ovn-central ovn-host conntrack

.PHONY: help demo install deps-system deps-python deps-neutron test test-rust test-python lint fmt bench bench-rust bench-neutron bench-compare bench-e2e

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: ## build the Rust core and install the package (editable) with its CLI
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e .

demo: install ## compile the bundled example to OpenFlow and print a summary
	sgflows compile $(EXAMPLE) -o build/demo.flows --summary

deps-system: ## install the Debian packages the tests need (never starts their services)
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  status=$$?; rm -f /usr/sbin/policy-rc.d; exit $$status; \
	fi

deps-python: ## install the package with its agent and test extras
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[agent,test]'

deps-neutron: ## the Neutron driver suite's own venv: neutron==29.0.0 + this sgflows (build/neutron29-venv)
	PYTHON=$(PYTHON) tests/neutron/setup-venv.sh

lint: ## cargo fmt --check, clippy -D warnings, ruff, mypy --strict, stubtest (after install)
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings
	cargo clippy --all-targets --features dpdk -- -D warnings
	$(PYTHON) -m ruff check python tests benches
	$(PYTHON) -m ruff format --check python tests benches
	$(PYTHON) -m mypy
	$(PYTHON) -m mypy.stubtest sgflows._sgflows

fmt: ## format Rust and Python sources
	cargo fmt --all
	$(PYTHON) -m ruff format python tests benches
	$(PYTHON) -m ruff check --fix python tests benches

rte-flow-installer: ## the rte_flow installer binary through DPDK's API (needs dpdk-dev 22.11): target/release/sgflows-rte-flow
	cargo build --release --features dpdk --bin sgflows-rte-flow

test-rust: ## cargo tests (the pure-Rust core, no Python; the installer's logic with --features dpdk)
	cargo test --quiet
	cargo test --quiet --features dpdk --bin sgflows-rte-flow

test-python: ## pytest: API, CLI, agent, real Open vSwitch and namespaces
	$(PYTHON) -m pytest -q

test: deps-system deps-python deps-neutron rte-flow-installer lint test-rust test-python ## install everything the tests need and run them all

bench: deps-python ## pytest-benchmark suite of sgflows.compile (BENCH_PRESETS_CSV=p10,p100,p1000)
	SGFLOWS_BENCH_PRESETS=$(or $(BENCH_PRESETS_CSV),p10,p100,p1000) $(PYTHON) -m pytest benches --benchmark-enable -q

bench-neutron: ## Neutron's OVS firewall driver on the benchmark workloads (own pinned venv; minutes)
	benches/neutron_ref/run.sh $(or $(BENCH_PRESETS),p10 p100 p1000)
	$(PYTHON) benches/neutron_ref/report.py benches/results/neutron.jsonl > benches/results/neutron.md

bench-compare: ## sgflows beside Neutron on the same workloads: benches/results/compare.{md,png}
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	$(PYTHON) benches/compare.py $(or $(BENCH_PRESETS),p10 p100 p1000) --run-neutron
	$(PYTHON) benches/neutron_ref/report.py benches/results/neutron.jsonl > benches/results/neutron.md

comma := ,
E2E_PRESETS = $(subst $(comma), ,$(or $(BENCH_E2E),p10,p100,p1000))

bench-e2e: ## end-to-end on a real switch, sgflows vs Neutron's driver (BENCH_E2E=p10,p100 for a part; all: ~1 h)
	@$(PYTHON) -c 'import matplotlib' 2>/dev/null || $(PYTHON) -m pip install --quiet --disable-pip-version-check 'matplotlib>=3.7'
	PYTHON=$(PYTHON) tests/neutron/setup-venv.sh
	status=0; \
	$(PYTHON) benches/e2e.py $(E2E_PRESETS) --repeat $(or $(BENCH_E2E_REPEAT),3) $(if $(BENCH_E2E_SYSTEMS),--systems $(BENCH_E2E_SYSTEMS)) || status=$$?; \
	if [ -f benches/ovn_e2e.py ]; then $(PYTHON) benches/ovn_e2e.py --presets $(E2E_PRESETS) --repeat $(or $(BENCH_E2E_REPEAT),3) || status=$$?; fi; \
	exit $$status

bench-rust: ## pure-Rust criterion benchmarks on the seeded workloads (compile p10-p1000, sessions p100-p10000; SGFLOWS_BENCH_PRESETS / SGFLOWS_BENCH_SESSION)
	mkdir -p target/bench-models
	for p in p10 p100 p1000 p10000; do $(PYTHON) benches/workload.py --preset $$p -o target/bench-models/$$p.json; done
	cargo bench --bench compile
