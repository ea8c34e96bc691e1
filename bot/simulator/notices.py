"""Work notices (工作通知): send, progress, result and recall (protocol 5).

Each accepted send becomes a ``Task`` whose recipients are resolved at send
time: unknown user ids become ``invalid_user_id_list``, and users marked with
``forbid()`` before the send land in the forbidden lists, as DingTalk's flow
control would put them. Every task reports itself finished (status 2).
"""

import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.simulator.org import Org
from bot.simulator.wire import ApiRequest, Reply, as_int, bad_parameter, oapi_error, ok

MAX_USERS = 100
MAX_DEPTS = 20
MAX_MSG_BYTES = 2048
NOTICE_TYPES = frozenset(
    {"text", "markdown", "link", "image", "voice", "file", "oa", "action_card"}
)


@dataclass
class Task:
    """One accepted work notice and what became of it."""

    task_id: int
    userid_list: list[str]
    dept_id_list: list[int]
    to_all_user: bool
    msg: dict[str, Any]
    delivered: list[str]
    invalid_user_ids: list[str]
    invalid_dept_ids: list[int]
    forbidden: dict[str, int]
    at: float
    read: set[str] = field(default_factory=set)
    recalled: bool = False


def _split_ids(value: Any) -> list[str] | None:
    """Ids from DingTalk's comma-separated string; None if not a string."""
    if value is None or value == "":
        return []
    if not isinstance(value, str):
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def _parse_msg(value: Any) -> tuple[dict | None, int]:
    """The msg object and its size in bytes; (None, 0) when it is not an object.

    A string is measured as sent; an object as compact UTF-8 JSON, the
    smallest form a client could have sent it in.
    """
    if isinstance(value, str):
        size = len(value.encode("utf-8"))
        try:
            value = json.loads(value)
        except ValueError:
            return None, size
    else:
        compact = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        size = len(compact.encode("utf-8"))
    return (value if isinstance(value, dict) else None), size


class Notices:
    """The work-notice tasks of one app, with a settable forbidden set."""

    def __init__(self, org: Org, agent_id: int, clock: Callable[[], float]) -> None:
        self._org = org
        self._agent_id = agent_id
        self._clock = clock
        self._lock = threading.Lock()
        self._tasks: dict[int, Task] = {}
        self._forbidden: dict[str, int] = {}
        self._received: dict[str, int] = {}
        self._ids = itertools.count(256_271_667_526)

    def forbid(self, user_ids: list[str], code: int = 143105) -> None:
        """Flow-control these users in later sends, reporting ``code``."""
        with self._lock:
            for userid in user_ids:
                self._forbidden[userid] = code

    def forbidden(self) -> dict[str, int]:
        """A copy of the forbidden set: userid -> code."""
        with self._lock:
            return dict(self._forbidden)

    def clear_forbidden(self) -> None:
        """Lift every ``forbid()``."""
        with self._lock:
            self._forbidden.clear()

    def mark_read(self, task_id: int, user_ids: list[str]) -> None:
        """Move these recipients of ``task_id`` to ``read_user_id_list``.

        Raises KeyError for an unknown task.
        """
        with self._lock:
            self._tasks[task_id].read.update(user_ids)

    @property
    def tasks(self) -> list[Task]:
        """Every accepted task, oldest first (the objects, not copies)."""
        with self._lock:
            return list(self._tasks.values())

    def _check_agent(self, fields: dict[str, Any]) -> Reply | None:
        if as_int(fields.get("agent_id")) != self._agent_id:
            return bad_parameter("agent_id")
        return None

    def _recipients(
        self, users: list[str], depts: list[int], to_all: bool
    ) -> list[str]:
        if to_all:
            return [user.userid for user in self._org.users]
        found = dict.fromkeys(userid for userid in users if self._org.user(userid))
        for dept_id in depts:
            if self._org.department(dept_id) is None:
                continue
            for sub in self._org.subtree(dept_id):
                found.update(dict.fromkeys(u.userid for u in self._org.members(sub)))
        return list(found)

    def send(self, request: ApiRequest) -> Reply:
        """``asyncsend_v2``: JSON or form body; 40035 for any bad field."""
        fields = request.fields()
        refusal = self._check_agent(fields)
        if refusal:
            return refusal

        users = _split_ids(fields.get("userid_list"))
        depts = _split_ids(fields.get("dept_id_list"))
        if users is None or depts is None:
            return bad_parameter(
                "userid_list and dept_id_list are comma-separated strings"
            )
        if len(users) > MAX_USERS:
            return bad_parameter(f"userid_list has more than {MAX_USERS} ids")
        if len(depts) > MAX_DEPTS:
            return bad_parameter(f"dept_id_list has more than {MAX_DEPTS} ids")
        if not all(dept.isdigit() for dept in depts):
            return bad_parameter("dept_id_list holds numbers")
        to_all = fields.get("to_all_user") in (True, "true")
        if not (users or depts or to_all):
            return bad_parameter("userid_list, dept_id_list or to_all_user is required")

        msg, size = _parse_msg(fields.get("msg"))
        if msg is None:
            return bad_parameter("msg must be a JSON object")
        if size > MAX_MSG_BYTES:
            return bad_parameter(f"msg is longer than {MAX_MSG_BYTES} bytes")
        msgtype = msg.get("msgtype")
        if msgtype not in NOTICE_TYPES or not isinstance(msg.get(msgtype), dict):
            return bad_parameter("msg.msgtype is unknown or its content is missing")

        task = self._record(users, [int(dept) for dept in depts], to_all, msg)
        return ok(task_id=task.task_id)

    def _record(
        self, users: list[str], depts: list[int], to_all: bool, msg: dict
    ) -> Task:
        recipients = self._recipients(users, depts, to_all)
        with self._lock:
            forbidden = {
                u: self._forbidden[u] for u in recipients if u in self._forbidden
            }
            for userid in recipients:
                self._received[userid] = self._received.get(userid, 0) + 1
            task = Task(
                task_id=next(self._ids),
                userid_list=users,
                dept_id_list=depts,
                to_all_user=to_all,
                msg=msg,
                delivered=[u for u in recipients if u not in forbidden],
                invalid_user_ids=[u for u in users if self._org.user(u) is None],
                invalid_dept_ids=[d for d in depts if self._org.department(d) is None],
                forbidden=forbidden,
                at=self._clock(),
            )
            self._tasks[task.task_id] = task
            return task

    def _find(self, fields: dict[str, Any], key: str) -> Task | None:
        with self._lock:
            return self._tasks.get(as_int(fields.get(key)))

    def progress(self, request: ApiRequest) -> Reply:
        """``getsendprogress``: always finished; 40035 for a bad agent or task."""
        fields = request.fields()
        if self._check_agent(fields) or self._find(fields, "task_id") is None:
            return bad_parameter("agent_id or task_id")
        return ok(progress={"progress_in_percent": 100, "status": 2})

    def result(self, request: ApiRequest) -> Reply:
        """``getsendresult``: who got it, who was invalid, forbidden or has read it."""
        fields = request.fields()
        task = self._find(fields, "task_id")
        if self._check_agent(fields) or task is None:
            return bad_parameter("agent_id or task_id")

        with self._lock:
            read = [u for u in task.delivered if u in task.read]
            unread = [u for u in task.delivered if u not in task.read]
            counts = {u: self._received.get(u, 1) for u in task.forbidden}
        forbidden_list = [
            {"code": code, "count": counts[userid], "userid": userid}
            for userid, code in task.forbidden.items()
        ]
        send_result = {
            "invalid_user_id_list": task.invalid_user_ids,
            "forbidden_user_id_list": list(task.forbidden),
            "failed_user_id_list": [],
            "read_user_id_list": read,
            "unread_user_id_list": unread,
            "invalid_dept_id_list": task.invalid_dept_ids,
            "forbidden_list": forbidden_list,
        }
        return ok(send_result=send_result)

    def recall(self, request: ApiRequest) -> Reply:
        """``recall`` by ``msg_task_id``: 400002 for a bad agent or task id."""
        fields = request.fields()
        task = self._find(fields, "msg_task_id")
        if self._check_agent(fields) or task is None:
            return oapi_error(400002, "无效的agent_id或者msg_task_id")
        with self._lock:
            task.recalled = True
        return ok()
