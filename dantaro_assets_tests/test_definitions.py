"""The one Definitions object: the worker's order as documented, and a new analysis added by one line in DOMAINS."""

from __future__ import annotations

import importlib
import os
import re
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG

from dantaro_assets import definitions
from dantaro_assets.markets.history import products, top_priority
from dantaro_assets.operations.limits import JOB_TAG, PRIORITY_TAG, QUEUE_TAG
from dantaro_assets.partitions import freshness
from dantaro_assets.settings import load_settings
from dantaro_assets_tests.operations.daemon import daemon_workspace, submit

OPERATIONS_DOC = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
NOW = datetime(2026, 3, 10, 10, 25, tzinfo=UTC)


def documented_order() -> dict[str, tuple[int, str]]:
    """docs/operations.md's job table, in its order: job -> (priority, Celery queue)."""
    text = OPERATIONS_DOC.read_text()
    table = text[text.index("| job | assets |"):].split("\n\n")[0].splitlines()
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    priority, queue = (next(i for i, name in enumerate(header) if name.startswith(word)) for word in ("priority", "Celery queue"))
    rows = {}
    for line in table[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = (int(re.match(r"-?\d+", cells[priority]).group()), cells[queue].strip("`"))
    return rows


def job_tags(defs: dg.Definitions) -> dict[str, dict[str, str]]:
    """Every job of ``defs`` with a job type -> the tags its runs carry."""
    return {job.name: dict(job.run_tags) for job in defs.resolve_all_job_defs() if JOB_TAG in job.run_tags}


def test_every_job_runs_at_the_documented_place_in_the_workers_order():
    """The worker's order lives in one table (docs/operations.md); the domains declare each job type's priority and
    queue beside their jobs, and this holds the two together."""
    documented = documented_order()
    assert list(documented) == ["market_status_job", "recommendations_job", "support_levels_job", "daily_candles_job", "candles_1m_job",
                                "recommendation_outcomes_job", "cleanup_job"]
    priorities = [priority for priority, _ in documented.values()]
    assert priorities == sorted(priorities, reverse=True) and len(set(priorities)) == len(priorities)  # one place each, highest first

    declared = {name: (int(tags[PRIORITY_TAG]), tags[QUEUE_TAG]) for name, tags in job_tags(definitions.defs).items()}

    assert declared == documented


TOY_ASSETS = '''
    import dataclasses

    from dantaro_assets.lib.analysis_inputs import Lookback
    from dantaro_assets_tests.operations.test_analyses import PRICED

    # test_analyses.py's toy analysis declared as a domain of its own: its name, a longer lookback, a cadence, a priority
    TOY_BREADTH = dataclasses.replace(PRICED, name="toy_breadth", lookback=Lookback(minute_hours=5, hourly_days=20),
                                      cadence="support_levels_interval", priority=45)
'''
TOY_DEFINITIONS = '''
    from toy_domain.assets import TOY_BREADTH

    build_defs = TOY_BREADTH.definitions
'''

TOY_LOCATION = '''
    import toy_domain.definitions as toy

    from dantaro_assets import definitions
    from dantaro_assets.settings import load_settings

    if toy not in definitions.DOMAINS:  # the test process added it already (monkeypatch restores it); the code server has not
        definitions.DOMAINS = (*definitions.DOMAINS, toy)
    defs = definitions.build_definitions(load_settings())
'''


def test_adding_an_analysis_is_its_domain_folder_and_one_line_in_domains(tmp_path, monkeypatch):
    """A domain module written in a temporary folder, outside the package: nothing in operations/ or markets/ names it."""
    folder = tmp_path / "toy_domain"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    (folder / "assets.py").write_text(textwrap.dedent(TOY_ASSETS))
    (folder / "definitions.py").write_text(textwrap.dedent(TOY_DEFINITIONS))
    monkeypatch.syspath_prepend(str(tmp_path))
    toy = importlib.import_module("toy_domain.definitions")
    settings = load_settings({})
    before = definitions.build_definitions(settings)

    monkeypatch.setattr(definitions, "DOMAINS", (*definitions.DOMAINS, toy))  # the one line
    defs = definitions.build_definitions(settings)

    # its job: the hour's minutes, the analysis, its publish step; at its declared priority, on the live Celery queue
    job = defs.resolve_job_def("toy_breadth_job")
    assert {key.to_user_string() for key in job.asset_layer.selected_asset_keys} == {"candles_1m", "toy_breadth", "toy_breadth_redis"}
    assert {tag: job.run_tags[tag] for tag in (PRIORITY_TAG, JOB_TAG, QUEUE_TAG)} == {PRIORITY_TAG: "45", JOB_TAG: "toy_breadth", QUEUE_TAG: "live"}
    assert job_tags(defs) == {**job_tags(before), "toy_breadth_job": dict(job.run_tags)}  # every other job as it was
    # its schedule and freshness at its cadence (SUPPORT_LEVELS_INTERVAL, 900 s)
    schedule = defs.resolve_schedule_def("toy_breadth_schedule")
    assert (schedule.cron_schedule, schedule.job_name) == ("*/15 * * * *", "toy_breadth_job")
    assert defs.resolve_assets_def("toy_breadth").specs_by_key[dg.AssetKey("toy_breadth")].freshness_policy == freshness(900)
    # the history sensor fetches its longer lookback, and puts the universe ahead of its runs too
    repository = defs.get_repository_def()
    assert [product.name for product in products(before.get_repository_def(), NOW)] == ["market_status", "recommendations", "support_levels"]
    toy_first = products(repository, NOW)[0]  # priority 45: its lookback is fetched first
    assert (toy_first.name, len(toy_first.needs["candles_1h"]), len(toy_first.needs["candles_1m"])) == ("toy_breadth", 21, 5)
    assert (top_priority(before.get_repository_def()), top_priority(repository)) == (42, 47)

    # the Celery instance's run queue sends its runs to the queue it declares: a code location of the definitions
    # with the domain added, its run queued as the UI or a schedule would
    (tmp_path / "toy_location.py").write_text(textwrap.dedent(TOY_LOCATION))
    coordinator = {"module": "dantaro_assets.operations.celery_runs", "class": "CeleryQueueRunCoordinator"}
    with (dg.instance_for_test(overrides={"run_coordinator": coordinator}) as instance,
          daemon_workspace(instance, "toy_location", env={"PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}) as workspace):
        run = instance.get_run_by_id(submit(instance, workspace, "toy_breadth_job"))
    assert (run.status, run.tags[DAGSTER_CELERY_QUEUE_TAG]) == (dg.DagsterRunStatus.QUEUED, "live")


@pytest.fixture(autouse=True)
def _forget_the_toy_domain():
    """The temporary domain's modules leave with the test, so no other test imports them."""
    yield
    for name in [name for name in sys.modules if name in ("toy_domain", "toy_location") or name.startswith("toy_domain.")]:
        del sys.modules[name]
