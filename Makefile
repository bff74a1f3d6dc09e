# The two set-up commands: `make demo` (install, then build the embedded default) and
# `make test` (install, then run the tests). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL ?= demo-out/model.pt
TARGET ?= jetson-nano

.PHONY: install demo test test-all lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Train a small ResNet-20 on scikit-learn's bundled digits if no model is given, then build it.
demo: install
	@if [ ! -f "$(MODEL)" ]; then \
		$(BIN)/edgeprune train --arch resnet20 --data digits --epochs 15 --out $(MODEL); fi
	$(BIN)/edgeprune build $(MODEL) --target $(TARGET) --data digits --out demo-out/$(TARGET) \
		--stages 3 --max-error-increase 0.1 --finetune-epochs 3

test: install
	$(BIN)/python -m pytest

test-all: install
	$(BIN)/python -m pytest -m "" 

lint: install
	$(BIN)/ruff check toolchain tests benchmarks

clean:
	rm -rf demo-out .pytest_cache
