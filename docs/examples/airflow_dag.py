"""batchflow's pipelines from Airflow: a daily DAG whose sensor task applies them.

Each poke runs `apply` without waiting: it takes every step possible now (the first one
uploads and creates the jobs, later ones poll and download) and returns. In reschedule mode
the task holds no worker slot between pokes, so a batch that takes hours costs none; each
poke resumes from the state store and never sends a request twice.
"""

from __future__ import annotations

import pendulum
from airflow.decorators import dag, task
from airflow.sensors.base import PokeReturnValue

PIPELINES = ["/opt/airflow/pipelines"]
STATE = "gs://my-bucket/batchflow"


@dag(schedule="@daily", start_date=pendulum.datetime(2026, 12, 1), catchup=False)
def batch_pipelines():
    @task.sensor(poke_interval=300, timeout=24 * 3600, mode="reschedule")
    def apply() -> PokeReturnValue:
        import batchflow

        result = batchflow.load(PIPELINES, state=STATE, strict=True).apply(max_usd=25)
        result.raise_for_errors()  # a budget, spec, lock or service error fails the task
        done = all(o.done for o in result.outcomes)
        return PokeReturnValue(is_done=done, xcom_value={o.pipeline: o.done for o in result.outcomes})

    apply()


batch_pipelines()
