# jupyter-burst developer tasks. GNU make, bash.
#   make venv   .venv with the package installed editable (+ test and torch extras) and
#               the labextension built and linked into .venv/share/jupyter/labextensions
#   make test   lint (ruff, import contracts), the frontend unit tests (vitest) and the whole pytest suite (what .ci/run runs)
#   make lab    JupyterLab on the demo notebook
#   make corpus every notebook of tests/corpus run plainly and under %%burst, compared cell by cell
#   make soak   the pytest suite SOAK_RUNS (5) times in a row, one line per run
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test
.DELETE_ON_ERROR:

VENV := .venv
PY := $(VENV)/bin/python
PIP_INSTALL := $(PY) -m pip install -c constraints.txt
CHROMIUM := /usr/bin/chromium
SSHD := /usr/sbin/sshd
# jlpm and jupyter-builder (called by package.json scripts) come from the venv.
WITH_VENV := PATH="$(CURDIR)/$(VENV)/bin:$$PATH"
RUFF_PATHS := jupyter_burst tests $(wildcard bench)
LABEXT_SOURCES := $(wildcard src/*.ts src/*.tsx style/* schema/*.json) \
	package.json tsconfig.json yarn.lock .yarnrc.yml
LABEXT_LINK := $(VENV)/share/jupyter/labextensions/jupyter-burst

COMMA := ,
# Test processes side by side: most of a test is waiting on the kernels, schedulers and
# workers it starts (idle timers, lifetimes, a cloud's deadline), so on 2 cores three keep
# the machine busier than two: 743 s against 1129 s for the same 607 tests, one run each
# on this 2-core machine the same evening (two had left about a quarter of the CPU idle).
TEST_WORKERS ?= 3

# `pip install -e .` (its build hook builds labextension/ once), then link the build into
# the venv so that `make labextension` rebuilds show without reinstalling. pip would write
# the wheel's shared data through that link into labextension/ itself (install.json, which
# then clashes with the shared-data entry of the next build), so unlink before pip runs.
define pip_editable
	if [ -L $(LABEXT_LINK) ]; then rm $(LABEXT_LINK); fi
	rm -f labextension/install.json
	$(PIP_INSTALL) $(2) -e "$(1)"
	$(WITH_VENV) $(VENV)/bin/jupyter-builder develop --overwrite .
endef

.PHONY: venv wheelhouse labextension chromium sshd iproute2 test galata soak lint demo corpus lab bench gpu-check aws-smoke lambda-smoke gcp-smoke clean distclean

venv: $(VENV)/.stamp

$(VENV)/.stamp: pyproject.toml constraints.txt package.json
	@if [ ! -x $(PY) ]; then \
		if command -v python3.11 >/dev/null; then python3.11 -m venv $(VENV); \
		else python3 -m venv $(VENV); fi; \
	fi
	$(call pip_editable,.[test$(COMMA)torch])
	touch $@

# The package index of the emulated cloud (tests/notebook_env.py): bare machines there
# install the notebook's environment from this folder, never from the network. The wheels
# of a small notebook environment (the runtime, a kernel, the AWS client, one package a
# bare machine lacks) and of jupyter-burst's build backend, at the test venv's versions.
WHEELHOUSE := .wheelhouse
WHEELHOUSE_PACKAGES := ipython dask distributed cloudpickle pyyaml xxhash psutil filelock \
	nvidia-ml-py fsspec bokeh ipykernel boto3 google-cloud-compute cryptography tabulate uv pip \
	hatchling hatch-jupyter-builder hatch-nodejs-version jupyter-builder editables

wheelhouse: $(WHEELHOUSE)/.stamp

$(WHEELHOUSE)/.stamp: $(VENV)/.stamp Makefile
	$(PY) -m pip freeze --exclude-editable > $(VENV)/freeze.txt
	$(PY) -m pip download --quiet --disable-pip-version-check -d $(WHEELHOUSE) \
		-c $(VENV)/freeze.txt $(WHEELHOUSE_PACKAGES)
	touch $@

# Rebuild the frontend when its sources change (the editable install only builds it once).
labextension: labextension/static/style.js

labextension/static/style.js: $(LABEXT_SOURCES) | $(VENV)/.stamp
	$(WITH_VENV) jlpm install
	$(WITH_VENV) jlpm build
	touch $@

# $(call debian_package,TEST,PACKAGES,WHY): install PACKAGES from Debian unless TEST holds
# (as root; anyone else is told the command).
define debian_package
	@if $(1); then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $(2); \
	else \
		echo "error: $(3); install with: sudo apt-get install $(2)" >&2; \
		exit 1; \
	fi
endef

chromium:
	$(call debian_package,[ -x $(CHROMIUM) ],chromium,the browser tests need Debian's chromium at $(CHROMIUM))

# The ssh provider's tests start a real sshd on 127.0.0.1 and log in with the ssh client.
sshd:
	$(call debian_package,[ -x $(SSHD) ] && command -v ssh >/dev/null,openssh-server openssh-client,the ssh provider tests need $(SSHD) and ssh)

# The hardening tests put a cluster and its client on two hosts (network namespaces joined
# by a veth pair) and cut the client's link.
iproute2:
	$(call debian_package,command -v ip >/dev/null,iproute2,the network tests need iproute2's ip (and root; elsewhere they are skipped))

test: venv wheelhouse labextension chromium sshd iproute2
	$(VENV)/bin/ruff check $(RUFF_PATHS)
	$(VENV)/bin/lint-imports
	$(WITH_VENV) jlpm lint:check
	$(WITH_VENV) jlpm test
	$(PY) -m pytest -n $(TEST_WORKERS) --durations=25 tests

# Galata (JupyterLab's own UI test tool) on the sidebar, with Debian's Chromium: ui-tests/,
# a project of its own as the extension template keeps it. Not in `make test`: its install
# alone (about 40 s) is more than the 20-minute budget has left, and tests/browser's
# Playwright tests cover the same and more.
galata: venv labextension chromium
	cd ui-tests && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(WITH_VENV) jlpm install
	cd ui-tests && $(WITH_VENV) jlpm test

# The whole pytest suite SOAK_RUNS times from this checkout, one line per run (its result,
# its seconds, pytest's summary); every run's log in .soak/. Non-zero unless every run
# passed: a test that fails once in N is a bug to find, not a rerun to hope for.
SOAK_RUNS ?= 5
soak: venv wheelhouse labextension chromium sshd iproute2
	@mkdir -p .soak; failed=0; \
	for i in $$(seq 1 $(SOAK_RUNS)); do \
		start=$$(date +%s); \
		if $(PY) -m pytest -n $(TEST_WORKERS) -q -p no:cacheprovider tests > .soak/run-$$i.log 2>&1; \
		then result=passed; else result=FAILED; failed=$$((failed + 1)); fi; \
		echo "soak run $$i/$(SOAK_RUNS): $$result in $$(( $$(date +%s) - start )) s: $$(tail -n 1 .soak/run-$$i.log)"; \
		grep -E '^(FAILED|ERROR) ' .soak/run-$$i.log || true; \
	done; \
	echo "soak: $$(( $(SOAK_RUNS) - failed ))/$(SOAK_RUNS) runs passed (logs in .soak/)"; \
	test $$failed -eq 0

# ruff, and the import-linter contracts of pyproject.toml: which folder may import which
# (the folder a module sits in says which process runs it), and no import cycles.
lint: venv
	$(VENV)/bin/ruff check $(RUFF_PATHS)
	$(VENV)/bin/lint-imports

# Both demo notebooks headless (state in .burst-demo/): per notebook its cells, the jobs'
# ranks, a resume, the checkpoints kept and the cost; non-zero on anything unexpected.
demo: venv
	$(PY) -m jupyter_burst.tools.demo notebooks/quickstart.ipynb notebooks/training.ipynb

# The differential proof (tests/corpus/README.md): each corpus notebook through two real
# kernels, plainly and with %%burst on every cell; a table per notebook and the line
# `N/N cells equivalent`; non-zero unless every cell is (about 2 minutes on 2 cores).
corpus: venv
	$(PY) -m tests.corpus.run

lab: venv labextension
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 notebooks/quickstart.ipynb

# Not part of the tests; non-zero when a target is missed. BENCH_ARGS="--profile --write"
# also prints the breakdowns and rewrites the table in bench/README.md.
BENCH_ARGS ?=
bench: venv
	$(call pip_editable,.[bench],-q)
	$(PY) -m bench $(BENCH_ARGS)

# What only a GPU shows (bench/gpu_check.py): a gpus=1 cell with NCCL DDP and FSDP on the
# local provider, and %burst estimate against torch.cuda.max_memory_allocated; one table, in
# under 5 minutes. Without a CUDA device it says so in one line and exits 0.
# GPU_CHECK_ARGS=--write puts the table into bench/README.md.
GPU_CHECK_ARGS ?=
gpu-check: venv
	$(PY) -m bench.gpu_check $(GPU_CHECK_ARGS)

# One real cell on one real AWS GPU with your account (a few cents); see README.
aws-smoke: venv
	$(PY) -m jupyter_burst.tools.smoke

# One real cell on one real Lambda Cloud (or GCP) GPU with your account (cents); see README.
lambda-smoke: venv
	$(PY) -m jupyter_burst.tools.cloud_smoke lambda

gcp-smoke: venv
	$(PY) -m jupyter_burst.tools.cloud_smoke gcp

clean:
	rm -rf lib labextension node_modules tsconfig.tsbuildinfo .yarn/cache \
		.yarn/install-state.gz build dist *.egg-info .pytest_cache .ruff_cache test-artifacts .soak
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
