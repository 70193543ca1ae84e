# Two commands matter: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Debian packages the demo needs: ffmpeg (camera frames) and GStreamer's RTSP server (the simulated camera's stream).
DEMO_APT_PACKAGES := ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly
# Debian packages the test suite needs (real peers: brokers, serial lines, cameras...).
TEST_APT_PACKAGES := mosquitto openssl socat redis-server mariadb-server victoria-metrics $(DEMO_APT_PACKAGES)

.PHONY: demo ai-demo test lint typecheck unit proto clean venv

$(VENV)/.base:
	@bash tools/ensure-python.sh "$(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@touch $@

$(VENV)/.run: $(VENV)/.base pyproject.toml
	$(PY) -m pip install --quiet -e '.[onvif,ai]'
	@touch $@

$(VENV)/.dev: $(VENV)/.base pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,onvif,k8s,ai,db]'
	@touch $@ $(VENV)/.run

venv: $(VENV)/.run

## demo: the embedded stack (agent on crds/samples), live device table, Ctrl-C to stop.
demo: $(VENV)/.run
	@bash tools/ensure-apt.sh $(DEMO_APT_PACKAGES)
	$(VENV)/bin/mapper up --devices crds/samples

## ai-demo: a drifting Modbus machine with Sedna-style joint inference and incremental learning, live (Ctrl-C stops).
ai-demo: $(VENV)/.run
	$(VENV)/bin/mapper ai demo

## test: install what the tests need (Debian packages included), lint, type-check, run the suite.
test: $(VENV)/.dev
	@bash tools/ensure-apt.sh $(TEST_APT_PACKAGES)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest

unit: $(VENV)/.dev
	$(VENV)/bin/pytest -x -q

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

## proto: regenerate dmi/v1beta1 stubs after editing api.proto.
proto: $(VENV)/.dev
	$(PY) tools/gen_proto.py

clean:
	rm -rf $(VENV) .mapper .pytest_cache .mypy_cache .ruff_cache *.egg-info
