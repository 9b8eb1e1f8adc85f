# kinhbac-edge: `make demo` runs the agent against an emulated site; `make test` passes the suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help venv demo test lint typecheck schemas runconfig docs-check bench mutate clean i18n

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

GST_PROBE := import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); \
  from gi.repository import Gst; Gst.init(None); assert Gst.ElementFactory.find('rtpjpegpay') and Gst.ElementFactory.find('jpegenc')
GST_APT := python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good

$(STAMP): pyproject.toml
	@command -v mosquitto >/dev/null || { echo "installing mosquitto (Debian package)"; \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto) >/dev/null \
	  || echo "warning: mosquitto is not installed and could not be installed: apt-get install mosquitto"; }
	@/usr/bin/python3 -c "$(GST_PROBE)" 2>/dev/null || { echo "installing the GStreamer RTSP server (Debian packages)"; \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(GST_APT)) >/dev/null \
	  || echo "warning: the RTSP camera test needs: apt-get install $(GST_APT)"; }
	@{ command -v chromium && command -v chromedriver; } >/dev/null || { echo "installing chromium and chromium-driver (Debian packages, for the local page's browser test)"; \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver) >/dev/null \
	  || echo "warning: the local page's browser test needs: apt-get install chromium chromium-driver"; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)  ## create .venv and install the project with its dev extra

demo: $(STAMP)  ## run the agent against an emulated site, with a broker and the reference receiver
	$(PY) -m agent demo

lint: $(STAMP)  ## ruff, mypy and the import contract (folders import downward only)
	$(PY) -m ruff check .
	$(PY) -m mypy kernel drivers models sync control agent provisioning hil
	$(VENV)/bin/lint-imports

typecheck: lint

test: $(STAMP) lint  ## lint, then the whole test suite (two workers: most tests wait on brokers and devices)
	$(PY) -m pytest -q -p no:cacheprovider -n 2

schemas: $(STAMP)  ## regenerate the JSON Schemas in docs/schemas
	$(PY) -m agent schemas --write docs/schemas

runconfig: $(STAMP)  ## regenerate agent/runconfig.py (the running agent's config types) from the pydantic models
	$(PY) tools/gen_runconfig.py

bench: $(STAMP)  ## run every benchmark in bench/ and print figures
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

mutate: $(STAMP)  ## mutation testing of the cores (docs/testing.md); one module: make mutate MODULE=sync.store
	rm -rf mutants
	$(VENV)/bin/mutmut run $(if $(MODULE),"$(MODULE).*",)
	$(VENV)/bin/mutmut results

i18n: $(STAMP)  ## extract technician-facing messages, update the .po catalogues, compile the .mo files
	$(VENV)/bin/pybabel extract -F babel.cfg -k tr --no-location --sort-output -o kernel/locale/kinhbac_edge.pot .
	$(VENV)/bin/pybabel update -i kernel/locale/kinhbac_edge.pot -d kernel/locale -D kinhbac_edge -l vi -w 100 --no-fuzzy-matching
	$(VENV)/bin/pybabel compile -d kernel/locale -D kinhbac_edge --statistics

clean:  ## remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis mutants
