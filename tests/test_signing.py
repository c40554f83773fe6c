"""Identity and electronic signatures: the signing password in the access store (scrypt,
per user regardless of case, the lock after five wrong credentials, kept across a
restart), signatures over the API with it, ``me``, ``myTasks`` and the admin's CLI."""

from __future__ import annotations

import doctest
import json
import os
import pty
import re
import select
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import LiveServer

from sqems.graph_model import EmbeddedGraphStore
from sqems.graph_model.nodes import Capa, Complaint
from sqems.graphql import AccessStore, Role, create_app
from sqems.graphql.access import SigningLocked
from sqems.quality import tasks
from sqems.quality.capa import CLOSURE_MEANING, SUBMISSION_MEANING
from sqems.quality.tasks import my_tasks
from sqems.settings import Settings

OPERATIONS = Path(__file__).parents[1] / "sqems" / "graphql" / "operations"
PASSWORD = "blue heron 42"


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


# --- the store -----------------------------------------------------------------------


def test_a_signing_password_is_a_salted_scrypt_hash_per_user_regardless_of_case(
    tmp_path: Path,
) -> None:
    access = AccessStore(tmp_path / "access.db")
    access.create_key("Vera", Role.ENGINEER)
    access.create_key("olga", Role.ENGINEER)
    assert not access.has_signing_password("vera")
    access.reset_signing_password("VERA", PASSWORD)
    access.reset_signing_password("Olga", PASSWORD)
    assert access.has_signing_password("vera") and access.has_signing_password("OLGA")
    assert access.check_signing_password("vEra", PASSWORD)
    assert not access.check_signing_password("vera", PASSWORD.upper())
    access.close()

    for f in tmp_path.iterdir():  # the database and its write-ahead log
        assert PASSWORD.encode() not in f.read_bytes()
    with sqlite3.connect(tmp_path / "access.db") as db:
        rows = db.execute("SELECT user, name, scheme, salt, hash FROM signing ORDER BY user")
        (olga, vera) = rows.fetchall()
    assert (vera[0], vera[1], vera[2]) == ("vera", "Vera", "scrypt:16384:8:1")
    assert olga[3] != vera[3] and olga[4] != vera[4]  # same password, salted apart
    assert len(vera[4]) == 32


def test_five_wrong_credentials_lock_signing_for_15_minutes_across_a_restart(
    tmp_path: Path,
) -> None:
    clock = Clock()
    access = AccessStore(tmp_path / "access.db", clock=clock)
    key, token = access.create_key("vera", Role.ENGINEER)
    access.reset_signing_password("vera", PASSWORD)
    for _ in range(4):
        assert not access.check_signing_password("vera", "wrong one")
    assert access.check_signature(key, token)  # a success resets the count
    for _ in range(4):
        assert not access.check_signature(key, "wrong one")
    with pytest.raises(SigningLocked) as locked:
        access.check_signing_password("vera", "still wrong")
    until = clock.now + timedelta(minutes=15)
    assert locked.value.until == until
    assert f"locked for vera until {until.isoformat()}" in locked.value.message
    assert locked.value.extensions == {"code": "SIGNING_LOCKED", "lockedUntil": until.isoformat()}
    with pytest.raises(SigningLocked):
        access.check_signing_password("VERA", PASSWORD)  # the right one too
    access.close()

    access = AccessStore(tmp_path / "access.db", clock=clock)  # a restart
    assert access.signing_locked_until("vera") == until
    with pytest.raises(SigningLocked):
        access.check_signature(key, token)
    clock.now = until + timedelta(seconds=1)
    assert access.signing_locked_until("vera") is None
    assert access.check_signing_password("vera", PASSWORD)
    access.close()


def test_an_admin_reset_lifts_the_lock_and_a_user_change_needs_the_current_password(
    tmp_path: Path,
) -> None:
    access = AccessStore(tmp_path / "access.db")
    _, token = access.create_key("vera", Role.ENGINEER)
    access.set_signing_password("vera", PASSWORD)  # the first one needs no current
    with pytest.raises(Exception, match="give the current one to change it"):
        access.set_signing_password("vera", "another password")
    with pytest.raises(Exception, match="the current signing password given for vera is wrong"):
        access.set_signing_password("vera", "another password", "not it")
    with pytest.raises(Exception, match="at least 8 characters, not 5"):
        access.set_signing_password("vera", "short", PASSWORD)
    with pytest.raises(Exception, match="must not be your API key"):
        access.set_signing_password("vera", token, PASSWORD)
    with pytest.raises(Exception, match="no API key is named 'nobody'"):
        access.reset_signing_password("nobody", PASSWORD)
    for _ in range(3):  # the wrong current one above was the first
        access.check_signing_password("vera", "wrong")
    with pytest.raises(SigningLocked):
        access.set_signing_password("vera", "another password", "not it")  # the fifth
    assert access.reset_signing_password("VERA", "reset by admin") == "vera"
    assert access.signing_locked_until("vera") is None
    assert access.check_signing_password("vera", "reset by admin")
    access.close()


def test_an_access_file_from_before_signing_passwords_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "access.db"
    access = AccessStore(path)
    _, token = access.create_key("vera", Role.ENGINEER)
    access.close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE signing")
    access = AccessStore(path)
    assert access.verify(token) is not None
    access.reset_signing_password("vera", PASSWORD)
    assert access.check_signing_password("vera", PASSWORD)
    access.close()


# --- the API -------------------------------------------------------------------------


@dataclass
class Served:
    url: str
    tokens: dict[str, str]
    access: AccessStore
    store: EmbeddedGraphStore

    def post(self, who: str, query: str, **variables: Any) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
            timeout=30,
        )
        assert response.status_code == 200 and "Traceback" not in response.text
        body: dict[str, Any] = response.json()
        return body

    def data(self, who: str, query: str, **variables: Any) -> Any:
        body = self.post(who, query, **variables)
        assert "errors" not in body, body["errors"]
        return next(iter(body["data"].values()))

    def error(self, who: str, query: str, **variables: Any) -> dict[str, Any]:
        error: dict[str, Any] = self.post(who, query, **variables)["errors"][0]
        return error

    def op(self, who: str, name: str, **variables: Any) -> Any:
        return self.data(who, (OPERATIONS / f"{name}.graphql").read_text(), **variables)

    def op_error(self, who: str, name: str, **variables: Any) -> dict[str, Any]:
        return self.error(who, (OPERATIONS / f"{name}.graphql").read_text(), **variables)

    def ready_capa(self, title: str, owner: str, verifier: str) -> str:
        """A CAPA in action with a root cause and a corrective action, through the API."""
        uid: str = self.data("ines", 'mutation($t: String!) { reportCapa(title: $t, '
                             'addresses: ["CMP-1"]) { uid } }', t=title)["uid"]  # fmt: skip
        for move in (
            "triageCapa(uid: $u, priority: HIGH)",
            f'assignCapa(uid: $u, owner: "{owner}", verifier: "{verifier}", '
            'dueAt: "2030-01-31T00:00:00+00:00")',
            "startCapa(uid: $u)",
            'recordRootCause(uid: $u, fiveWhy: ["cracked", "brittle resin"])',
            'addCapaAction(uid: $u, kind: "corrective", text: "dry resin 4 h at 80 degC")',
        ):
            self.data("erik", f"mutation($u: String!) {{ {move} {{ uid }} }}", u=uid)
        return uid

    def status(self, uid: str) -> str:
        found: str = self.data("val", "query($u: String!) { capa(uid: $u) { ... on Capa "
                               "{ status } } }", u=uid)["status"]  # fmt: skip
        return found

    def history(self, uid: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.data(
            "val", "query($u: String!) { capaHistory(uid: $u) { actor action meaning } }", u=uid
        )
        return found


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data: Path = tmp_path_factory.mktemp("api-signing")
    store = EmbeddedGraphStore(None)
    store.upsert_nodes([Complaint(uid="CMP-1", received_at=datetime(2026, 3, 1, tzinfo=UTC),
                                  description="housing cracked")])  # fmt: skip
    access = AccessStore(data / "access.db")
    keys = {"ines": Role.INSPECTOR, "erik": Role.ENGINEER, "olga": Role.ENGINEER,
            "vera": Role.ENGINEER, "wanda": Role.ENGINEER, "val": Role.VIEWER,
            "root": Role.ADMIN}  # fmt: skip
    tokens = {name: access.create_key(name, role)[1] for name, role in keys.items()}
    settings = Settings(data_dir=data, audit_busy_timeout_s=0.3)
    with LiveServer(create_app(settings, store=store, access=access)) as server:
        yield Served(server.url, tokens, access, store)
    access.close()
    store.close()


def test_a_signed_hand_over_and_a_verification_with_the_signing_password(
    served: Served,
) -> None:
    assert served.op("vera", "set_signing_password", password=PASSWORD) is True
    assert served.op("vera", "me")["hasSigningPassword"] is True
    logged = next(e for e in served.access.audit(20) if e.operation == "setSigningPassword")
    assert logged.arguments == {"password": "[redacted]", "current": None}
    assert logged.outcome == "ok" and logged.key_name == "vera"
    refused = served.op_error("vera", "set_signing_password", password="a new password")
    assert refused["extensions"]["code"] == "VALIDATION_FAILED"

    uid = served.ready_capa("cracked housing", owner="olga", verifier="vera")
    submitted = served.op("olga", "submit_capa", uid=uid, credential=served.tokens["olga"])
    assert submitted["status"] == "VERIFYING"
    verified = served.op("vera", "verify_capa", uid=uid, effective=True,
                         note="no cracks in 3 lots", credential=PASSWORD)  # fmt: skip
    assert (verified["status"], verified["effective"]) == ("CLOSED", True)
    signatures = [(e["actor"], e["meaning"]) for e in served.history(uid)
                  if e["action"] == "signature"]  # fmt: skip
    assert signatures == [("olga", SUBMISSION_MEANING), ("vera", CLOSURE_MEANING)]

    unsigned = served.ready_capa("unsigned hand-over", owner="olga", verifier="vera")
    assert served.op("erik", "submit_capa", uid=unsigned)["status"] == "VERIFYING"
    assert not [e for e in served.history(unsigned) if e["action"] == "signature"]


def test_a_wrong_credential_is_refused_typed_and_the_capa_is_unchanged(served: Served) -> None:
    served.access.reset_signing_password("wanda", PASSWORD)
    uid = served.ready_capa("burr on edge", owner="olga", verifier="wanda")
    wrong = served.op_error("olga", "submit_capa", uid=uid, credential="not my password")
    assert wrong["extensions"] == {"code": "UNAUTHENTICATED", "signature": "refused"}
    assert "needs your own API key again or your signing password" in wrong["message"]
    assert served.status(uid) == "IN_ACTION"
    served.op("olga", "submit_capa", uid=uid, credential=served.tokens["olga"])
    for credential in ("", served.tokens["vera"], PASSWORD.upper()):  # another's key counts
        wrong = served.op_error("wanda", "verify_capa", uid=uid, effective=True,
                                note="fine", credential=credential)  # fmt: skip
        assert wrong["extensions"]["code"] == "UNAUTHENTICATED"
    assert served.status(uid) == "VERIFYING"
    outcomes = [e.outcome for e in served.access.audit(10) if e.operation == "verifyCapa"]
    assert outcomes[:3] == ["failed: UNAUTHENTICATED"] * 3
    rejected = served.op("wanda", "verify_capa", uid=uid, effective=False,
                         note="burrs remain on lot 7", credential=PASSWORD)  # fmt: skip
    assert (rejected["status"], rejected["effective"]) == ("IN_ACTION", False)


def test_five_wrong_credentials_lock_signing_even_with_the_right_one(served: Served) -> None:
    served.tokens["lena"] = served.access.create_key("lena", Role.ENGINEER)[1]
    served.access.reset_signing_password("lena", PASSWORD)
    uid = served.ready_capa("porosity", owner="olga", verifier="lena")
    served.op("olga", "submit_capa", uid=uid)
    for _ in range(4):
        wrong = served.op_error("lena", "verify_capa", uid=uid, effective=True, note="ok",
                                credential="guess")  # fmt: skip
        assert wrong["extensions"]["code"] == "UNAUTHENTICATED"
    fifth = served.op_error("lena", "verify_capa", uid=uid, effective=True, note="ok",
                            credential="guess")  # fmt: skip
    assert fifth["extensions"]["code"] == "SIGNING_LOCKED"
    until = fifth["extensions"]["lockedUntil"]
    assert f"until {until}" in fifth["message"]
    for credential in (PASSWORD, served.tokens["lena"]):
        right = served.op_error("lena", "verify_capa", uid=uid, effective=True, note="ok",
                                credential=credential)  # fmt: skip
        assert right["extensions"]["code"] == "SIGNING_LOCKED"
    assert served.status(uid) == "VERIFYING"
    assert served.op("lena", "me")["signingLockedUntil"] is not None
    changed = served.op_error("lena", "set_signing_password", password="new password",
                              current=PASSWORD)  # fmt: skip
    assert changed["extensions"]["code"] == "SIGNING_LOCKED"
    outcomes = [e.outcome for e in served.access.audit(10) if e.operation == "verifyCapa"]
    assert outcomes[:3] == ["failed: SIGNING_LOCKED"] * 3


def test_my_tasks_lists_owner_and_verifier_work_overdue_first(served: Served) -> None:
    now = datetime.now(UTC)

    def capa(uid: str, status: str, owner: str, verifier: str, due: timedelta | None,
             ready: bool = True) -> Capa:  # fmt: skip
        return Capa.parse({
            "uid": uid, "title": f"task {uid}", "status": status, "problem": "burrs",
            "opened_at": now - timedelta(days=30), "owner": owner, "verifier": verifier,
            "due_at": now + due if due is not None else None,
            "five_why": json.dumps(["burr", "worn punch"] if ready else []),
            "eight_d": json.dumps({"D4": "punch past its life"}),
            "corrective": json.dumps([{"text": "replace the punch"}] if ready else []),
        })  # fmt: skip

    served.store.upsert_nodes([
        capa("T-LATE", "in_action", "Tom", "Tia", timedelta(days=-2)),
        capa("T-SOON", "in_action", "tom", "tia", timedelta(days=3)),
        capa("T-BARE", "in_action", "tom", "tia", timedelta(days=1), ready=False),
        capa("T-CHECK", "verifying", "tia", "TOM", timedelta(days=-1)),
        capa("T-NODUE", "assigned", "tom", "tia", None),
        capa("T-DONE", "closed", "tom", "tia", timedelta(days=-9)),
        capa("T-OTHER", "verifying", "olga", "vera", timedelta(days=-5)),
    ])  # fmt: skip
    served.tokens["tom"] = served.access.create_key("tom", Role.ENGINEER)[1]
    served.tokens["tia"] = served.access.create_key("tia", Role.INSPECTOR)[1]

    tom = served.op("tom", "my_tasks")
    assert [(t["uid"], t["as"], t["action"], t["overdue"]) for t in tom] == [
        ("T-LATE", "owner", "submit", True),
        ("T-CHECK", "verifier", "verify", True),
        ("T-BARE", "owner", None, False),
        ("T-SOON", "owner", "submit", False),
        ("T-NODUE", "owner", None, False),
    ]
    late = tom[0]
    assert (late["rootCause"], late["corrective"], late["problem"]) == (
        "worn punch", ["replace the punch"], "burrs")  # fmt: skip
    assert (late["status"], late["capa"]["uid"], late["capa"]["owner"]) == (
        "IN_ACTION", "T-LATE", "Tom")  # fmt: skip
    assert tom[2]["rootCause"] == "punch past its life"  # no 5-Why: the 8D's D4
    tia = served.op("tia", "my_tasks")  # an inspector: nothing to sign
    assert [(t["uid"], t["as"], t["action"]) for t in tia] == [
        ("T-LATE", "verifier", None), ("T-CHECK", "owner", None), ("T-BARE", "verifier", None),
        ("T-SOON", "verifier", None), ("T-NODUE", "verifier", None),
    ]  # fmt: skip
    assert served.op("val", "my_tasks") == []
    plain = my_tasks(served.store, "TOM", now=now + timedelta(days=2))  # the domain alone
    assert [t.uid for t in plain if t.overdue] == ["T-LATE", "T-CHECK", "T-BARE"]
    assert doctest.testmod(tasks).failed == 0


@pytest.mark.parametrize(
    ("who", "role", "flags"),
    [
        ("val", "viewer", (False, False, False)),
        ("ines", "inspector", (True, False, False)),
        ("erik", "engineer", (True, True, True)),
        ("root", "admin", (True, True, True)),
    ],
)
def test_me_names_the_caller_and_what_their_role_may_do(
    served: Served, who: str, role: str, flags: tuple[bool, bool, bool]
) -> None:
    me = served.op(who, "me")
    assert (me["name"], me["role"]) == (who, role)
    assert (me["canReport"], me["canHold"], me["canApprove"]) == flags
    assert (me["hasSigningPassword"], me["signingLockedUntil"]) == (False, None)


# --- the CLI -------------------------------------------------------------------------


def _sqems(data: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SQEMS_DATA_DIR": str(data), "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-c", "from sqems.cli import main; main()", *args], input=stdin,
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def test_the_admin_sets_a_signing_password_from_stdin_and_mistakes_are_one_line(
    tmp_path: Path,
) -> None:
    access = AccessStore(tmp_path / "access.db")
    access.create_key("Vera Lind", Role.ENGINEER)
    access.close()
    done = _sqems(tmp_path, "apikey", "signing-password", "vera lind", "--password-stdin",
                  stdin=PASSWORD + "\n")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "signing password set for Vera Lind; their signing is unlocked\n"
    access = AccessStore(tmp_path / "access.db")
    assert access.check_signing_password("Vera Lind", PASSWORD)
    access.close()
    for args, stdin, message in [
        (["vera lind", "--password-stdin"], "short\n", "at least 8 characters, not 5"),
        (["nobody", "--password-stdin"], PASSWORD, "no API key is named 'nobody'"),
        (["vera lind", "--password-stdin"], "", "no password on stdin"),
        (["vera lind"], "", "no terminal to prompt on: pipe the password with --password-stdin"),
    ]:
        done = _sqems(tmp_path, "apikey", "signing-password", *args, stdin=stdin)
        assert (done.returncode, done.stdout) == (2, "")
        assert done.stderr == f"error: {message}\n" or (
            done.stderr.startswith("error: ") and message in done.stderr
            and done.stderr.count("\n") == 1
        )  # fmt: skip


def _prompted(data: Path, name: str, *answers: str) -> tuple[int, str]:
    """Run the command on a terminal (a pty), answering each prompt in turn."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, as at the shell
        os.environ.update(SQEMS_DATA_DIR=str(data), COLUMNS="80")
        os.execv(sys.executable, [sys.executable, "-c", "from sqems.cli import main; main()",
                                  "apikey", "signing-password", name])  # fmt: skip
    seen = b""
    for answer in answers:
        while not seen.rstrip(b" ").endswith(b":"):
            ready, _, _ = select.select([fd], [], [], 60)
            assert ready, f"no prompt within 60 s; so far: {seen!r}"
            seen += os.read(fd, 1024)
        os.write(fd, answer.encode() + b"\r")
        seen += b"\n"
    while True:
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # the command exited and closed its terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), seen.decode()


def test_the_admin_is_prompted_twice_with_the_password_hidden(tmp_path: Path) -> None:
    access = AccessStore(tmp_path / "access.db")
    access.create_key("Vera", Role.ENGINEER)
    access.close()
    code, shown = _prompted(tmp_path, "vera", PASSWORD, PASSWORD)
    assert code == 0, shown
    assert "signing password for Vera:" in shown and "again:" in shown
    assert "signing password set for Vera; their signing is unlocked" in shown
    assert PASSWORD not in shown  # not echoed
    code, shown = _prompted(tmp_path, "vera", PASSWORD, "another one")
    plain = re.sub(r"\x1b\[[0-9;]*m", "", shown)  # the terminal gets colours
    assert code == 2 and "error: the two passwords differ; nothing changed" in plain
    access = AccessStore(tmp_path / "access.db")
    assert access.check_signing_password("vera", PASSWORD)
    access.close()
