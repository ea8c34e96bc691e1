"""Contacts: department tree, paged users, one user, auth codes, whole-org walk."""

from __future__ import annotations

import pytest

from bot.dingtalk import CallerError, DingTalkClient
from bot.simulator import Org, StandIn
from bot.state.sqlite import SQLiteStore
from tests.dingtalk_kit import make_client, open_standin, standin, store

USER_LIST = "/topapi/v2/user/list"


@pytest.fixture(scope="module")
def big_standin():
    # Dept 1 holds the 125 even-numbered users and 5 odd ones that sit in
    # two departments: 130 members, two pages of 100.
    with open_standin(org=Org.generate(users=250, departments=2)) as server:
        yield server


def fresh_client(server: StandIn, store: SQLiteStore) -> DingTalkClient:
    """A client with this file's timeout and retries, after resetting ``server``."""
    server.reset()
    return make_client(server, store, timeout=(2.0, 5.0), max_attempts=3)


@pytest.fixture
def client(standin, store):
    return fresh_client(standin, store)


def test_department_tree_is_walked_breadth_first(client):
    """Every department below the root comes back, parents before children."""
    departments = client.contacts.departments()

    assert [(d.dept_id, d.name, d.parent_id) for d in departments] == [
        (2, "Engineering", 1), (3, "Operations", 1), (4, "Platform", 2)]


def test_users_of_a_department_are_only_its_direct_members(client):
    """users(2) lists Engineering's own members, not Platform's."""
    users = list(client.contacts.users(2))

    assert sorted(u.userid for u in users) == ["lisi", "wangwu", "zhengshi"]
    assert next(u for u in users if u.userid == "wangwu").dept_ids == (2, 3)


def test_user_pages_follow_the_cursor(big_standin, store):
    """A department larger than one page is read over several cursor pages."""
    client = fresh_client(big_standin, store)

    users = list(client.contacts.users(1))

    calls = big_standin.calls_to(USER_LIST)
    assert len(users) == len({u.userid for u in users}) == 130
    assert [c.body["cursor"] for c in calls][:1] == [0]
    assert len(calls) == 2 and all(c.body["size"] == 100 for c in calls)
    assert calls[1].body["cursor"] == calls[0].response["result"]["next_cursor"]


def test_all_users_visits_everyone_once(big_standin, store):
    """The whole-org walk yields each user once although some sit in two depts."""
    client = fresh_client(big_standin, store)

    userids = [u.userid for u in client.contacts.all_users()]

    assert len(userids) == len(set(userids)) == 250
    assert len(big_standin.calls_to(USER_LIST)) == 4  # two departments, two pages


def test_one_user_is_looked_up_by_id(client):
    """user() returns the details of one user."""
    user = client.contacts.user("zhangsan")

    assert (user.userid, user.name, user.dept_ids, user.title) == (
        "zhangsan", "张三", (1,), "CEO")


def test_unknown_user_is_a_caller_error_and_not_retried(client, standin):
    """60121 for an unknown user raises CallerError after one call."""
    with pytest.raises(CallerError) as caught:
        client.contacts.user("nobody")

    assert caught.value.errcode == 60121
    assert len(standin.calls_to("/topapi/v2/user/get")) == 1


def test_unknown_department_is_a_caller_error(client):
    """60003 for an unknown department raises CallerError."""
    with pytest.raises(CallerError) as caught:
        client.contacts.subdepartments(999)

    assert caught.value.errcode == 60003


def test_auth_code_names_its_user_once(client, standin):
    """A 免登 code resolves to its user; a second use is refused."""
    code = standin.auth_code("zhangsan")

    who = client.contacts.user_by_auth_code(code)

    assert (who.userid, who.name, who.sys_level) == ("zhangsan", "张三", 1)
    with pytest.raises(CallerError):
        client.contacts.user_by_auth_code(code)
