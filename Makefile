# nodelet — see README.md. Targets run as root on Debian 12 for the
# integration tests; `make test` installs what it needs.

CARGO      ?= cargo
PREFIX     ?= /usr/local
BIN        := target/release/nodelet
DEBUG_BIN  := target/debug/nodelet
CONFIG_DIR ?= /etc/nodelet

.PHONY: all build release lint fmt test unit integration deps run bench install clean clean-test

all: build

build: deps
	$(CARGO) build --all-targets

release: deps
	$(CARGO) build --release

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Debian packages the tests need (registry, skopeo, busybox for test images,
# runc/crun for comparisons). Installed only when missing.
deps:
	@bash scripts/install-deps.sh

unit:
	$(CARGO) test --lib --bins

integration: deps
	$(CARGO) test --tests

test: deps lint
	$(CARGO) test --all-targets

# The main job. Until the daemon lands it validates the example configuration
# and pods; then it will run `nodelet daemon --config config/nodelet.yaml`.
# The main job: the daemon in the foreground on a scratch root, with the
# example pods of config/pods as static pods and their image built locally
# and imported under the name the manifests use (no network). Ctrl-C stops
# every pod and the daemon.
RUN_ROOT ?= /tmp/nodelet-run
run: deps build
	$(DEBUG_BIN) config validate config/nodelet.yaml
	$(DEBUG_BIN) validate config/pods
	mkdir -p $(RUN_ROOT)
	cargo run -q --example testbed -- $(RUN_ROOT)/layout >/dev/null
	$(DEBUG_BIN) --root $(RUN_ROOT)/root image import $(RUN_ROOT)/layout --name 127.0.0.1:5000/nodelet/busybox:1
	printf 'apiVersion: nodelet.dev/v1alpha1\nkind: NodeletConfiguration\nrootDir: $(RUN_ROOT)/root\nlogDir: $(RUN_ROOT)/logs\nsocket: $(RUN_ROOT)/nodelet.sock\nstaticPodPath: $(CURDIR)/config/pods\nnodeName: demo\n' > $(RUN_ROOT)/config.yaml
	@echo "nodelet daemon: static pods from config/pods; in another shell try"
	@echo "  $(DEBUG_BIN) --socket $(RUN_ROOT)/nodelet.sock get pods"
	@echo "  $(DEBUG_BIN) --socket $(RUN_ROOT)/nodelet.sock describe pod web-demo"
	@echo "  $(DEBUG_BIN) --socket $(RUN_ROOT)/nodelet.sock logs web-demo -c logger -f"
	@echo "Ctrl-C stops every pod and the daemon."
	$(DEBUG_BIN) -v info --config $(RUN_ROOT)/config.yaml daemon --stop-pods-on-exit

bench: release
	@bash bench/run.sh

install: release
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/nodelet
	install -D -m 0644 config/nodelet.service $(DESTDIR)/etc/systemd/system/nodelet.service
	test -e $(DESTDIR)$(CONFIG_DIR)/config.yaml || install -D -m 0644 config/nodelet.yaml $(DESTDIR)$(CONFIG_DIR)/config.yaml
	install -d -m 0755 $(DESTDIR)$(CONFIG_DIR)/pods
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/nodelet/README.md

# Removes debris a crashed test run may leave (mounts, processes, state dirs).
clean-test:
	@bash scripts/clean-test.sh

clean:
	$(CARGO) clean
