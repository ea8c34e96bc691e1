"""The org's departments and users (topapi v2, protocol 6).

Missing contact permissions show up as ``CallerError`` 60011; an unknown
department as 60003 and an unknown user as 60121.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bot.dingtalk.tokens import OpenApi

LIST_SUB = "/topapi/v2/department/listsub"
USER_LIST = "/topapi/v2/user/list"
USER_GET = "/topapi/v2/user/get"
USER_INFO = "/topapi/v2/user/getuserinfo"
ROOT_DEPT = 1
# The maximum ``size`` of v2/user/list is UNCONFIRMED; its siblings cap at 100.
PAGE_SIZE = 100


@dataclass(frozen=True)
class Department:
    """A department; ``raw`` keeps every field DingTalk sent."""

    dept_id: int
    name: str
    parent_id: int | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class User:
    """A user; fields the app may not see (``mobile``, ``email``) are empty."""

    userid: str
    name: str
    dept_ids: tuple[int, ...] = ()
    unionid: str = ""
    title: str = ""
    mobile: str = field(default="", repr=False)
    email: str = field(default="", repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_reply(cls, data: dict[str, Any]) -> User:
        """Build from a ``user/list`` item or a ``user/get`` result."""
        return cls(
            userid=str(data.get("userid", "")),
            name=str(data.get("name", "")),
            dept_ids=tuple(int(d) for d in data.get("dept_id_list") or ()),
            unionid=str(data.get("unionid", "")),
            title=str(data.get("title", "")),
            mobile=str(data.get("mobile", "")),
            email=str(data.get("email", "")),
            raw=data,
        )


@dataclass(frozen=True)
class AuthUser:
    """Who signed in with a 免登 auth code; ``sys_level`` 1 main admin, 2 sub-admin,
    100 boss, 0 anyone else."""

    userid: str
    name: str
    unionid: str
    sys_level: int


class Contacts:
    """Read-only access to the org chart; every call goes to DingTalk (oapi)."""

    def __init__(self, openapi: OpenApi) -> None:
        self.openapi = openapi

    def __repr__(self) -> str:
        return "Contacts()"

    def subdepartments(self, dept_id: int = ROOT_DEPT) -> list[Department]:
        """The direct children of ``dept_id``."""
        reply = self.openapi.oapi("POST", LIST_SUB, body={"dept_id": dept_id})
        return [
            Department(int(d["dept_id"]), str(d.get("name", "")),
                       _int_or_none(d.get("parent_id")), d)
            for d in reply.get("result") or []
        ]

    def departments(self, root: int = ROOT_DEPT) -> list[Department]:
        """Every department under ``root`` (not ``root`` itself), breadth first.

        One call per department: a large org takes a while.
        """
        found: list[Department] = []
        queue = deque([root])
        seen = {root}
        while queue:
            for dept in self.subdepartments(queue.popleft()):
                if dept.dept_id in seen:
                    continue
                seen.add(dept.dept_id)
                found.append(dept)
                queue.append(dept.dept_id)
        return found

    def users(self, dept_id: int) -> Iterator[User]:
        """The users directly in ``dept_id`` (not sub-departments), page by page.

        Lazy: each page is fetched when the previous one is used up.
        """
        cursor = 0
        while True:
            reply = self.openapi.oapi("POST", USER_LIST, body={
                "dept_id": dept_id, "cursor": cursor, "size": PAGE_SIZE})
            page = reply.get("result") or {}
            for item in page.get("list") or []:
                yield User.from_reply(item)
            next_cursor = page.get("next_cursor")
            if not page.get("has_more") or next_cursor is None:
                return
            cursor = next_cursor

    def all_users(self, root: int = ROOT_DEPT) -> Iterator[User]:
        """Every user in ``root`` and below, once each (some sit in several depts)."""
        seen: set[str] = set()
        for dept_id in [root, *(d.dept_id for d in self.departments(root))]:
            for user in self.users(dept_id):
                if user.userid not in seen:
                    seen.add(user.userid)
                    yield user

    def user(self, userid: str) -> User:
        """One user's details; CallerError 60121 when there is no such user."""
        reply = self.openapi.oapi("POST", USER_GET, body={"userid": userid})
        return User.from_reply(reply.get("result") or {})

    def user_by_auth_code(self, code: str) -> AuthUser:
        """Who a 免登 auth code belongs to; a code works once, within 5 minutes."""
        reply = self.openapi.oapi("POST", USER_INFO, body={"code": code})
        data = reply.get("result") or {}
        return AuthUser(str(data.get("userid", "")), str(data.get("name", "")),
                        str(data.get("unionid", "")), int(data.get("sys_level", 0)))


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
