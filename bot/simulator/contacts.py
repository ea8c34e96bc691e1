"""Contacts (通讯录) endpoints over an ``Org`` (protocol 6), plus login codes.

Errors follow DingTalk: 60003 unknown department, 60121 unknown user, 40035
bad parameter, and 40078 for an auth code that is unknown, used or expired.
"""

import secrets
import threading
from collections.abc import Callable
from typing import Any

from bot.simulator.org import ROOT_DEPT_ID, Department, Org
from bot.simulator.wire import ApiRequest, Reply, as_int, bad_parameter, oapi_error, ok

MAX_PAGE_SIZE = 100
AUTH_CODE_TTL = 300


def _no_department() -> Reply:
    return oapi_error(60003, "部门不存在")


class Contacts:
    """Read-only views of the org, and single-use login auth codes."""

    def __init__(self, org: Org, clock: Callable[[], float]) -> None:
        self._org = org
        self._clock = clock
        self._lock = threading.Lock()
        self._codes: dict[str, tuple[str, float]] = {}

    def auth_code(self, userid: str) -> str:
        """A login auth code for ``userid``: single use, valid 5 minutes.

        Raises KeyError when the user is not in the org.
        """
        if self._org.user(userid) is None:
            raise KeyError(userid)
        code = secrets.token_hex(16)
        with self._lock:
            self._codes[code] = (userid, self._clock() + AUTH_CODE_TTL)
        return code

    def _department(
        self, fields: dict[str, Any], default: int | None
    ) -> Department | None:
        dept_id = as_int(fields.get("dept_id", default))
        return None if dept_id is None else self._org.department(dept_id)

    def listsub(self, request: ApiRequest) -> Reply:
        """``department/listsub``: direct children only; root when dept_id is absent."""
        dept = self._department(request.fields(), ROOT_DEPT_ID)
        if dept is None:
            return _no_department()
        result = [
            {
                "dept_id": child.dept_id,
                "name": child.name,
                "parent_id": child.parent_id,
                "create_dept_group": True,
                "auto_add_user": True,
            }
            for child in self._org.children(dept.dept_id)
        ]
        return ok(result=result)

    def listsubid(self, request: ApiRequest) -> Reply:
        """``department/listsubid``: ids of the direct children."""
        dept = self._department(request.fields(), None)
        if dept is None:
            return _no_department()
        children = [child.dept_id for child in self._org.children(dept.dept_id)]
        return ok(result={"dept_id_list": children})

    def department(self, request: ApiRequest) -> Reply:
        """``department/get``; ``member_count`` counts the whole subtree."""
        dept = self._department(request.fields(), None)
        if dept is None:
            return _no_department()
        subtree_users = {
            user.userid
            for sub in self._org.subtree(dept.dept_id)
            for user in self._org.members(sub)
        }
        result = {
            "dept_id": dept.dept_id,
            "name": dept.name,
            "order": dept.order,
            "dept_manager_userid_list": list(dept.manager_userids),
            "member_count": len(subtree_users),
            "owning_member_count": len(self._org.members(dept.dept_id)),
            "create_dept_group": True,
            "auto_add_user": True,
            "hide_dept": False,
            "outer_dept": False,
        }
        if dept.parent_id is not None:
            result["parent_id"] = dept.parent_id
        return ok(result=result)

    def user_list(self, request: ApiRequest) -> Reply:
        """``user/list``: one page of a department's direct members.

        ``next_cursor`` is present only while ``has_more`` is true.
        """
        fields = request.fields()
        cursor = as_int(fields.get("cursor", 0))
        size = as_int(fields.get("size"))
        if cursor is None or cursor < 0:
            return bad_parameter("cursor")
        if size is None or not 1 <= size <= MAX_PAGE_SIZE:
            return bad_parameter(f"size must be 1..{MAX_PAGE_SIZE}")
        dept = self._department(fields, None)
        if dept is None:
            return _no_department()

        members = self._org.members(dept.dept_id)
        page = members[cursor : cursor + size]
        result: dict[str, Any] = {
            "has_more": cursor + size < len(members),
            "list": [user.to_dict() for user in page],
        }
        if result["has_more"]:
            result["next_cursor"] = cursor + size
        return ok(result=result)

    def user(self, request: ApiRequest) -> Reply:
        """``user/get``: 60121 for an unknown userid."""
        userid = request.fields().get("userid")
        user = self._org.user(userid) if isinstance(userid, str) else None
        if user is None:
            return oapi_error(60121, "找不到该用户")
        result = user.to_dict()
        result["dept_order_list"] = [
            {"dept_id": dept_id, "order": 0} for dept_id in user.dept_id_list
        ]
        result["leader_in_dept"] = [
            {"dept_id": dept_id, "leader": user.userid in self._managers(dept_id)}
            for dept_id in user.dept_id_list
        ]
        result["role_list"] = []
        result["senior"] = False
        result["real_authed"] = True
        return ok(result=result)

    def _managers(self, dept_id: int) -> tuple[str, ...]:
        dept = self._org.department(dept_id)
        return dept.manager_userids if dept else ()

    def user_ids(self, request: ApiRequest) -> Reply:
        """``user/listid``: every userid directly in the department."""
        dept = self._department(request.fields(), None)
        if dept is None:
            return _no_department()
        userids = [user.userid for user in self._org.members(dept.dept_id)]
        return ok(result={"userid_list": userids})

    def user_info(self, request: ApiRequest) -> Reply:
        """``user/getuserinfo``: trades an auth code for the user; the code is spent."""
        code = request.fields().get("code")
        with self._lock:
            entry = self._codes.pop(code, None) if isinstance(code, str) else None
        if entry is None or entry[1] <= self._clock():
            return oapi_error(40078, "不存在的临时授权码")

        user = self._org.user(entry[0])
        sys_level = 1 if user.admin else (100 if user.boss else 0)
        result = {
            "userid": user.userid,
            "name": user.name,
            "unionid": user.unionid,
            "associated_unionid": "",
            "device_id": "standin-device",
            "sys": user.admin,
            "sys_level": sys_level,
        }
        return ok(result=result)
