"""Operations: jobs, schedules at the seed's cadences, run limits, the job log and the HTTP API."""

from dantaro_assets.operations.jobs import jobs
from dantaro_assets.operations.schedules import schedules

sensors: list = []

__all__ = ["jobs", "schedules", "sensors"]
