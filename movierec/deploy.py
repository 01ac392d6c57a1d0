"""Register the deployments of `prefect.yaml` with a running Prefect server (`movierec deploy`).

The same file serves `prefect deploy --all`; this module reads the subset of its format the
project uses (build/push/pull steps, deployments with entrypoint, parameters, tags,
description, version, schedules, work pool, concurrency limit, paused) with the Python API,
so it needs no prompts and no Docker. Deployments are upserted by name: running it again
updates them, and each deployment's schedules are replaced by those in the file.

Deployments live in a server's database, so a Prefect API URL must be configured; the
temporary API Prefect starts for a single flow run would forget them when it exits.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from movierec.settings import REPO_ROOT

DEFAULT_PREFECT_FILE = REPO_ROOT / "prefect.yaml"
WORK_POOL_TYPE = "process"

NO_SERVER = (
    "no Prefect API URL is configured, and deployments need a running Prefect server.\n"
    "Start one with `scripts/prefect-server.sh --worker` (or `prefect server start`), then\n"
    "  export PREFECT_API_URL=http://127.0.0.1:4200/api\n"
    "and run this again."
)

# Keys of a deployment in prefect.yaml that this module does not translate; `prefect deploy` does.
_UNSUPPORTED_KEYS = ("triggers", "sla", "schedule")


class DeployError(RuntimeError):
    """Deployments cannot be registered: no server, or a bad prefect.yaml. The message says why."""


def api_url() -> str:
    """The configured Prefect API URL, or DeployError telling the user to start a server."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise DeployError(NO_SERVER)
    return url


def deploy(prefect_file: Path, *, work_pool: str | None = None, names: list[str] | None = None) -> list[str]:
    """Register every deployment of `prefect_file` (or those in `names`) with the Prefect API.

    `work_pool` overrides the file's work pool for all of them; a missing pool is created as a
    `process` pool. `names` may be deployment names or full names ("retrain/retrain-manual").
    Returns the full names ("<flow>/<deployment>") in file order. Raises DeployError.
    """
    from prefect.utilities.asyncutils import run_coro_as_sync

    return run_coro_as_sync(adeploy(prefect_file, work_pool=work_pool, names=names))


async def adeploy(prefect_file: Path, *, work_pool: str | None = None, names: list[str] | None = None) -> list[str]:
    """The async form of `deploy`."""
    url = api_url()
    prefect_file = Path(prefect_file).expanduser().resolve()
    project = load_prefect_file(prefect_file)
    selected = _select(project["deployments"], names, prefect_file)

    from prefect.client.orchestration import get_client

    async with get_client() as client:
        problem = await client.api_healthcheck()
        if problem is not None:
            raise DeployError(
                f"the Prefect API at {url} does not answer ({type(problem).__name__}: {problem}).\n"
                "Start a server with `scripts/prefect-server.sh --worker` (or `prefect server start`) "
                "and check PREFECT_API_URL."
            )
        pools = {work_pool or _pool_name(config, prefect_file) for config in selected}
        for pool in sorted(pools):
            await _ensure_work_pool(client, pool)

    full_names = []
    with _working_directory(prefect_file.parent):
        for config in selected:
            full_names.append(await _deploy_one(config, project, work_pool, prefect_file))
    return full_names


def load_prefect_file(path: Path) -> dict[str, Any]:
    """The parsed file, checked for what registration needs; DeployError names what is wrong."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeployError(f"{path}: no such file (expected the project's prefect.yaml)") from None
    except yaml.YAMLError as error:
        raise DeployError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("deployments"), list) or not raw["deployments"]:
        raise DeployError(f"{path}: expected a mapping with a non-empty `deployments` list")
    seen: set[str] = set()
    for index, config in enumerate(raw["deployments"]):
        where = f"{path}: deployments[{index}]"
        if not isinstance(config, dict):
            raise DeployError(f"{where}: expected a mapping")
        for key in ("name", "entrypoint"):
            if not isinstance(config.get(key), str) or not config[key].strip():
                raise DeployError(f"{where}: `{key}` is missing")
        if config["name"] in seen:
            raise DeployError(f"{where}: the name {config['name']!r} is used twice")
        seen.add(config["name"])
        for key in _UNSUPPORTED_KEYS:
            if config.get(key):
                raise DeployError(
                    f"{where} ({config['name']}): `{key}` is not supported by movierec deploy; "
                    "use `schedules:` or register it with `prefect deploy`"
                )
    return raw


def _select(deployments: list[dict[str, Any]], names: list[str] | None, path: Path) -> list[dict[str, Any]]:
    if not names:
        return deployments
    known = [config["name"] for config in deployments]
    wanted = {name.rsplit("/", 1)[-1] for name in names}
    unknown = sorted(wanted - set(known))
    if unknown:
        raise DeployError(f"{path}: no deployment named {', '.join(unknown)}; it defines {', '.join(known)}")
    return [config for config in deployments if config["name"] in wanted]


def _pool_name(config: dict[str, Any], path: Path) -> str:
    pool = (config.get("work_pool") or {}).get("name")
    if not pool:
        raise DeployError(f"{path}: deployment {config['name']!r} names no work pool (work_pool.name)")
    return apply_env(pool)


def apply_env(value: Any) -> Any:
    from prefect.utilities.templating import apply_values

    return apply_values(value, os.environ, remove_notset=False)


def ensure_work_pool(name: str, api_url: str) -> bool:
    """Create process pool `name` on the Prefect API at `api_url` unless it exists; whether it
    was created now."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def ensure() -> bool:
        async with get_client() as client:
            return await _ensure_work_pool(client, name)

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        return run_coro_as_sync(ensure())


async def _ensure_work_pool(client: Any, name: str) -> bool:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        await client.read_work_pool(name)
        return False
    except ObjectNotFound:
        pass
    with contextlib.suppress(ObjectAlreadyExists):  # created meanwhile by a worker: fine
        await client.create_work_pool(
            WorkPoolCreate(
                name=name,
                type=WORK_POOL_TYPE,
                base_job_template=ProcessWorker.get_default_base_job_template(),
                description="movierec flows, run as local processes by `prefect worker start --pool movierec`.",
            )
        )
    return True


async def _deploy_one(config: dict[str, Any], project: dict[str, Any], work_pool: str | None, path: Path) -> str:
    """Mirror `prefect deploy`: resolve placeholders, run build/push steps, template, register."""
    from prefect.deployments.runner import RunnerDeployment
    from prefect.deployments.steps.core import run_steps
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.templating import (
        apply_values,
        resolve_block_document_references,
        resolve_variables,
    )

    # Pull steps are stored as written: their env placeholders are resolved by the worker.
    pull_steps = config["pull"] if "pull" in config else project.get("pull")
    build_steps = config["build"] if "build" in config else project.get("build")
    push_steps = config["push"] if "push" in config else project.get("push")
    spec = {key: value for key, value in config.items() if key not in ("build", "push", "pull")}
    spec = await resolve_block_document_references(spec)
    spec = await resolve_variables(spec)
    spec = apply_env(spec)

    entrypoint = spec["entrypoint"]
    script = entrypoint.rsplit(":", 1)[0]
    if ":" in entrypoint and not Path(script).is_file():
        raise DeployError(f"{path}: deployment {spec['name']!r}: entrypoint file {script} not found beside it")
    try:
        flow = load_flow_from_entrypoint(entrypoint)
    except Exception as error:
        raise DeployError(f"{path}: deployment {spec['name']!r}: cannot load {entrypoint}: {error}") from error

    outputs: dict[str, Any] = {}
    for steps in (build_steps, push_steps):
        if steps:
            outputs.update(await run_steps(_as_list(steps), outputs, print_function=lambda *_, **__: None))
    spec = apply_values(spec, outputs, skip_prefixes=["ctx."])
    if pull_steps is None:  # what `prefect deploy` does when the file has none
        pull_steps = [{"prefect.deployments.steps.set_working_directory": {"directory": str(Path.cwd())}}]
    pull_steps = apply_values(_as_list(pull_steps), outputs, remove_notset=False)

    pool = (spec.get("work_pool") or {}) | ({"name": work_pool} if work_pool else {})
    options: dict[str, Any] = {
        "name": spec["name"],
        "flow_name": flow.name,
        "entrypoint": entrypoint,
        "parameters": spec.get("parameters") or {},
        "tags": spec.get("tags") or [],
        "schedules": [_schedule(item, spec["name"], path) for item in spec.get("schedules") or []],
        "work_pool_name": pool["name"],
        "job_variables": pool.get("job_variables") or {},
        "storage": _PullSteps(pull_steps),
    }
    for key in ("description", "version", "version_type", "paused", "enforce_parameter_schema"):
        if spec.get(key) is not None:
            options[key] = spec[key]
    if pool.get("work_queue_name"):
        options["work_queue_name"] = pool["work_queue_name"]
    limit = spec.get("concurrency_limit")
    if isinstance(limit, dict):
        options["concurrency_limit"] = limit.get("limit")
        strategy = {k: limit[k] for k in ("collision_strategy", "grace_period_seconds") if limit.get(k) is not None}
        if strategy:
            options["concurrency_options"] = strategy
    elif limit is not None:
        options["concurrency_limit"] = limit

    deployment = RunnerDeployment(**options)
    deployment._set_defaults_from_flow(flow)
    try:
        await deployment.aapply()
    except Exception as error:
        raise DeployError(f"{path}: deployment {spec['name']!r} was refused by the Prefect API: {error}") from error
    return deployment.full_name


def _schedule(item: dict[str, Any], name: str, path: Path) -> Any:
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule

    where = f"{path}: deployment {name!r}: schedule {item!r}"
    if not isinstance(item, dict):
        raise DeployError(f"{where}: expected a mapping")
    kinds = [kind for kind in ("cron", "interval", "rrule") if item.get(kind) is not None]
    if len(kinds) != 1:
        raise DeployError(f"{where}: give exactly one of cron, interval, rrule")
    timezone = item.get("timezone")
    try:
        if kinds == ["cron"]:
            extra = {"day_or": item["day_or"]} if item.get("day_or") is not None else {}
            schedule: Any = CronSchedule(cron=item["cron"], timezone=timezone, **extra)
        elif kinds == ["interval"]:
            interval = item["interval"]
            if isinstance(interval, (int, float)):
                interval = timedelta(seconds=interval)
            extra = {"anchor_date": item["anchor_date"]} if item.get("anchor_date") else {}
            schedule = IntervalSchedule(interval=interval, timezone=timezone, **extra)
        else:
            schedule = RRuleSchedule(rrule=item["rrule"], timezone=timezone)
        extra = {key: item[key] for key in ("slug", "replaces", "max_scheduled_runs") if item.get(key) is not None}
        return DeploymentScheduleCreate(
            schedule=schedule,
            active=item.get("active", True),
            parameters=item.get("parameters") or {},
            **extra,
        )
    except ValueError as error:  # pydantic's ValidationError included
        raise DeployError(f"{where}: {error}") from None


def _as_list(steps: Any) -> list[dict[str, Any]]:
    return [steps] if isinstance(steps, dict) else list(steps)


class _PullSteps:
    """Storage that hands the file's pull steps to RunnerDeployment unchanged (the runner's
    own storages generate their steps; `prefect deploy` uses the same shim)."""

    def __init__(self, pull_steps: list[dict[str, Any]]) -> None:
        self.pull_steps = pull_steps
        self._base_path = Path.cwd()

    def set_base_path(self, path: Path) -> None:
        self._base_path = path

    @property
    def destination(self) -> Path:
        return self._base_path

    @property
    def pull_interval(self) -> int | None:
        return None

    async def pull_code(self) -> None:
        return None

    def to_pull_step(self) -> list[dict[str, Any]]:
        return self.pull_steps

    def __eq__(self, other: Any) -> bool:
        return self.pull_steps == getattr(other, "pull_steps", None)


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    """Entrypoints and build steps are relative to the directory of prefect.yaml."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)
