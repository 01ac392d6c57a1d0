"""Which of the run's services failed it: PostgreSQL (the Optuna storage, reached directly), the
MLflow tracking server, the Prefect API.

When a service stops in the middle of a run, the error that ends it is rarely the first: the
flow's failure is recorded through the same services, and that fails too, each new error holding
the one before as its context. `service_failure` walks the whole chain and names every service
found failing in it, earliest first, in one line each, for the CLI and the flow's log."""

from __future__ import annotations

from urllib.parse import urlsplit


def service_failure(error: BaseException) -> str | None:
    """A message naming each failed service in `error`'s chain with its address and reason, or
    None when no service error is in it (the error is the run's own)."""
    found: dict[str, str] = {}
    for link in reversed(_chain(error)):
        described = _describe(link)
        if described is not None:
            found.setdefault(*described)
    if not found:
        return None
    lines = "\n".join(f"  - {service}: {reason}" for service, reason in found.items())
    return (
        f"the run failed because a service it uses failed:\n{lines}\n"
        "`movierec stack status` shows a stack's services; `movierec stack up` restarts what stopped"
    )


def _chain(error: BaseException) -> list[BaseException]:
    """`error` and every error it was raised from or while handling, outermost first."""
    chain, seen, pending = [], set(), [error]
    while pending:
        link = pending.pop(0)
        if link is None or id(link) in seen:
            continue
        seen.add(id(link))
        chain.append(link)
        pending += [link.__cause__, link.__context__]
    return chain


def _describe(error: BaseException) -> tuple[str, str] | None:
    kind = f"{type(error).__module__}.{type(error).__name__}"
    if kind.startswith(("sqlalchemy.exc.", "psycopg2.")) and type(error).__name__ in (
        "OperationalError",
        "InterfaceError",
    ):
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        return "PostgreSQL (the Optuna study storage, tuning.storage)", reason[:300]
    if kind.startswith("mlflow.") and ("API request to" in str(error) or "Max retries exceeded" in str(error)):
        import mlflow

        return f"the MLflow tracking server {mlflow.get_tracking_uri()}", _first_line(error)
    if kind.startswith(("prefect.exceptions.", "httpx.")):
        request = getattr(error, "_request", None) or getattr(error, "request", None)
        try:
            url = urlsplit(str(request.url))
        except (AttributeError, RuntimeError):  # httpx raises RuntimeError for an unset request
            return None
        reason = _first_line(error).split(" for url ")[0]
        return f"the Prefect API http://{url.netloc}", reason
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]
