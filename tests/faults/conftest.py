"""The fault-injection suite: every test under tests/faults/ carries the ``faults`` marker
(``pytest -m faults`` runs just these, ``-m "not faults"`` everything else), and the session ends
with the count of fault scenarios run and passed.

A test is one scenario, unless it names the scenarios it runs in one go (a kill at each stage
kind of one suite, say) with the ``scenario`` fixture::

    def test_something(scenario):
        with scenario("kill during train"):
            ...  # the scenario passes when the block finishes without an exception

tests/faults/__init__.py makes this folder a package, so that this file and tests/conftest.py
(``from conftest import run_cli``) do not both import as the module ``conftest``.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, ContextManager, Iterator

import pytest

HERE = Path(__file__).resolve().parent
_faults: set[str] = set()         # node ids of the tests under tests/faults/
_ran: dict[str, bool] = {}        # scenario → passed, for scenarios named by the ``scenario`` fixture
_named: set[str] = set()          # node ids of the tests that named their scenarios
_tests: dict[str, bool] = {}      # node id → passed, for every test under tests/faults/ that ran


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.faults)
            _faults.add(item.nodeid)


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Callable[[str], ContextManager[None]]:
    """``with scenario(name): ...`` counts ``name`` as one fault scenario, passed when the block
    finishes; the test itself is then not counted on its own."""
    _named.add(request.node.nodeid)

    @contextlib.contextmanager
    def run(name: str) -> Iterator[None]:
        full = f"{request.node.nodeid} [{name}]"
        _ran[full] = False
        yield
        _ran[full] = True
    return run


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid not in _faults:
        return
    if report.skipped:  # skipped (its reason is printed with -rs): no scenario ran
        _tests.pop(report.nodeid, None)
    elif report.when == "call" or report.failed:  # a failed setup or teardown fails the test too
        _tests[report.nodeid] = report.passed and _tests.get(report.nodeid, True)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    outcomes = dict(_ran)
    for node, ok in _tests.items():
        named = [name for name in _ran if name.startswith(f"{node} [")]
        if node not in _named or not named:
            outcomes[node] = ok
        elif not ok and all(_ran[name] for name in named):  # failed outside its named scenarios
            outcomes[f"{node} (outside its scenarios)"] = False
    if not outcomes:
        return
    failed = [name for name, ok in outcomes.items() if not ok]
    terminalreporter.write_sep("-", "fault injection (tests/faults)")
    terminalreporter.write_line(f"fault scenarios: {len(outcomes)} run, {len(outcomes) - len(failed)} passed"
                                + (f", {len(failed)} failed" if failed else ""))
    for name in failed:
        terminalreporter.write_line(f"  failed: {name}")
