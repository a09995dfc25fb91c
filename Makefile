# One obvious command per task. Every target builds its own virtual environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.py pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install test compat fuzz demo bench docs dist lint typecheck clean

install: $(STAMP)

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,embedded]'
	rm -f $(VENV)/.installed-*
	touch $@

## Run the project's own tests: against a throwaway PostgreSQL, then against $DBTESTCASE_URL
## when set, SQLite, $DBTESTCASE_MYSQL_URL and a throwaway MariaDB (when mariadbd is
## installed). Prints "N passed, N failed" last.
test: install
	$(BIN)/python tests/run_all.py

## The functional tests at both ends of the supported range: Python 3.9 with SQLAlchemy 2.0, and
## Python 3.13 with the newest SQLAlchemy, each in a virtual environment of its own (.venv-py39,
## .venv-py313), against $DBTESTCASE_URL or a throwaway PostgreSQL.
compat: install
	cd tests && ../$(BIN)/python run_compat.py

## The property-based proof of the blank slate with 1,000 generated test classes per driver (PostgreSQL
## with psycopg2 and psycopg 3, SQLite, MariaDB): prints the counts, the seed and any failure found.
fuzz: install
	cd tests && ../$(BIN)/python run_fuzz.py

## Run the example suite shipped in examples/ under unittest, nose2 and pytest.
demo: install
	cd examples && ../$(BIN)/python -m unittest -v test_bookshop test_web test_migrations test_flask test_async
	cd examples && ../$(BIN)/nose2 -v --plugin dbtestcase.nose2plugin test_bookshop test_web test_migrations test_flask test_async
	cd examples && ../$(BIN)/python -m pytest -q -p no:cacheprovider test_bookshop.py test_web.py test_migrations.py test_flask.py test_async.py

## Per-test cost of DatabaseTestCase against its alternatives, as ratios measured in one run; then
## a generated 2,000-test suite run by 1 and by 2 parallel workers on one server.
bench: install
	$(BIN)/python bench/bench.py
	$(BIN)/python bench/parallel.py

docs: install
	$(BIN)/python -m pip install -q -e '.[docs]'
	$(BIN)/python -m sphinx -W -q -b html docs docs/_build/html

## sdist + wheel, checked by twine and installed into a clean virtual environment.
dist: install
	$(BIN)/python -m pip install -q -e '.[dist]'
	rm -rf dist build
	$(BIN)/python -m build -q --sdist --wheel --outdir dist .
	$(BIN)/python -m twine check --strict dist/*
	rm -rf $(VENV)-dist && $(PYTHON) -m venv $(VENV)-dist
	$(VENV)-dist/bin/python -m pip install -q dist/*.whl
	cd /tmp && $(CURDIR)/$(VENV)-dist/bin/python -c "import dbtestcase, sys; print('installed dbtestcase', dbtestcase.__version__, 'from', dbtestcase.__file__)"
	rm -rf $(VENV)-dist

lint: install
	$(BIN)/python -m pip install -q ruff
	$(BIN)/ruff check dbtestcase tests bench

typecheck: install
	$(BIN)/python -m pip install -q mypy
	$(BIN)/mypy dbtestcase

clean:
	rm -rf $(VENV) $(VENV)-dist $(VENV)-py39 $(VENV)-py313 build dist docs/_build *.egg-info .pytest_cache
