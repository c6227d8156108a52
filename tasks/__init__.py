"""Thin Prefect tasks, one per stage of a cycle.

Each task reopens the project from a :class:`~orchestrator.stages.context.ProjectRef`,
calls one core function and returns a pydantic model. Each has an explicit
cache key naming the step, the project, our own cycle id, the task id and
attempt where there is one, and the commit the step starts from: re-entering
an unfinished cycle reuses finished steps instead of paying for them again,
and two different steps can never share a key.
"""
