"""Micro-batching of known users' recommendation requests: one product for many requests.

Scoring one user reads the whole item matrix (59k movies x the model's dimensions: megabytes)
for one row of scores; scoring 32 users at once reads it once. `UserBatcher.known_user` queues a
request and awaits its answer; one drain task takes everything queued (up to
`serving.batch_users`), scores it with `LoadedModel.known_users` in a worker thread (numpy
releases the GIL, so the event loop goes on accepting requests meanwhile) and answers each
request. Requests that arrive while a batch is scored form the next one: a quiet server answers
each request alone, straight away; a busy one answers them in batches as large as its load.

A request is answered by the model it started with (`holder.current` read once, as every
endpoint does): a batch that spans a hot swap is scored per model.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from movierec.serving.champion import LoadedModel


@dataclass
class _Request:
    loaded: LoadedModel
    index: int
    k: int
    answer: asyncio.Future


class UserBatcher:
    """Batches `LoadedModel.known_users` calls of one event loop (see the module docstring)."""

    def __init__(self, max_users: int) -> None:
        if max_users < 1:
            raise ValueError(f"max_users must be at least 1, got {max_users}")
        self.max_users = max_users
        self._queue: list[_Request] = []
        self._drain: asyncio.Task | None = None

    async def known_user(self, loaded: LoadedModel, index: int, k: int) -> list[dict]:
        """`loaded.known_users([index], [k])[0]`, scored together with the requests beside it."""
        request = _Request(loaded, index, k, asyncio.get_running_loop().create_future())
        self._queue.append(request)
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._answer_queued())
        return await request.answer

    async def _answer_queued(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.max_users], self._queue[self.max_users :]
            for loaded in {id(request.loaded): request.loaded for request in batch}.values():
                requests = [request for request in batch if request.loaded is loaded]
                try:
                    answers = await asyncio.to_thread(
                        loaded.known_users, [request.index for request in requests], [request.k for request in requests]
                    )
                except Exception as error:  # every request of the batch gets the error (a 500)
                    for request in requests:
                        if not request.answer.done():
                            request.answer.set_exception(error)
                    continue
                for request, answer in zip(requests, answers, strict=True):
                    if not request.answer.done():  # a client that went away cancelled its future
                        request.answer.set_result(answer)

    async def close(self) -> None:
        """Let the queued requests be answered (the app's shutdown)."""
        if self._drain is not None:
            await asyncio.shield(self._drain)
