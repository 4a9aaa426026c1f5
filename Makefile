# SQAL: the two commands of the README, and the developer's habits.
# Every target that runs code first runs scripts/setup.sh (idempotent; seconds when done).

VENV   := .venv
PY     := $(VENV)/bin/python
SQAL   := $(VENV)/bin/sqal
PYTEST_ARGS ?=

.PHONY: setup test demo lint format docs constraints bench soak clean

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

# docs/cli.md: every command's --help, generated (tests/test_docs.py fails while it is stale).
docs: setup
	$(PY) -m app.cli_docs > docs/cli.md.tmp
	mv docs/cli.md.tmp docs/cli.md

# constraints.txt: the pins setup.sh and the Dockerfile install, from what .venv holds now (after a
# deliberate upgrade whose tests pass). Its comment lines are kept.
constraints: setup
	(grep '^#' constraints.txt; $(VENV)/bin/pip freeze --exclude-editable | grep -v '^#' \
		| LC_ALL=C sort -f) > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

# The long chaos form: 4,000 samples per scenario, PostgreSQL down 60 s, the broker frozen 10 s,
# 10,000 hostile payloads, 40,000 samples at full speed, a backlog of 20,000 samples through the
# plant-to-central bridge, 5,000 random command lines (make test runs the same suites short).
soak: setup
	$(PY) -m pytest tests/chaos -m chaos --samples 4000 --outage-s 60 --freeze-s 10 --fuzz-count 10000 \
		--overload-samples 40000 --bridge-backlog 20000
	$(PY) -m pytest tests/test_cli_fuzz.py --cli-fuzz-count 5000

bench: setup
	$(PY) -m bench.pipeline

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
