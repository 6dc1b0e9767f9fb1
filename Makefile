# quantdb-ops: the two commands are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export CONTAINERS_CONF := $(CURDIR)/lab/containers.conf
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
LAB_DB    := qdb-lab-db1
DB        := quant_platform
export SQL

.PHONY: help setup demo dashboard test bench lab-up lab-down site sample-data load-sample audit backup psql lint yamllint ansible-lint pytest molecule clean

# Demo data: 100 tickers per region (KR, US) x 3 years on the XKRX/XNYS calendars.
DEMO_DATA := data/demo.csv.gz

help:
	@echo "make demo      lab up + site.yml + summary (main job)"
	@echo "make test      yamllint, ansible-lint, pytest, every Molecule scenario"
	@echo "make bench     2,500 tickers x 10 years, tuned vs naive (BENCH_SCALE=small: a quick run)"
	@echo "make dashboard every panel of the Grafana dashboard answered by the lab's Prometheus; docs/dashboard.png"
	@echo "make lab-up | lab-down | site | psql SQL=\"...\""

setup:
	@bash scripts/setup.sh

lab-up: setup
	ansible-playbook -i inventory/lab playbooks/lab.yml

lab-down: setup
	ansible-playbook -i inventory/lab playbooks/lab.yml -e lab_state=absent

site: setup
	ansible-playbook -i inventory/lab playbooks/site.yml

$(DEMO_DATA) $(DEMO_DATA).json: tools/sample_data.py
	@mkdir -p data
	python tools/sample_data.py --tickers 100 --years 3 --out $(DEMO_DATA) --manifest $(DEMO_DATA).json

sample-data: setup $(DEMO_DATA) $(DEMO_DATA).json

load-sample: sample-data
	ansible-playbook -i inventory/lab playbooks/ingest.yml -e ingest_src=$(DEMO_DATA) \
	  -e ingest_tickers_src=$(DEMO_DATA).tickers -e ingest_sessions_src=$(DEMO_DATA).sessions

# The sample data ends on a fixed day (reproducible): audit it as of that day, not the clock.
DEMO_AS_OF = $(shell python -c 'import json; print(json.load(open("$(DEMO_DATA).json"))["end"])' 2>/dev/null)

audit: setup
	@mkdir -p reports
	@[ -n "$(DEMO_AS_OF)" ] || { echo "audit: no $(DEMO_DATA).json; run make load-sample first" >&2; exit 2; }
	@echo "audit: as of $(DEMO_AS_OF), the last day of the sample data ($(DEMO_DATA).json)"
	ansible-playbook -i inventory/lab playbooks/quality_audit.yml -e quality_audit_report=$(CURDIR)/reports/quality.json \
	  -e quality_audit_as_of=$(DEMO_AS_OF)

# A full pgBackRest backup of the lab (docs/backup.md); BACKUP_TYPE=diff|incr|logical for the others.
backup: setup
	ansible-playbook -i inventory/lab playbooks/backup.yml -e backup_type=$(or $(BACKUP_TYPE),full)

demo: lab-up site load-sample audit backup
	@bash scripts/demo-summary.sh

# The Grafana dashboard without Grafana, on the lab's Prometheus (qdb-lab-mon1, 127.0.0.1:59090):
# every panel's PromQL must return data; then the panels drawn to docs/dashboard.png.
dashboard: setup
	python tools/dashboard.py check --prometheus http://127.0.0.1:59090
	python tools/dashboard.py png --prometheus http://127.0.0.1:59090 --out docs/dashboard.png --minutes $(or $(MINUTES),30) --rate-interval 10m

# Benchmark (docs/benchmarks.md): the lab, converged, then scripts/bench.sh.
bench: lab-up site
	@bash scripts/bench.sh

# PgBouncer under 500 clients with max_connections 100, against direct connections (docs/pgbouncer.md):
# pgbench inside the lab's database container; bench/results.json key pgbouncer_500_clients.
.PHONY: bench-pgbouncer
bench-pgbouncer: setup
	python bench/pgbouncer.py

psql:
	@[ -n "$$SQL" ] || { echo 'usage: make psql SQL="select 1"' >&2; exit 2; }
	@printf '%s\n' "$$SQL" | podman exec -i -u postgres $(LAB_DB) psql -XAtq -v ON_ERROR_STOP=1 -d $(DB)

yamllint: setup
	yamllint -s .

ansible-lint: setup
	ansible-lint --profile production

lint: yamllint ansible-lint

pytest: setup
	bash scripts/run-pytest.sh tests

molecule: setup
	bash scripts/molecule-lanes.sh

# ansible-test sanity on the modules (a throwaway collection copy), and their ansible-doc pages.
.PHONY: sanity module-docs
sanity: setup
	bash scripts/sanity.sh

module-docs: setup
	bash scripts/module-docs.sh

test: setup
	@bash scripts/test.sh

clean: lab-down
