# lnn_control: one environment folder (.venv/) made from nothing, then demo / test / bench.
# `make demo`  set up, then the closed-loop demo on the built-in simulator.
# `make test`  set up, then every test tier (unit, ros, lint).
# `make bench` set up, then the benchmarks (BENCH_MODE=quick for the CI smoke run).
# `make faults` fault injection over DDS: FAULT_MESSAGES (100000) fuzzed messages per robot + CPU hog.
# `make soak`   the node at 1 kHz across processes for SOAK_MINUTES (60); `make bench` runs a 5-minute one.

SHELL := /bin/bash
PYTHON ?= python3
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
BUILD := $(CURDIR)/build
FILTER ?= on
BENCH_MODE ?= full
FAULT_MESSAGES ?= 100000
SOAK_MINUTES ?= 60

export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: venv build demo test test-unit test-ros test-lint bench bench-quick faults soak clean distclean

venv: $(VENV)/.deps

$(VENV)/.deps: requirements/torch.txt requirements/ros.txt requirements/base.txt requirements/dev.txt requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -r requirements/torch.txt
	$(PIP) install -c requirements/constraints.txt -r requirements/ros.txt -r requirements/base.txt -r requirements/dev.txt
	# qpth (a benchmark reference only) declares an unparsable numpy pin: install it without deps.
	$(PIP) install --no-deps qpth==0.0.17
	$(PY) scripts/fix_ros_wheel_cmake.py
	touch $@

# The real ROS 2 build: rosidl generates lnn_control.msg, CMake installs the package into .venv
# (ament index, share/lnn_control, lib/lnn_control executables).
build: $(VENV)/.built

$(VENV)/.built: $(VENV)/.deps CMakeLists.txt package.xml $(wildcard msg/*.msg) $(wildcard scripts/*) $(shell find lnn_control barriernet -name "*.py") $(wildcard launch/*) $(wildcard config/*)
	VIRTUAL_ENV=$(VENV) PATH=$(VENV)/bin:$$PATH cmake -S . -B $(BUILD) \
	  -DCMAKE_INSTALL_PREFIX=$(VENV) -DCMAKE_PREFIX_PATH=$(VENV) \
	  -DPython3_EXECUTABLE=$(PY) -DBUILD_TESTING=OFF > $(BUILD).log 2>&1 || (cat $(BUILD).log; exit 1)
	VIRTUAL_ENV=$(VENV) PATH=$(VENV)/bin:$$PATH cmake --build $(BUILD) -j2 >> $(BUILD).log 2>&1 || (cat $(BUILD).log; exit 1)
	VIRTUAL_ENV=$(VENV) PATH=$(VENV)/bin:$$PATH cmake --install $(BUILD) >> $(BUILD).log 2>&1 || (cat $(BUILD).log; exit 1)
	cd /tmp && $(PY) -c "from lnn_control.msg import SafetyStatus"
	# the `lnn-control` console script (setup.py's entry point) for the CMake-installed package;
	# written by hand: an editable pip install would shadow that package (and its msg/) with the source tree
	printf '#!%s\nimport sys\n\nfrom lnn_control.cli import main\n\nsys.exit(main())\n' "$(PY)" > $(VENV)/bin/lnn-control
	chmod +x $(VENV)/bin/lnn-control
	cd /tmp && $(VENV)/bin/lnn-control --help > /dev/null
	touch $@

test: build
	$(PY) -m pytest test

test-unit: build
	$(PY) -m pytest test/unit

test-ros: build
	$(PY) -m pytest test/ros

test-lint: build
	$(PY) -m pytest test/lint

demo: build
	$(PY) -m lnn_control.ros.demo --filter $(FILTER) --out out/demo

bench: build
	$(PY) -m bench.run --mode $(BENCH_MODE)

bench-quick:
	$(MAKE) bench BENCH_MODE=quick

faults: build
	$(PY) scripts/faults.py --messages $(FAULT_MESSAGES) --hog

soak: build
	$(PY) scripts/soak.py --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(BUILD) $(BUILD).log out .pytest_cache .mypy_cache .ruff_cache

distclean: clean
	rm -rf $(VENV)
