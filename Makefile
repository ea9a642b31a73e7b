# Two commands on a fresh machine (Python 3.11 + pip):  make demo   |   make test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install install-test demo test lint bench clean

# ultralytics depends on the plain opencv-python wheel; both wheels ship the same `cv2` folder, so whichever
# installed last wins. Keep exactly one: the contrib build (adds cv2.saliency). Rerun after every install that
# may resolve ultralytics' requirements again.
define keep_contrib_opencv
	$(BIN)/pip uninstall --quiet --yes opencv-python opencv-python-headless opencv-contrib-python || true
	$(BIN)/pip install --quiet --force-reinstall --no-deps "opencv-contrib-python-headless==$$($(BIN)/pip show opencv-contrib-python-headless | sed -n 's/^Version: //p')"
	$(BIN)/python -c "import cv2; assert hasattr(cv2, 'saliency'), 'cv2 lacks the contrib modules'"
endef

# What the demo needs: the package and its runtime dependencies, nothing installed system-wide
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	$(keep_contrib_opencv)
	touch $(STAMP)

# What the tests need on top: the dev tools, and two system packages (as root, through apt-get when missing)
$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	$(keep_contrib_opencv)
	# the report's browser test drives Debian's chromium through Playwright (never `playwright install`)
	command -v chromium >/dev/null || { command -v apt-get >/dev/null || { echo "error: the tests need the chromium browser and apt-get is not available: install chromium (Debian/Ubuntu package 'chromium') yourself" >&2; exit 1; }; apt-get update -qq && apt-get install -y -qq chromium; }
	# the Postgres e2e test starts a throwaway PostgreSQL server from the machine's binaries
	{ command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; } || { command -v apt-get >/dev/null || { echo "error: the tests need PostgreSQL server binaries and apt-get is not available: install PostgreSQL yourself" >&2; exit 1; }; apt-get update -qq && apt-get install -y -qq postgresql; }
	touch $(TEST_STAMP)

install: $(STAMP)

install-test: $(TEST_STAMP)

demo: $(STAMP)
	$(BIN)/sc-imagenet demo --via-deployment

test: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: $(TEST_STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/index.py
	$(BIN)/python benchmarks/detect.py --batch 1 16

clean:
	rm -rf builds .prefect .pytest_cache
