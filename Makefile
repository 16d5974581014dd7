# Set-up and entry points. `make test` and `make demo` work on a fresh machine: they create
# .venv, install the pinned stack (constraints.txt) and the speech synthesisers (apt, when running as root).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Speech synthesis for the test and quickstart corpora: espeak-ng, festival with two diphone voices
# (text2wave), and sox (the festival corpus's speaker variants).
APT_PACKAGES := espeak-ng festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox
export WANDB_MODE ?= offline
export PYTHONUNBUFFERED := 1

.PHONY: setup test test-fast test-latest demo dialogue bench clean

setup: $(STAMP)

$(STAMP): setup.cfg constraints.txt pyproject.toml
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    (apt-get update -q && apt-get install -y -q $(APT_PACKAGES)) || echo "warning: could not install $(APT_PACKAGES)"; \
	  else echo "note: some of $(APT_PACKAGES) are missing; install them with: sudo apt-get install $(APT_PACKAGES)"; fi; \
	fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	$(PY) -m pip install -c constraints.txt -e '.[dev,xla,eval,encodec,hubert,sweep]'
	$(PY) -m pip install -q -c constraints.txt --no-deps --force-reinstall webrtcvad-wheels
	$(PY) -c "import pocketsphinx, resemblyzer"
	@touch $@

test: $(STAMP)
	$(PY) -m pytest -q

# Everything but the end-to-end and learning runs (marked `slow`); the golden-loss test still covers training.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# The library where researchers work: a second venv with the newest torch from PyPI and whatever pip resolves
# for '.[dev,eval]' without constraints.txt (no torchaudio, encodec or torch_xla, so the torch-native DSP path
# of soundstorm/dsp.py runs and their tests skip), then the fast suite. Every run upgrades torch to the newest.
# LATEST_PIP_CONFIG: pip's config file for this venv; /dev/null ignores machine-wide settings (a pip.conf that
# caps torch, as on this project's machines); set it to your own file if you need one (e.g. a mirror).
VENV_LATEST ?= .venv-latest
LATEST_PIP_CONFIG ?= /dev/null
PY_LATEST := $(VENV_LATEST)/bin/python
PIP_LATEST := PIP_CONFIG_FILE=$(LATEST_PIP_CONFIG) $(PY_LATEST) -m pip

test-latest:
	@test -x $(PY_LATEST) || $(PYTHON) -m venv $(VENV_LATEST)
	$(PIP_LATEST) install -q --upgrade pip wheel setuptools
	$(PIP_LATEST) install -q --upgrade torch
	$(PIP_LATEST) install -q -e '.[dev,eval]'
	$(PIP_LATEST) install -q --no-deps --force-reinstall webrtcvad-wheels
	@$(PIP_LATEST) show torch | grep -E '^(Name|Version):'
	$(PY_LATEST) -m pytest -q -m "not slow"

# The CPU quickstart end to end (experiments/quickstart_cpu/run.sh): festival corpus → tokens → ≤ 25 min
# of training → the speech table on held-out sentences. Leaves outputs/quickstart/{metrics.json,
# speech_table.md, speech_table.png, speech_examples/, generated_30s.wav, spectrogram_30s.png, wandb/}.
# About 36 minutes from a fresh clone, set-up included, on a 2-core Intel Ice Lake VM (Xeon @ 2.80GHz, family 6
# model 106; docs/results/make_demo_fresh_clone_parallel_corpus.json); the time budgets make it about the same on any machine.
demo: $(STAMP)
	PYTHON=$(abspath $(PY)) bash experiments/quickstart_cpu/run.sh
	@echo "next: make dialogue (the paper's two-voice dialogue on this model, about 15 minutes)"

# The paper's showcase on top of `make demo`'s model (experiments/dialogue_cpu/run.sh): ~12 min of
# text-to-semantic training, then a six-turn, two-voice dialogue in outputs/quickstart/dialogue/.
# Its own target so that `make demo` stays within 40 minutes.
dialogue: $(STAMP)
	PYTHON=$(abspath $(PY)) bash experiments/dialogue_cpu/run.sh

bench: $(STAMP)
	$(VENV)/bin/soundstorm-bench duration_s=10 overwrite=true

clean:
	rm -rf $(VENV) $(VENV_LATEST) build dist *.egg-info outputs multirun
