# Two entry points for a fresh Debian machine: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
APT_TEST_PACKAGES := sip-tester baresip-core nftables iproute2 faketime linphone-cli chromium dnsmasq-base hostapd
APT_BENCH_PACKAGES := sip-tester kamailio

.PHONY: run test lint bench venv apt-test apt-bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Installs the Debian packages in $(1) that are missing (needs root or sudo).
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
endef

apt-test:
	$(call apt_install,$(APT_TEST_PACKAGES))

apt-bench:
	$(call apt_install,$(APT_BENCH_PACKAGES))

run: venv
	$(VENV)/bin/meshsip run $(ARGS)

lint: venv
	$(VENV)/bin/ruff check overlay appliance tests bench image-build

test: venv provision-venv apt-test lint
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

bench: venv apt-bench
	$(PY) bench/run_all.py

# The simulator's cold-start sweep at the full counts (about 5 minutes on 2 cores).
.PHONY: coldstart
coldstart: venv
	COLDSTART_SEEDS=1000 $(PY) -m pytest -q tests/test_sim_coldstart.py

clean:
	rm -rf $(VENV) .pytest_cache

# A bed of 5 network namespaces with a node in each, until Ctrl-C (root only; tests/meshbed).
.PHONY: mesh-demo
mesh-demo: venv
	@[ "$$(id -u)" = 0 ] || { echo "mesh-demo needs root (network namespaces): sudo make mesh-demo"; exit 1; }
	$(PY) tests/meshbed/demo.py $(ARGS)

# Provisioning (provisioning/, Ansible): the controller's Ansible goes into the project venv.
APT_PROVISION_PACKAGES := mmdebstrap dnsmasq-base hostapd
.PHONY: provision provision-venv test-provision

$(VENV)/.provision: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test,provision]'
	touch $@

provision-venv: $(VENV)/.provision

# make provision INVENTORY=path/to/inventory [ARGS="--limit box3 --check"]
provision: provision-venv
	@[ -n "$(INVENTORY)" ] || { echo "usage: make provision INVENTORY=provisioning/inventory/example"; exit 2; }
	cd provisioning && ANSIBLE_CONFIG=ansible.cfg ../$(VENV)/bin/ansible-playbook -i "$(abspath $(INVENTORY))" site.yml $(ARGS)

# The playbook applied twice to a Debian 12 root built with mmdebstrap, and with -c local on
# a box of the namespace test bed (root; about 10 minutes).
test-provision: venv provision-venv
	$(call apt_install,$(APT_PROVISION_PACKAGES))
	$(PY) -m pytest -q -rs -rP -m provision $(PYTEST_ARGS) tests/test_provision_chroot.py \
	  tests/test_provision_local.py

# Coverage-guided fuzzing (atheris) of the SIP parser and of what reaches a box from its
# overlay peers, FUZZ_SECONDS each, niced; findings land in .fuzz/<target>/ (tests/fuzz/run.py).
FUZZ_SECONDS ?= 600
.PHONY: fuzz-sip fuzz-overlay
# Where atheris has no wheel (it builds only with clang), run.py falls back to plain mutations.
$(VENV)/.fuzz-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[fuzz]' || echo "no atheris here: random mutations instead"
	touch $@

fuzz-sip fuzz-overlay: fuzz-%: $(VENV)/.fuzz-installed
	nice $(PY) tests/fuzz/run.py $* --seconds $(FUZZ_SECONDS)

# Flashable images (image-build/, root; see README "Flashing an image"). Builds run at low
# priority; the root file system tarball is cached in ~/.cache/meshsip-image.
APT_IMAGE_PACKAGES := mmdebstrap genimage mtools dosfstools e2fsprogs bmap-tools xz-utils \
	qemu-user-static binfmt-support qemu-system-x86 qemu-system-arm ovmf dnsmasq-base fdisk
.PHONY: image image-amd64 test-image apt-image

apt-image:
	$(call apt_install,$(APT_IMAGE_PACKAGES))

image: provision-venv apt-image
	nice -n 10 $(PY) image-build/build.py arm64

image-amd64: provision-venv apt-image
	nice -n 10 $(PY) image-build/build.py amd64

# Boots the built images under qemu (TCG) on the namespace test bed (slow: minutes each).
test-image: venv apt-image
	$(PY) -m pytest -q -rs -m image $(PYTEST_ARGS) tests/test_image_inspect.py tests/test_image_boot.py
