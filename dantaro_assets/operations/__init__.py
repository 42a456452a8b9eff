"""Operations: jobs, schedules at the seed's cadences, run limits, the job log and the HTTP API."""

from dantaro_assets.operations.bootstrap import history_sensor
from dantaro_assets.operations.jobs import jobs
from dantaro_assets.operations.schedules import schedules

sensors = [history_sensor]

__all__ = ["jobs", "schedules", "sensors"]
