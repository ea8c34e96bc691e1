"""Work notices (工作通知): send, follow up, recall (protocol 5).

DingTalk accepts over-quota sends with errcode 0 and then silently drops
them (protocol 5.3), so :meth:`WorkNotices.result` is how a caller learns
who was flow-controlled, forbidden or never reached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bot.dingtalk.http import CallerError, encode_json
from bot.dingtalk.tokens import OpenApi
from bot.messages import Message, MessageError, as_message

logger = logging.getLogger(__name__)

SEND = "/topapi/message/corpconversation/asyncsend_v2"
PROGRESS = "/topapi/message/corpconversation/getsendprogress"
RESULT = "/topapi/message/corpconversation/getsendresult"
RECALL = "/topapi/message/corpconversation/recall"

USERS_PER_CALL = 100
DEPTS_PER_CALL = 20
MSG_MAX_BYTES = 2048

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SendProgress:
    """How far DingTalk got with one task: ``status`` 0 new, 1 running, 2 done."""

    percent: int
    status: int

    @property
    def done(self) -> bool:
        """Whether DingTalk finished delivering the task."""
        return self.status == 2


@dataclass(frozen=True)
class Forbidden:
    """One recipient DingTalk refused, with its flow-control code (protocol 5.4)."""

    user_id: str
    code: int
    count: int


@dataclass(frozen=True)
class SendResult:
    """Who a task reached and who it did not.

    ``flow_controlled`` lists users dropped by flow control and ``forbidden``
    the refusals with their codes (143105 daily quota, 143106 duplicate
    content, …); ``failed`` users may be sent to again.
    """

    invalid: tuple[str, ...] = ()
    invalid_depts: tuple[int, ...] = ()
    flow_controlled: tuple[str, ...] = ()
    forbidden: tuple[Forbidden, ...] = ()
    failed: tuple[str, ...] = ()
    read: tuple[str, ...] = ()
    unread: tuple[str, ...] = ()

    @property
    def undelivered(self) -> bool:
        """Whether anyone was not reached (invalid, refused or failed)."""
        return bool(self.invalid or self.invalid_depts or self.flow_controlled
                    or self.forbidden or self.failed)


class WorkNotices:
    """Work notices from one app agent; every call goes to DingTalk (oapi)."""

    def __init__(self, openapi: OpenApi, agent_id: int | None) -> None:
        self.openapi = openapi
        self.agent_id = agent_id

    def __repr__(self) -> str:
        return f"WorkNotices(agent_id={self.agent_id!r})"

    def send(
        self,
        message: str | Message,
        *,
        user_ids: Sequence[str] = (),
        dept_ids: Sequence[int] = (),
        to_all: bool = False,
        progress: Progress | None = None,
    ) -> list[int]:
        """Send ``message`` to users, departments, or everyone; return the task ids.

        Users go 100 per call and departments 20 per call (both may be given);
        ``to_all`` is one call (DingTalk allows it 3 times a day).
        ``progress(done, total)`` is called after each call, counting
        recipients (user and department ids). Raises MessageError before any
        call when the ``msg`` is over 2048 bytes, and ``CallerError`` with no
        recipients or no agent id. A failure mid-fan-out raises; the tasks
        already sent stay sent.
        """
        msg = self._checked_msg(message)
        agent_id = self._agent()
        if to_all:
            return [self._send_one({"agent_id": agent_id, "to_all_user": True,
                                    "msg": msg})]
        if not user_ids and not dept_ids:
            raise CallerError(SEND, "no recipients: give user_ids, dept_ids or to_all")

        batches = [("userid_list", list(chunk))
                   for chunk in _chunks(list(user_ids), USERS_PER_CALL)]
        batches += [("dept_id_list", list(chunk))
                    for chunk in _chunks(list(dept_ids), DEPTS_PER_CALL)]
        total = len(user_ids) + len(dept_ids)
        done = 0
        task_ids = []
        for field, ids in batches:
            body = {"agent_id": agent_id, field: ",".join(str(i) for i in ids),
                    "msg": msg}
            task_ids.append(self._send_one(body))
            done += len(ids)
            if progress is not None:
                progress(done, total)
        return task_ids

    def progress(self, task_id: int) -> SendProgress:
        """How far DingTalk got with ``task_id`` (tasks of the last 24 h only)."""
        reply = self.openapi.oapi(
            "POST", PROGRESS, body={"agent_id": self._agent(), "task_id": task_id})
        data = reply.get("progress") or {}
        return SendProgress(int(data.get("progress_in_percent", 0)),
                            int(data.get("status", 0)))

    def result(self, task_id: int) -> SendResult:
        """Who ``task_id`` reached and who not (tasks of the last 24 h only)."""
        reply = self.openapi.oapi(
            "POST", RESULT, body={"agent_id": self._agent(), "task_id": task_id})
        return _parse_result(reply.get("send_result") or {})

    def recall(self, task_id: int) -> None:
        """Withdraw a sent notice; raises CallerError (400002) for an unknown task."""
        self.openapi.oapi(
            "POST", RECALL, body={"agent_id": self._agent(), "msg_task_id": task_id})

    def _send_one(self, body: dict[str, Any]) -> int:
        reply = self.openapi.oapi("POST", SEND, body=body)
        task_id = int(reply.get("task_id", 0))
        logger.info("work notice sent: task_id=%s", task_id)
        return task_id

    def _agent(self) -> int:
        if self.agent_id is None:
            raise CallerError(
                SEND, "no agent id: set DINGTALK_AGENT_ID to send work notices")
        return self.agent_id

    @staticmethod
    def _checked_msg(message: str | Message) -> dict:
        # to_work_notice() checks the limit too; checking here again, on the
        # very bytes the transport sends, keeps the two serialisations honest.
        msg = as_message(message).to_work_notice()
        size = len(encode_json(msg))
        if size > MSG_MAX_BYTES:
            raise MessageError("work notice msg",
                               f"at most {MSG_MAX_BYTES} bytes, got {size}")
        return msg


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _parse_result(data: dict) -> SendResult:
    forbidden = tuple(
        Forbidden(str(item.get("userid", "")), int(item.get("code", 0)),
                  int(item.get("count", 0)))
        for item in data.get("forbidden_list") or [])
    return SendResult(
        invalid=_strs(data.get("invalid_user_id_list")),
        invalid_depts=tuple(int(d) for d in data.get("invalid_dept_id_list") or []),
        flow_controlled=_strs(data.get("forbidden_user_id_list")),
        forbidden=forbidden,
        failed=_strs(data.get("failed_user_id_list")),
        read=_strs(data.get("read_user_id_list")),
        unread=_strs(data.get("unread_user_id_list")),
    )


def _strs(value: Any) -> tuple[str, ...]:
    # Lists usually arrive as JSON arrays; accept a comma-separated string too.
    if isinstance(value, str):
        return tuple(v for v in value.split(",") if v)
    return tuple(str(v) for v in value or [])
