# podnet: `make demo` and `make test` are all a fresh Debian 12 machine needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# Molecule's console wraps at the terminal's width, 80 without one: a failed test's name
# would be split across lines in the logs make test sums up.
export COLUMNS ?= 200

# Debian packages: what the nodes need (the lab's nodes share this machine's
# packages) plus the lab's own tools.
APT_PACKAGES := containernetworking-plugins nftables iptables conntrack dnsmasq-base ethtool iperf3 \
	python3-pyroute2 python3-apt python3-yaml iproute2 iputils-ping curl socat util-linux make \
	mmdebstrap dpkg-dev apt-utils openssh-client graphviz
APT_STAMP := $(VENV)/.apt-$(shell echo $(APT_PACKAGES) | md5sum | cut -c1-8)
VENV_STAMP := $(VENV)/.installed-$(shell md5sum requirements.txt | cut -c1-8)
# NODES=real: the machine lab (inventory/nodes: real Debian 12 and 13 machines with
# systemd and sshd, reached over SSH as a sudo user); default: the fast namespace lab.
NODES ?= namespaces
ifeq ($(NODES),real)
LAB_INVENTORY := inventory/nodes
else
LAB_INVENTORY := inventory/lab
endif
export PODNET_LAB_INVENTORY := $(CURDIR)/$(LAB_INVENTORY)
LAB := $(PY) lab/podnet_lab.py --inventory $(LAB_INVENTORY)
PODNET := $(PY) tools/podnet.py -i $(LAB_INVENTORY)
PLAYBOOK := ansible-playbook -i $(LAB_INVENTORY)/hosts.yml
COLLECTION_PTH := $(VENV)/.collection-pth

.PHONY: help deps lab lab-destroy site demo explain diagram lint unit lab-tests molecule molecule-nodes molecule-subnets test bench clean

help:
	@echo "make demo         install, build the lab, run site.yml, show the network working"
	@echo "make test         lint, unit tests and the molecule scenarios (lab + site.yml + testinfra),"
	@echo "                  on the namespace lab and on real Debian machines (scenario nodes)"
	@echo "make demo NODES=real   the same demo on real Debian 12/13 machines over SSH"
	@echo "make lab          build the virtual lab cluster (network namespaces podnet-*)"
	@echo "make site         run site.yml against the lab"
	@echo "make lab-destroy  remove the lab and everything it made"
	@echo "make explain FROM=default/client TO=frontend:http   a packet's road through the live lab, in words"
	@echo "make diagram      the live lab as a picture (.cache/podnet-cluster.svg and .png)"
	@echo "make bench        benchmarks (prints tables; the ansible-playbook rows on the lab)"

deps: $(APT_STAMP) $(VENV_STAMP) $(COLLECTION_PTH)

$(APT_STAMP):
	@missing=$$(dpkg-query -W -f='$${db:Status-Abbrev} $${Package}\n' $(APT_PACKAGES) 2>/dev/null \
		| awk '$$1 == "ii" {print $$2}' | sort | comm -13 - <(tr ' ' '\n' <<< "$(APT_PACKAGES)" | sort)); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@mkdir -p $(VENV) && touch $@

$(VENV_STAMP): requirements.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@touch $@

# The repository is the collection podnet.network; the venv's Python imports it
# by that name (ansible_collections.podnet.network...), as Ansible does.
# Checked on every run, not stamped: a git worktree sharing this venv points it at its own
# checkout, and the next run here must point it back.
.PHONY: $(COLLECTION_PTH)
$(COLLECTION_PTH): $(VENV_STAMP)
	@$(PY) -c 'import sysconfig, sys, pathlib; pth = pathlib.Path(sysconfig.get_paths()["purelib"], "podnet-collection.pth"); want = sys.argv[1] + "\n"; (pth.exists() and pth.read_text() == want) or pth.write_text(want)' $(CURDIR)/.collections

lab: deps
	$(LAB) create

lab-destroy:
	@if [ -x $(PY) ]; then $(LAB) destroy; else python3 lab/podnet_lab.py --inventory $(LAB_INVENTORY) destroy; fi

site: lab
	$(PLAYBOOK) site.yml

demo: lab
	$(PLAYBOOK) site.yml
ifeq ($(NODES),real)
	$(PLAYBOOK) molecule/nodes/prepare.yml
endif
	$(PY) lab/matrix.py
	@echo
	$(PODNET) explain default/client frontend:http default/client db \
		--svg .cache/explain-frontend.svg --svg .cache/explain-db.svg \
		--diagram .cache/podnet-cluster.svg --diagram .cache/podnet-cluster.png
	@echo
	@echo "Look around:  ip netns exec podnet-node1 ip route        (node1's routes: proto podnet)"
	@echo "              ip netns exec podnet-node1 nft list table ip podnet-services   (Service NAT: sets and maps)"
	@echo "              ansible-playbook site.yml -e podnet_proxy_backend=iptables     (the same, as kube-proxy's chains)"
	@echo "              ip netns exec podnet-node1 iptables-save -t nat                (... then KUBE-SERVICES & co.)"
	@echo "              ip netns exec podnet-node2 nft list table ip podnet-policy     (NetworkPolicy: db-access, with drop counters)"
	@echo "              $(LAB) exec node1 -- ip netns exec podnet-default-client getent hosts frontend   (Service DNS)"
	@echo "              $(LAB) shell node1                          (a shell on node1: its files, its pods)"
	@echo "              make explain FROM=192.168.56.100 TO=web:http@node3   (any flow, in words; ARGS=--json, --live)"
	@echo "              $(LAB) exec node1 -- ip netns list          (node1's pods)"
	@echo "Tear down:    make lab-destroy"

# A packet's road through the live lab: make explain FROM=default/client TO=db [ARGS=--live]
FROM ?= default/client
TO ?= frontend:http
explain: deps
	$(PODNET) explain $(FROM) $(TO) $(ARGS)

diagram: deps
	$(PODNET) diagram -o .cache/podnet-cluster.svg -o .cache/podnet-cluster.png

lint: deps
	yamllint -s .
	ruff check .
	ansible-lint --profile production
	$(PY) tools/role_docs.py --check

# ansible-test sanity on the collection as built and installed (tests/sanity/run.sh).
.PHONY: sanity
sanity: deps
	tests/sanity/run.sh

unit: deps
	pytest -q tests/unit

molecule: deps
	molecule test

# The same verify suites on real Debian machines (bookworm and trixie, systemd, SSH,
# sudo, packages from the lab's mirror); images and mirror are cached in /var/cache/podnet-lab.
molecule-nodes: deps
	molecule test -s nodes

# The lab on two subnets (inventory/lab-subnets: node4 behind the router, reached over VXLAN):
# the pod network, Services, DNS and NetworkPolicy suites, the MTU boundary, node4 moving
# between the segments. Its own prefix (podnet-sn-): it never meets the default lab.
molecule-subnets: deps
	molecule test -s subnets

# The root namespace is snapshotted before and compared after everything:
# nothing the lab or the tests do may leave a trace there.
# A lab left up by `make demo` is torn down first: the lab tests check a freshly
# built lab, and molecule's scenario builds its own and destroys it anyway.
# Two lanes side by side, each lab with its own prefix, about even in time: the default
# scenario; and the machine scenario (podnet-m-) then the two-subnet one (podnet-sn-), whose
# log goes to .cache/molecule-lane2.log and is summed up at the end (all of it when it failed).
# Much of each lane waits (machines booting, probes that must time out), so together they
# take well under the sum of the two.
test: deps
	@$(PY) lab/podnet_lab.py --inventory inventory/lab destroy
	@$(PY) lab/podnet_lab.py --inventory inventory/nodes destroy
	@$(PY) lab/podnet_lab.py --inventory inventory/lab-subnets destroy
	@mkdir -p .cache && $(PY) lab/rootns.py snapshot .cache/rootns-before.json
	$(MAKE) lint sanity unit lab-tests NODES=namespaces
	@rm -f .cache/machines-report.txt; \
	  $(MAKE) -k molecule-nodes molecule-subnets NODES=namespaces > .cache/molecule-lane2.log 2>&1 & lane2=$$!; \
	  $(MAKE) molecule NODES=namespaces 2>&1 | tee .cache/molecule-lane1.log; lane1=$${PIPESTATUS[0]}; \
	  wait $$lane2; lane2=$$?; \
	  echo "=== molecule-nodes, molecule-subnets (whole log: .cache/molecule-lane2.log), exit $$lane2"; \
	  cat .cache/machines-report.txt 2>/dev/null; \
	  if [ $$lane2 -eq 0 ]; then grep -aE " passed| failed|changed=|Executed" .cache/molecule-lane2.log | tail -40; \
	  else tail -n 400 .cache/molecule-lane2.log; fi; \
	  echo "=== default scenario: exit $$lane1; machines and two subnets: exit $$lane2"; \
	  cat .cache/molecule-lane1.log .cache/molecule-lane2.log | sed 's/\x1b\[[0-9;]*m//g' \
	    | grep -aE -A1 "(FAILED|ERROR)( [A-Za-z0-9_./-]+\.py::|$$)| (passed|failed|error)[a-z ,0-9]* in [0-9.]+s" \
	    | grep -av "^--$$" | cut -c1-400 | tail -60; \
	  [ $$lane1 -eq 0 ] && [ $$lane2 -eq 0 ]
	$(PY) lab/rootns.py compare .cache/rootns-before.json

lab-tests: deps
	pytest -q tests/lab

# The module benchmarks run in scratch namespaces; the ansible-playbook rows on the lab.
bench: site
	$(PY) bench/bench.py
	@echo
	$(PY) bench/bench_policy.py
	@echo
	$(PY) bench/bench_playbook.py --inventory $(LAB_INVENTORY)
	@echo
	$(PY) bench/bench_overlay.py
	@echo
	$(PY) bench/bench_dataplane.py

clean: lab-destroy
	rm -rf $(VENV) .pytest_cache .ruff_cache
