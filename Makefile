# Two commands a newcomer needs: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv demo test lint bench image clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(VENV)/bin/batchctl demo

test: venv lint
	$(VENV)/bin/pytest -n 2 --dist loadfile $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: venv
	$(VENV)/bin/python bench/run

# The container image, built with buildah (as root): on a Debian-built stand-in base when the
# Dockerfile's python base cannot be pulled. Prints the image name; see image/build.py.
image:
	$(PYTHON) image/build.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
