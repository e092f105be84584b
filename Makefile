# smtpapi-milter: `make demo` shows it working, `make test` proves it. Both install what
# they need on a fresh Debian machine (apt as root, a .venv here).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := gcc libmilter-dev postfix swaks miltertest postgresql
CORPUS ?= $(abspath ../shared/corpus)

.PHONY: all demo test lint unit bench fuzz deps venv clean

all: test

# System packages: only what is missing, so a warm machine pays nothing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv python3-dev"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root for apt-get install$$missing" >&2; exit 1; fi; \
	  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml setup.cfg | deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: deps $(STAMP)

lint: venv
	$(VENV)/bin/ruff check milter tests policies bench tools
	$(VENV)/bin/ruff format --check milter tests policies bench tools

unit: venv
	SMTPAPI_CORPUS=$(CORPUS) $(VENV)/bin/pytest -q

test: lint unit

demo: venv
	@SMTPAPI_CORPUS=$(CORPUS) $(PY) tools/demo_rewrite.py

bench: venv
	SMTPAPI_CORPUS=$(CORPUS) $(PY) bench/rewrite_bench.py
	SMTPAPI_CORPUS=$(CORPUS) $(PY) bench/hostile_bench.py
	SMTPAPI_CORPUS=$(CORPUS) $(PY) bench/memory_bench.py

# Every atheris target for FUZZ_SECONDS each; FUZZ_DIR keeps corpora and reproducers.
FUZZ_SECONDS ?= 600
FUZZ_DIR ?=
fuzz: venv
	SMTPAPI_CORPUS=$(CORPUS) $(PY) -m tests.fuzz.run --seconds $(FUZZ_SECONDS) \
	  $(if $(FUZZ_DIR),--workdir $(FUZZ_DIR))

clean:
	rm -rf $(VENV) build dist *.egg-info milter/*.egg-info .pytest_cache .ruff_cache
