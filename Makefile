# Two entry points do all set-up on a fresh machine:
#   make demo   - create .venv if needed, install debias, run `debias demo` on real data
#   make test   - create .venv if needed, install debias[dev], run the test suite
#   (make test-quick skips the tests marked slow)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DEBIAS_DATA ?= $(abspath ../shared/data)

.PHONY: demo test test-quick install lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/debias demo

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15

# The suite without the tests marked slow (end-to-end runs, notebooks, processes): for
# development; CI runs `make test`, everything.
test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" --durations=5

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	bash bench/run

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
