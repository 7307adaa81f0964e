"""``/pushrules/`` (CS "Push Rules: API"): the whole set, one kind, one rule, and per-rule edits (PUT with
``before``/``after``, DELETE, ``enabled``, ``actions``). The rules themselves and the edits are pure
(ranvier/push/rules.py); this module reads and writes the user's ``m.push_rules`` account data and turns
``PushRuleError`` into the spec's errors. Only the ``global`` scope exists.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..push.rules import (
    ACCOUNT_DATA_TYPE,
    KINDS,
    PushRuleError,
    delete_rule,
    find_rule,
    merged_ruleset,
    put_rule,
    set_attribute,
    stored_form,
)
from ..storage.protocols.composite import HasAccountData
from .auth import Authenticator
from .errors import MatrixError
from .http_util import read_json_body

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")


def _error(exc: PushRuleError) -> MatrixError:
    return MatrixError(exc.status, exc.errcode, exc.message)


def _scope(request: web.Request) -> None:
    if request.match_info.get("scope", "global") != "global":
        raise MatrixError(400, "M_INVALID_PARAM", "The only push rule scope is 'global'")


class PushRuleHandlers:
    def __init__(
        self, authenticator: Authenticator, storage: HasAccountData, on_change: Callable[[], None]
    ) -> None:
        self._auth = authenticator
        self._storage = storage
        self._on_change = on_change  # wakes long-polling /sync: m.push_rules is account data
        self._locks: dict[str, asyncio.Lock] = {}

    def routes(self) -> list[web.RouteDef]:
        r: list[web.RouteDef] = []
        for p in PREFIXES:
            rule = p + "/pushrules/{scope}/{kind}/{rule_id}"
            r += [
                web.get(p + "/pushrules/", self.all_rules),
                web.get(p + "/pushrules", self.all_rules),
                web.get(p + "/pushrules/{scope}/", self.scope_rules),
                web.get(p + "/pushrules/{scope}", self.scope_rules),
                web.get(p + "/pushrules/{scope}/{kind}/", self.kind_rules),
                web.get(p + "/pushrules/{scope}/{kind}", self.kind_rules),
                web.get(rule, self.get_rule),
                web.put(rule, self.put_rule),
                web.delete(rule, self.delete_rule),
                web.get(rule + "/{attr:enabled|actions}", self.get_attribute),
                web.put(rule + "/{attr:enabled|actions}", self.put_attribute),
            ]
        return r

    async def _ruleset(self, user_id: str) -> dict[str, list[dict[str, Any]]]:
        stored = await self._storage.account_data.get_global(user_id, ACCOUNT_DATA_TYPE)
        return merged_ruleset(user_id, stored)

    async def _edit(self, user_id: str, edit: Callable[[dict[str, list[dict[str, Any]]]], Any]) -> None:
        # One edit at a time per user: each is a read-modify-write of the stored set.
        async with self._locks.setdefault(user_id, asyncio.Lock()):
            try:
                new = edit(await self._ruleset(user_id))
            except PushRuleError as exc:
                raise _error(exc) from None
            await self._storage.account_data.put_global(user_id, ACCOUNT_DATA_TYPE, stored_form(new))
        self._on_change()

    async def all_rules(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        return web.json_response({"global": await self._ruleset(requester.user_id)})

    async def scope_rules(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        _scope(request)
        return web.json_response(await self._ruleset(requester.user_id))

    async def kind_rules(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        _scope(request)
        kind = request.match_info["kind"]
        if kind not in KINDS:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown push rule kind {kind!r}")
        return web.json_response({kind: (await self._ruleset(requester.user_id))[kind]})

    async def get_rule(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        _scope(request)
        try:
            rule = find_rule(
                await self._ruleset(requester.user_id),
                request.match_info["kind"],
                request.match_info["rule_id"],
            )
        except PushRuleError as exc:
            raise _error(exc) from None
        return web.json_response(rule)

    async def put_rule(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        _scope(request)
        body = await read_json_body(request)
        kind, rule_id = request.match_info["kind"], request.match_info["rule_id"]
        before, after = request.query.get("before"), request.query.get("after")
        await self._edit(requester.user_id, lambda rs: put_rule(rs, kind, rule_id, body, before, after))
        return web.json_response({})

    async def delete_rule(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        _scope(request)
        kind, rule_id = request.match_info["kind"], request.match_info["rule_id"]
        await self._edit(requester.user_id, lambda rs: delete_rule(rs, kind, rule_id))
        return web.json_response({})

    async def get_attribute(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        _scope(request)
        attr = request.match_info["attr"]
        try:
            rule = find_rule(
                await self._ruleset(requester.user_id),
                request.match_info["kind"],
                request.match_info["rule_id"],
            )
        except PushRuleError as exc:
            raise _error(exc) from None
        return web.json_response({attr: rule.get(attr, True if attr == "enabled" else [])})

    async def put_attribute(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        _scope(request)
        attr = request.match_info["attr"]
        body = await read_json_body(request)
        if attr not in body:
            raise MatrixError(400, "M_MISSING_PARAM", f"Missing '{attr}'")
        kind, rule_id = request.match_info["kind"], request.match_info["rule_id"]
        value = body[attr]
        await self._edit(requester.user_id, lambda rs: set_attribute(rs, kind, rule_id, attr, value))
        return web.json_response({})
