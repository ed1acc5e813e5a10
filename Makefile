.PHONY: run test services stop status setup bench

run:       ## everything up with demo data; admin and API on http://127.0.0.1:8000
	scripts/run.sh

test:      ## the whole test suite on the real services
	scripts/test.sh

setup:     ## virtualenv and pinned requirements
	scripts/setup.sh

services:  ## start PostgreSQL, Redis, SeaweedFS (S3) and the search server where not running
	scripts/services.sh start

status:
	scripts/services.sh status

stop:      ## stop the services this project started (S3, search)
	scripts/services.sh stop
