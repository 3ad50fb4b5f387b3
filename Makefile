# Two set-up commands for a newcomer: `make demo` and `make test`. Everything else is internal.
# The dev environment (.venv/) needs no ROS distro: ROS 2 Jazzy comes from PyPI wheels and the
# interfaces are built with plain cmake from the same CMakeLists.txt colcon uses on a robot.

PYTHON  ?= python3
VENV    := $(CURDIR)/.venv
PY      := $(VENV)/bin/python
BUILD   := $(CURDIR)/build
CMAKE_ARGS := -DCMAKE_INSTALL_PREFIX=$(VENV) -DCMAKE_PREFIX_PATH=$(VENV) \
              -DPython3_EXECUTABLE=$(PY) -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release

export PATH := $(VENV)/bin:$(PATH)
export PYTHONPATH := $(CURDIR)
# Assets (videos, default backbone) go to the clone's .cache/ (eventful_perception.assets.cache_dir),
# so CI caches nothing outside the clone.
# Tests and the demo keep DDS traffic on this machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
# A per-run DDS domain, so parallel runs on one machine never see each other.
export ROS_DOMAIN_ID ?= $(shell echo $$(( $$$$ % 100 + 1 )))

# configure + build + install one CMake package into the venv; show the log's tail on failure.
define cmake_install
{ cmake -S $(1) -B $(BUILD)/$(2) $(CMAKE_ARGS) && cmake --build $(BUILD)/$(2) -j2 \
  && cmake --install $(BUILD)/$(2); } > $(BUILD)/$(2).log 2>&1 || { tail -40 $(BUILD)/$(2).log; exit 1; }
endef

.PHONY: demo test bench soak build setup assets clean help
.DEFAULT_GOAL := help

help:
	@echo "make demo   set up (first run only), then run the detector demo on a real video"
	@echo "make test   set up (first run only), then run the whole test suite"
	@echo "make bench  eventful vs dense on real frames in one process (speedup, GFLOPs, mAP50; out/bench/)"
	@echo "make soak   10 000 frames through the node with changing budget/battery/CPU load"

demo: setup
	$(PY) -m eventful_perception.demo

test: setup
	$(PY) -m pytest test

soak: setup
	EVENTFUL_SOAK_FRAMES=10000 $(PY) -m pytest test/test_node_soak.py -s -q

bench: setup
	$(PY) -m eventful_perception.cli bench vtest.avi --budgets 1.0,0.5,0.25,0.1 --frames 20 \
	    --json out/bench/bench.json --plot out/bench/bench.png

setup: build assets

# Python packages (ROS 2 wheels, torch, ...). Re-run only when a requirements file changes.
$(VENV)/.deps: env/requirements-ros.txt env/requirements.txt env/requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r env/requirements-ros.txt \
	    -r env/requirements.txt -r env/requirements-dev.txt
	$(PY) env/fix_cmake_exports.py $(VENV)
	touch $@

# Dev-only vision_msgs (no wheel exists); never installed on a robot.
$(VENV)/.vision_msgs: $(VENV)/.deps $(wildcard dev/vision_msgs/msg/*.msg) dev/vision_msgs/CMakeLists.txt
	@mkdir -p $(BUILD)
	@echo "building dev-only vision_msgs into .venv (log: build/vision_msgs.log)"
	@$(call cmake_install,dev/vision_msgs,vision_msgs)
	touch $@

# This package, through the very CMakeLists.txt colcon uses (messages, sources, launch, config).
build: $(VENV)/.vision_msgs
	@mkdir -p $(BUILD)
	@echo "building eventful_perception into .venv (log: build/eventful_perception.log)"
	@$(call cmake_install,.,eventful_perception)

# Real videos and the default pretrained backbone; idempotent (checksums).
assets: build
	$(PY) -m eventful_perception.assets

clean:
	rm -rf $(BUILD)
