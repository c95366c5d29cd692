# The two commands a newcomer needs, and a few for working on the project.
# Both do their own set-up: Debian packages, dockerd, the virtualenv, the lab images.
PY := .venv/bin/python

.PHONY: demo test bench dist setup lint unit lab-up lab-down lab-status

demo: setup            ## bring up the lab and run site.yml against it
	$(PY) -m tests.lab demo

test: setup            ## lint, unit and integration tests (brings up and removes its own lab)
	$(PY) -m pytest

bench: setup           ## install speed, the seeds' ways against pipfeed (bench/README.md)
	bench/install $(BENCH_ARGS)
	$(PY) bench/fleet.py

dist: setup            ## the collection's tarball, dist/pipfeed-feed-<version>.tar.gz
	ANSIBLE_CONFIG=ansible.cfg .venv/bin/ansible-galaxy collection build --force --output-path dist/

setup:
	@scripts/setup.sh

lint: setup
	$(PY) -m pytest -m lint

unit: setup
	$(PY) -m pytest -m unit

lab-up: setup
	$(PY) -m tests.lab up

lab-status: setup
	$(PY) -m tests.lab status

lab-down: setup        ## remove every lab this checkout made
	$(PY) -m tests.lab down --all
