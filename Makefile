# mcpfs: `make run` mounts with the embedded defaults, `make test` sets up and runs the suite.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
MOUNT ?= ./mnt
STAMP := $(VENV)/.installed

.PHONY: run test setup sysdeps bench vectors clean

sysdeps:
	@need=""; \
	for pkg in fuse3 libfuse3-dev pkg-config attr rsync $(PKGS); do \
	  dpkg -s $$pkg >/dev/null 2>&1 || need="$$need $$pkg"; \
	done; \
	if [ -n "$$need" ]; then \
	  echo "installing system packages:$$need"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$need >/dev/null; \
	fi

$(STAMP): pyproject.toml
	$(MAKE) sysdeps
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test,fuse]'
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(VPY) -m pytest -q

run: setup
	mkdir -p $(MOUNT)
	$(VENV)/bin/mcpfs mount $(MOUNT) --foreground

bench: setup
	$(MAKE) sysdeps PKGS="rclone s3fs"
	$(VPY) -m pip install -q -e '.[bench]'
	$(VPY) -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
