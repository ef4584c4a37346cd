# The two commands a fresh machine needs are `make lab` and `make test`; the rest are conveniences.
# Each target calls the same `python3 -m brokerlab ...` CLI, which works without make too.
PYTHON ?= python3

.PHONY: lab test up down status logs reset exercises setup tool site

lab:        ## set up, start the broker stack, open JupyterLab on notebook 00
	$(PYTHON) -m brokerlab lab

test:       ## the whole suite on its own stack (port set 100): unit tests, every notebook twice, lab checks
	$(PYTHON) -m brokerlab test

setup:      ## only create .venv with the pinned packages
	$(PYTHON) -m brokerlab setup

up:         ## start the broker stack (idempotent)
	$(PYTHON) -m brokerlab stack up

down:       ## stop the broker stack; nothing is left running
	$(PYTHON) -m brokerlab stack down

status:     ## is each broker up, where, how much memory
	$(PYTHON) -m brokerlab stack status

logs:       ## the last lines of each broker's log
	$(PYTHON) -m brokerlab stack logs

reset:      ## stop the stack and delete its data
	$(PYTHON) -m brokerlab stack reset

tool:       ## a broker's own CLI against the stack, e.g. make tool ARGS="redis-cli ping"
	$(PYTHON) -m brokerlab tool $(ARGS)

exercises:  ## regenerate lab exercises from their solutions
	$(PYTHON) -m brokerlab exercises

site:       ## execute every notebook (quick mode) into a static HTML course: build/site/index.html
	$(PYTHON) -m brokerlab site
