# SQAL: the two commands of the README, and the developer's habits.
# Every target that runs code first runs scripts/setup.sh (idempotent; seconds when done).

VENV   := .venv
PY     := $(VENV)/bin/python
SQAL   := $(VENV)/bin/sqal
PYTEST_ARGS ?=

.PHONY: setup test demo lint format bench soak clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	bash scripts/demo.sh

lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	$(PY) -m bench.codec

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
