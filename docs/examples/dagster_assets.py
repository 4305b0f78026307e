"""batchflow's pipelines as a Dagster asset: materializing it applies them until every one is
done, and fails the run the way `batchflow apply` would exit non-zero.

    dagster dev -f docs/examples/dagster_assets.py
"""

import dagster as dg  # no `from __future__ import annotations`: Dagster reads the config's types

import batchflow


class Pipelines(dg.Config):
    paths: list[str] = ["pipelines"]  # spec files or folders; relative to where Dagster runs
    state: str | None = None  # the state store (a gs:// or s3:// URL in production)
    max_usd: float | None = None  # refuse work estimated above this


@dg.asset
def batch_answers(context: dg.AssetExecutionContext, config: Pipelines) -> dg.MaterializeResult:
    project = batchflow.load(config.paths, state=config.state, strict=True)
    plan = project.plan(max_usd=config.max_usd)
    for pp in plan.pipelines:
        context.log.info(f"{pp.pipeline}: {len(pp.actions)} actions, estimate {pp.estimate}")
    project.apply(wait=True, max_usd=config.max_usd).raise_for_errors()
    return dg.MaterializeResult(
        metadata={
            row["pipeline"]: dg.MetadataValue.json(
                {
                    "records": row["output"]["records"],
                    "errors": row["output"]["errors"],
                    "usd": row["cost_usd"],
                }
            )
            for row in project.status()
        }
    )


defs = dg.Definitions(assets=[batch_answers])
