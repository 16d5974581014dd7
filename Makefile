# Set-up and entry points. `make test` and `make demo` work on a fresh machine: they create
# .venv, install the pinned stack (constraints.txt) and the speech synthesisers (apt, when running as root).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Speech synthesis for the test corpora: espeak-ng and festival with two diphone voices (text2wave).
APT_PACKAGES := espeak-ng festival festvox-kallpc16k festvox-kdlpc16k
export WANDB_MODE ?= offline
export PYTHONUNBUFFERED := 1

.PHONY: setup test test-fast demo bench clean

setup: $(STAMP)

$(STAMP): setup.cfg constraints.txt pyproject.toml
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    (apt-get update -q && apt-get install -y -q $(APT_PACKAGES)) || echo "warning: could not install $(APT_PACKAGES)"; \
	  else echo "note: some of $(APT_PACKAGES) are missing; install them with: sudo apt-get install $(APT_PACKAGES)"; fi; \
	fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	$(PY) -m pip install -c constraints.txt -e '.[dev,xla,eval]'
	$(PY) -m pip install -q -c constraints.txt --no-deps --force-reinstall webrtcvad-wheels
	$(PY) -c "import pocketsphinx, resemblyzer"
	@touch $@

test: $(STAMP)
	$(PY) -m pytest -q

# The CPU quickstart end to end (experiments/quickstart_cpu/run.sh): espeak corpus → tokens → ~10 min
# of training → held-out evaluation. Leaves outputs/quickstart/{metrics.json, generated_30s.wav,
# spectrogram_30s.png, wandb/}.
demo: $(STAMP)
	PYTHON=$(abspath $(PY)) bash experiments/quickstart_cpu/run.sh

bench: $(STAMP)
	$(VENV)/bin/soundstorm-bench duration_s=10

clean:
	rm -rf $(VENV) build dist *.egg-info outputs multirun
