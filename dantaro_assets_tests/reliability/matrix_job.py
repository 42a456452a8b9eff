"""How the fault matrix runs assets: real Dagster runs with the project's resources built from settings.

``materialize`` is the usual in-process ``dg.materialize``. ``run_without_step_retries`` runs the same
asset through ``dg.execute_job`` on a persistent instance with the executor's step retries off, for runs
a fault must fail. Neither retries a step (step retries are the project jobs' ``op_retry_policy``): a
retry repeats the same fetch and the same write, so it would change no outcome the matrix asserts, only
add its delays (5, 10, 20 s) to each row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dagster as dg

from dantaro_assets.market_status.assets import MARKET_STATUS
from dantaro_assets.markets import assets as market_assets
from dantaro_assets.resources import build_resources
from dantaro_assets.settings import Settings
from dantaro_assets_tests.fixtures.environment import environ

ASSETS = [*dg.load_assets_from_modules([market_assets]), MARKET_STATUS.asset, MARKET_STATUS.publish]
NO_STEP_RETRIES = {"execution": {"config": {"retries": {"disabled": {}}}}}


def _range_tags(partition: str, last: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": partition, "dagster/asset_partition_range_end": last}


@contextlib.contextmanager
def storage_env(settings: Settings) -> Iterator[None]:
    """``DATABASE_URL``/``REDIS_URL`` set to ``settings``' servers for the run: resources read them as ``dg.EnvVar``."""
    urls = {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
    with environ({name: url for name, url in urls.items() if url}):
        yield


def materialize(settings: Settings, asset: str | list[str], partition: str, last: str | None = None) -> dg.ExecuteInProcessResult:
    """``dg.materialize`` of ``asset`` (or several) for ``partition`` (or the range ``partition``..``last``), never raising."""
    with storage_env(settings):
        return dg.materialize(ASSETS, selection=[asset] if isinstance(asset, str) else asset, partition_key=None if last else partition,
                              tags=_range_tags(partition, last) if last else None,
                          resources=build_resources(settings), raise_on_error=False)


def asset_job(settings_json: str, asset: str) -> dg.JobDefinition:
    """``asset`` (its upstream definitions present, not run) with ``build_resources(settings)``, in-process."""
    defs = dg.Definitions(
        assets=ASSETS,
        resources=build_resources(Settings.model_validate_json(settings_json)),
        jobs=[dg.define_asset_job("fault_matrix", selection=[asset], executor_def=dg.in_process_executor)],
    )
    return defs.resolve_job_def("fault_matrix")


def run_without_step_retries(
    instance: dg.DagsterInstance, settings: Settings, asset: str, partition: str, last: str | None = None
) -> dg.ExecuteJobResult:
    """The run of ``materialize`` through ``dg.execute_job`` on ``instance``, step retries off, never raising."""
    job = dg.build_reconstructable_job(__name__, "asset_job", reconstructable_args=(settings.model_dump_json(by_alias=True), asset))
    with storage_env(settings), dg.execute_job(job, instance, run_config=NO_STEP_RETRIES, tags=_range_tags(partition,
        last) if last else {"dagster/partition": partition},
                        raise_on_error=False) as result:
        return result


def throwaway_instance() -> dg.DagsterInstance:
    """A throwaway persistent instance (``execute_job`` needs one) without compute-log capture (slow, unused)."""
    return dg.instance_for_test(overrides={"compute_logs": {"module": "dagster.core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}})


def root_error(result: dg.ExecuteJobResult | dg.ExecuteInProcessResult, node: str) -> tuple[str, str]:
    """Class name and message of the exception at the root of ``node``'s step failure."""
    error = result.failure_data_for_node(node).error
    while error.cause is not None:
        error = error.cause
    return error.cls_name, error.message
