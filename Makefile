# The two commands README promises: `make demo` and `make test`. Both set up what is missing first.
.PHONY: setup check test test-fast demo image clean

setup:
	@scripts/setup

check: setup
	.venv/bin/ruff check src tests bench
	.venv/bin/mypy

test: setup
	.venv/bin/pytest -q

test-fast: setup
	.venv/bin/pytest -q -m "not vm"

demo: setup
	@scripts/demo

clean:
	rm -rf .venv build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
