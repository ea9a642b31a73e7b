"""Make a build stage fail once, from outside the product: a flow-run process that has this folder on its
`PYTHONPATH` imports this file at start-up (Python's `sitecustomize`), and `SC_IMAGENET_TEST_FAIL_ONCE=
<stage>[,<stage>...]` names the stages to fail. tests/test_e2e_postgres.py sets both as job variables of one
deployment run, so that a retry of the failed run can be shown to resume.

A listed stage raises the first time it would run (not when it would be skipped as complete) in an output
folder, leaving `<out>/.fail-once-<stage>`; once that marker exists the stage runs normally. The wrapper
replaces `sc_imagenet.build.execute_stage` before the flow module imports it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

ENV = "SC_IMAGENET_TEST_FAIL_ONCE"


class InjectedFailure(RuntimeError):
    """The failure this hook raises."""


def failing_once(execute_stage: Callable[..., Any], stages: list[str]) -> Callable[..., Any]:
    from sc_imagenet.io.manifest import read_stage_record

    @functools.wraps(execute_stage)
    def wrapper(plan: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        marker = plan.out_dir / f".fail-once-{name}"
        record = read_stage_record(plan.stage_dir(name))
        would_skip = record is not None and record.fingerprint == plan.fingerprints[name] and name not in plan.forced
        if name in stages and not would_skip and not marker.exists():
            marker.touch()
            raise InjectedFailure(f"[{name}] failing once on purpose ({ENV}); delete {marker} to fail again")
        return execute_stage(plan, name, *args, **kwargs)

    return wrapper


if os.environ.get(ENV):
    import sc_imagenet.build as _build

    _build.execute_stage = failing_once(_build.execute_stage, os.environ[ENV].split(","))
