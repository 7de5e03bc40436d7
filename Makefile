# Two commands for a new user: `make demo` and `make test`. Both create ./.venv when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test install clean-demo

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,serve,faces,video]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m stargan.cli demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

clean-demo:
	rm -rf data/demo runs
