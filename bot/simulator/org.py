"""The stand-in's organisation: departments, users and two ways to build one.

An ``Org`` is immutable once built, so the contact endpoints read it without a
lock. ``Org.small()`` is a hand-written org for readable tests;
``Org.generate()`` builds a large one deterministically for benchmarks.
"""

import random
from collections.abc import Iterable
from dataclasses import dataclass

ROOT_DEPT_ID = 1

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂"
_TITLES = ("工程师", "高级工程师", "产品经理", "运维工程师", "设计师", "测试工程师")


@dataclass(frozen=True)
class Department:
    """One department; the root has ``parent_id`` None."""

    dept_id: int
    name: str
    parent_id: int | None
    order: int = 0
    manager_userids: tuple[str, ...] = ()


@dataclass(frozen=True)
class User:
    """One member of the org, with the fields the contact APIs return."""

    userid: str
    name: str
    dept_id_list: tuple[int, ...]
    mobile: str = ""
    title: str = ""
    email: str = ""
    job_number: str = ""
    admin: bool = False
    boss: bool = False
    active: bool = True
    hired_date: int = 0

    @property
    def unionid(self) -> str:
        """A stable fake unionid derived from the userid."""
        return f"union-{self.userid}"

    def to_dict(self) -> dict:
        """The user as ``topapi/v2/user/list`` and ``user/get`` show it."""
        return {
            "userid": self.userid,
            "unionid": self.unionid,
            "name": self.name,
            "avatar": "",
            "mobile": self.mobile,
            "title": self.title,
            "email": self.email,
            "job_number": self.job_number,
            "dept_id_list": list(self.dept_id_list),
            "leader": False,
            "admin": self.admin,
            "boss": self.boss,
            "active": self.active,
            "hired_date": self.hired_date,
            "extension": "{}",
        }


class Org:
    """Departments in a tree under dept 1, and the users in them.

    Raises ValueError when built from an inconsistent tree: no root 1, a
    duplicate id, a parent that does not exist, or a user in an unknown
    department.
    """

    def __init__(
        self, departments: Iterable[Department], users: Iterable[User]
    ) -> None:
        self._departments: dict[int, Department] = {}
        self._children: dict[int, list[int]] = {}
        self._members: dict[int, list[str]] = {}
        self._users: dict[str, User] = {}

        for dept in departments:
            if dept.dept_id in self._departments:
                raise ValueError(f"department {dept.dept_id} is defined twice")
            self._departments[dept.dept_id] = dept
            self._children[dept.dept_id] = []
            self._members[dept.dept_id] = []
        self._link_departments()

        for user in users:
            self._add_user(user)

    def _link_departments(self) -> None:
        root = self._departments.get(ROOT_DEPT_ID)
        if root is None or root.parent_id is not None:
            raise ValueError("an org needs a root department 1 without a parent")
        for dept in self._departments.values():
            if dept.parent_id is None:
                continue
            if dept.parent_id not in self._departments:
                raise ValueError(f"department {dept.dept_id} has an unknown parent")
            self._children[dept.parent_id].append(dept.dept_id)

    def _add_user(self, user: User) -> None:
        if user.userid in self._users:
            raise ValueError(f"user {user.userid} is defined twice")
        if not user.dept_id_list:
            raise ValueError(f"user {user.userid} belongs to no department")
        for dept_id in user.dept_id_list:
            if dept_id not in self._departments:
                raise ValueError(f"user {user.userid} is in unknown dept {dept_id}")
            self._members[dept_id].append(user.userid)
        self._users[user.userid] = user

    @classmethod
    def small(cls) -> "Org":
        """A four-department, eight-user org; ``wangwu`` is in two departments.

        Tree: 1 Acme > {2 Engineering > 4 Platform, 3 Operations}.
        ``zhangsan`` is the boss and main admin.
        """
        departments = [
            Department(1, "Acme", None),
            Department(2, "Engineering", 1, order=1, manager_userids=("lisi",)),
            Department(3, "Operations", 1, order=2, manager_userids=("zhaoliu",)),
            Department(4, "Platform", 2, order=1, manager_userids=("sunqi",)),
        ]
        people = [
            ("zhangsan", "张三", (1,), "CEO"),
            ("lisi", "李四", (2,), "Engineering lead"),
            ("wangwu", "王五", (2, 3), "SRE"),
            ("zhaoliu", "赵六", (3,), "Operations lead"),
            ("sunqi", "孙七", (4,), "Platform lead"),
            ("zhouba", "周八", (4,), "Engineer"),
            ("wujiu", "吴九", (3,), "Operator"),
            ("zhengshi", "郑十", (2,), "Engineer"),
        ]
        users = [
            User(
                userid=userid,
                name=name,
                dept_id_list=depts,
                mobile=f"1380000{index:04d}",
                title=title,
                email=f"{userid}@acme.example",
                job_number=f"A{index:03d}",
                admin=userid == "zhangsan",
                boss=userid == "zhangsan",
                hired_date=1_600_000_000_000 + index * 86_400_000,
            )
            for index, (userid, name, depts, title) in enumerate(people, start=1)
        ]
        return cls(departments, users)

    @classmethod
    def generate(cls, users: int, departments: int = 1, seed: int = 0) -> "Org":
        """A large org, identical on every call with the same arguments.

        ``departments`` counts the root. Departments form a 4-ary tree
        (dept k's parent is ``1 + (k - 2) // 4``); user n sits in dept
        ``1 + n % departments`` and every 25th user also in the next one.
        User ids are ``user00000``, ``user00001`` and so on.
        """
        if users < 0 or departments < 1:
            raise ValueError("users must be >= 0 and departments >= 1")

        depts = [Department(1, "Org", None)]
        for dept_id in range(2, departments + 1):
            parent = 1 + (dept_id - 2) // 4
            depts.append(Department(dept_id, f"Dept {dept_id}", parent, order=dept_id))

        rng = random.Random(seed)
        width = max(5, len(str(users)))
        members = []
        for n in range(users):
            home = 1 + n % departments
            dept_ids = (home,)
            if departments > 1 and n % 25 == 24:
                dept_ids = (home, 1 + (n + 1) % departments)
            members.append(
                User(
                    userid=f"user{n:0{width}d}",
                    name=rng.choice(_SURNAMES)
                    + rng.choice(_GIVEN)
                    + rng.choice(_GIVEN),
                    dept_id_list=dept_ids,
                    mobile=f"139{n:08d}",
                    title=_TITLES[n % len(_TITLES)],
                    job_number=f"G{n:0{width}d}",
                    admin=n == 0,
                    boss=n == 0,
                    hired_date=1_500_000_000_000 + n * 3_600_000,
                )
            )
        return cls(depts, members)

    def department(self, dept_id: int) -> Department | None:
        """The department with this id, or None."""
        return self._departments.get(dept_id)

    def children(self, dept_id: int) -> list[Department]:
        """Direct sub-departments of ``dept_id`` (empty for a leaf or unknown id)."""
        return [self._departments[child] for child in self._children.get(dept_id, [])]

    def members(self, dept_id: int) -> list[User]:
        """Users directly in ``dept_id``, not in its sub-departments."""
        return [self._users[userid] for userid in self._members.get(dept_id, [])]

    def subtree(self, dept_id: int) -> list[int]:
        """``dept_id`` and every department below it, parents first."""
        found = [dept_id]
        for current in found:
            found.extend(self._children.get(current, []))
        return found

    def user(self, userid: str) -> User | None:
        """The user with this id, or None."""
        return self._users.get(userid)

    @property
    def users(self) -> list[User]:
        """Every user, in the order they were added."""
        return list(self._users.values())

    @property
    def departments(self) -> list[Department]:
        """Every department, root first."""
        return list(self._departments.values())
