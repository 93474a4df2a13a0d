"""Each object pair's record in its own BlueGreenPair's status subresource."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog
from kubernetes_asyncio import client

from gatekeeper import crd, errors
from gatekeeper.config import PairConfig
from gatekeeper.kubeclient import ApiException, read_json
from gatekeeper.state.record import PairState, StateError, parse_record

log = structlog.get_logger()


class ObjectRecords:
    """Each object pair's record in its own BlueGreenPair's status (the `status`
    subresource, written with the resourceVersion read).

    A step loads the record (a GET), then may commit it and publish the verdict: both
    start from the object as last read or written (`_seen`) instead of a GET each, and
    the resourceVersion it carries makes a stale copy a 409, after which they read afresh.
    `load` always reads: a step decides on the stored record, never on a copy."""

    def __init__(self, api: client.ApiClient, *, clock: Callable[[], float] = time.time,
                 retries: int = 8) -> None:
        self.objects = client.CustomObjectsApi(api)
        self.clock = clock
        self.retries = retries
        self._seen: dict[tuple[str, str], dict[str, Any]] = {}
        """(namespace, name) -> the object as last read or written."""

    @staticmethod
    def _where(pair: PairConfig) -> str:
        return f"BlueGreenPair {pair.object_namespace}/{pair.name}"

    @staticmethod
    def _key(pair: PairConfig) -> tuple[str, str]:
        return pair.object_namespace or "", pair.name

    async def read(self, pair: PairConfig) -> dict[str, Any] | None:
        """The object (None when it is gone)."""
        try:
            body: dict[str, Any] = await read_json(
                self.objects.get_namespaced_custom_object, crd.GROUP, crd.VERSION,
                pair.object_namespace, crd.PLURAL, pair.name)
        except errors.APINotFoundError:
            self._seen.pop(self._key(pair), None)
            return None
        except ApiException as exc:
            raise StateError(f"reading {self._where(pair)}: HTTP {exc.status}") from exc
        self._seen[self._key(pair)] = body
        return body

    async def _to_write(self, pair: PairConfig, attempt: int) -> dict[str, Any] | None:
        """The object a write starts from: the copy last seen on the first attempt, a
        fresh read after a conflict (or when none was seen)."""
        seen = self._seen.get(self._key(pair)) if attempt == 0 else None
        return seen if seen is not None else await self.read(pair)

    async def _write_status(self, pair: PairConfig, body: dict[str, Any]) -> None:
        """PUT the status (with the body's resourceVersion); remember the answer."""
        self._seen.pop(self._key(pair), None)
        written: dict[str, Any] = await read_json(
            self.objects.replace_namespaced_custom_object_status, crd.GROUP, crd.VERSION,
            pair.object_namespace, crd.PLURAL, pair.name, body)
        if isinstance(written, dict):
            self._seen[self._key(pair)] = written

    def _parse(self, body: dict[str, Any] | None, pair: PairConfig) -> PairState:
        raw = crd.record_of((body or {}).get("status"))
        if raw is None:
            return PairState()
        if set(raw) == {"record"}:  # not an object
            raw = raw["record"]
        return parse_record(raw, f"{self._where(pair)} status.record", pair.name,
                             self.clock())

    async def load(self, pair: PairConfig) -> PairState:
        """The pair's record; a fresh one when none was written yet (or the object is gone:
        the next write says so)."""
        return self._parse(await self.read(pair), pair)

    async def update(self, pair: PairConfig, mutate: Callable[[PairState], object]
                     ) -> PairState:
        """Read, mutate, write the status with the resourceVersion read; on 409 start over."""
        for attempt in range(self.retries):
            body = await self._to_write(pair, attempt)
            if body is None:
                raise StateError(f"{self._where(pair)} is gone: its record cannot be written")
            state = self._parse(body, pair)
            before = state.to_dict()
            mutate(state)
            after = state.to_dict()
            previous = body.get("status") or {}
            generation = (body.get("metadata") or {}).get("generation")
            status = crd.status_for(after, generation=generation, previous=previous,
                                    now=self.clock())
            if after == before and status == previous:
                return state
            body = {**body, "status": status}
            try:
                await self._write_status(pair, body)
            except errors.APIConflictError:
                log.debug("pair object status conflict; retrying", pair=pair.name)
                continue
            except errors.APINotFoundError as exc:
                raise StateError(f"{self._where(pair)} is gone: its record cannot be "
                                 "written") from exc
            except ApiException as exc:
                raise StateError(f"writing {self._where(pair)} status: HTTP {exc.status} "
                                 f"{exc.reason or ''}".strip()) from exc
            return state
        raise StateError(f"{self._where(pair)}: still conflicting after {self.retries} "
                         "attempts")

    async def publish(self, pair: PairConfig, *, verdict: str | None, score: float | None,
                      reasons: list[str], at: float, forbidden: list[str] | None = None
                      ) -> bool:
        """Show the dark's verdict in the status (summary fields, the Safe condition) and,
        when RBAC refused reads of the pair (`forbidden`) or did before, the Permitted
        condition; no write when both are what the status shows (a score drifting by
        tenths would write every tick). Returns whether it wrote."""
        for attempt in range(self.retries):
            body = await self._to_write(pair, attempt)
            if body is None:
                return False
            previous = body.get("status") or {}
            shown = (previous.get("verdict"), previous.get("score"), previous.get("reasons"))
            rounded = None if score is None else float(round(score))
            new_verdict = verdict is not None and shown != (verdict, rounded, reasons[:10])
            generation = (body.get("metadata") or {}).get("generation")
            permitted = crd.permitted_condition(forbidden or [], generation=generation,
                                                previous=previous, now=at)
            new_permission = permitted is not None
            if not (new_verdict or new_permission):
                return False
            status = dict(previous)
            if new_verdict and verdict is not None:
                status = crd.with_verdict(previous, verdict=verdict, score=score,
                                          reasons=reasons, generation=generation, at=at)
            if permitted is not None:
                status["conditions"] = [c for c in status.get("conditions") or []
                                        if c.get("type") != "Permitted"] + [permitted]
            try:
                await self._write_status(pair, {**body, "status": status})
            except errors.APIConflictError:
                continue
            except ApiException as exc:
                raise StateError(f"writing {self._where(pair)} status: HTTP "
                                 f"{exc.status}") from exc
            return True
        return False


