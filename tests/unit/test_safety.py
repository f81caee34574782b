"""reaper_engine/safety.py: every protection by name, and a property test over random tables."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from reaper_engine.detector import Detector
from reaper_engine.models import Priority, ProcessInfo, ProcessState
from reaper_engine.models.process import START_TIME_TOLERANCE
from reaper_engine.rules import DEFAULT_RULES, Rule, RuleConditions
from reaper_engine.safety import (
    DEFAULT_WHITELIST,
    SafetyPolicy,
    SafetySettings,
    Vantage,
    policy_for,
)
from tests.factories import T0, proc

ME = Vantage(user="noah", uid=1000)


def protection(p: ProcessInfo, vantage: Vantage = ME, **settings_kw: Any) -> str | None:
    return SafetyPolicy(SafetySettings(**settings_kw), vantage).protection_for(p)


def mine(pid: int = 5000, **kw: Any) -> ProcessInfo:
    """A process of the acting user that no protection covers by default."""
    kw.setdefault("cmd", "/home/noah/bin/worker --loop")
    return proc(pid, **kw)


def test_an_ordinary_process_of_mine_is_not_protected() -> None:
    assert protection(mine()) is None
    assert protection(mine(1000)) is None  # min_pid is inclusive


# --- each protection by name --------------------------------------------------------------


@pytest.mark.parametrize("pid", [0, 1])
def test_pid_0_and_1(pid: int) -> None:
    assert protection(mine(pid), min_pid=0) == f"pid_{pid}"
    everything_off = {
        "min_pid": 0,
        "protect_root": False,
        "whitelist_processes": (),
    }
    assert protection(mine(pid), Vantage(), **everything_off) == f"pid_{pid}"


def test_kernel_thread() -> None:
    kthread = ProcessInfo(
        pid=5002, name="kworker/3:1", create_time=0, is_kernel_thread=True, uid=1000, user="noah"
    )
    assert protection(kthread) == "kernel_thread"
    assert protection(kthread.model_copy(update={"pid": 2}), min_pid=0) == "kernel_thread"


def test_self() -> None:
    me = Vantage(user="noah", uid=1000, pid=5000)
    assert protection(mine(5000), me) == "self"
    assert protection(mine(5001), me) is None


def test_ancestor() -> None:
    me = Vantage(user="noah", uid=1000, pid=5000, ancestors=frozenset({4000, 3000}))
    assert protection(mine(4000), me) == "ancestor"
    assert protection(mine(3000), me) == "ancestor"
    assert protection(mine(4001), me) is None


def test_ancestors_cannot_be_unprotected() -> None:
    me = Vantage(user="noah", uid=1000, pid=5000, ancestors=frozenset({4000}))
    assert protection(mine(4000), me) == "ancestor"
    with pytest.raises(ValidationError, match="protect_shell_ancestors"):
        SafetySettings(protect_shell_ancestors=False)


def test_own_process_group_and_session() -> None:
    me = Vantage(user="noah", uid=1000, pgid=7000, sid=6000)
    assert protection(mine(7001, pgid=7000), me) == "own_process_group"
    assert protection(mine(7001, pgid=7100, sid=6000), me) == "own_session"
    assert protection(mine(7001, pgid=7100, sid=6100), me) is None
    # A vantage without pgid/sid protects nobody by group, even processes without one.
    assert protection(mine(7001)) is None


def test_zombie() -> None:
    zombie = mine(status=ProcessState.ZOMBIE)
    assert protection(zombie) == f"zombie:parent={zombie.ppid}"
    assert protection(mine(status=ProcessState.RUNNING)) is None


def test_below_min_pid() -> None:
    assert protection(mine(999)) == "below_min_pid"
    assert protection(mine(999), min_pid=500) is None
    assert protection(mine(100), min_pid=0) is None
    assert protection(mine(4999), min_pid=5000) == "below_min_pid"


@pytest.mark.parametrize(
    ("uid", "user"),
    [
        (0, "root"),
        (0, None),
        (0, "toor"),
        (None, "root"),
        (None, "NT AUTHORITY\\SYSTEM"),
        (None, "SYSTEM"),
        (None, "nt authority\\local service"),
        (None, "LOCAL SERVICE"),
        (None, "NT AUTHORITY\\NETWORK SERVICE"),
    ],
)
def test_root_owned(uid: int | None, user: str | None) -> None:
    assert protection(mine(uid=uid, user=user)) == "root_owned"


def test_protect_root_off_lets_roots_processes_through() -> None:
    root = mine(uid=0, user="root")
    acting_as_root = Vantage(user="root", uid=0)
    assert protection(root, acting_as_root) == "root_owned"
    assert protection(root, acting_as_root, protect_root=False) is None
    # Acting as someone else, root's process is still another user's.
    assert protection(root, ME, protect_root=False) == "other_user"
    system = mine(uid=None, user="NT AUTHORITY\\SYSTEM")
    assert protection(system, Vantage(user="nt authority\\system"), protect_root=False) is None


def test_other_user_by_uid() -> None:
    assert protection(mine(uid=1001, user="alice")) == "other_user"
    # The uid decides when both are known, whatever the names say.
    assert protection(mine(uid=1001, user="noah")) == "other_user"
    assert protection(mine(uid=1000, user="renamed")) is None


def test_other_user_by_name_case_insensitively() -> None:
    me = Vantage(user="LAB\\builder")
    assert protection(mine(uid=None, user="lab\\BUILDER"), me) is None
    assert protection(mine(uid=None, user="LAB\\qa"), me) == "other_user"
    assert protection(mine(uid=None, user="NT SERVICE\\MSSQLSERVER"), me) == "other_user"
    # uid known on one side only: names decide.
    assert protection(mine(uid=1000, user="Noah"), Vantage(user="noah")) is None
    assert protection(mine(uid=None, user="NOAH"), ME) is None


def test_unknown_owner_is_assumed_not_ours() -> None:
    # Fail closed: an unknown owner, or an unknown "us", is never ours to signal.
    assert protection(mine(uid=None, user=None)) == "other_user"
    assert protection(mine(uid=None, user=None), Vantage()) == "other_user"
    assert protection(mine(), Vantage()) == "other_user"


def test_other_users_cannot_be_unprotected() -> None:
    with pytest.raises(ValidationError, match="protect_other_users"):
        SafetySettings(protect_other_users=False)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("name", "cmd"),
    [
        ("vim", "vim notes.txt"),
        ("gnome-shell", "/usr/bin/gnome-shell"),
        ("node", "/usr/share/code/code --type=renderer"),  # argv[0] basename
        ("Explorer.EXE", "C:\\Windows\\Explorer.EXE"),  # .exe stripped, case-insensitive
        ("helper", "C:\\Tools\\VSCode\\Code.exe --type=gpu"),
        ("VIM", "VIM"),
        ("sshd", "sshd: noah@pts/0"),
    ],
)
def test_whitelisted_by_name(name: str, cmd: str) -> None:
    p = mine(cmd=cmd, name=name)
    prot = protection(p)
    assert prot is not None
    assert prot.startswith("whitelisted:")


def test_whitelisted_label_names_the_process() -> None:
    assert protection(mine(cmd="vim x", name="vim")) == "whitelisted:vim"
    assert protection(mine(cmd="x", name="Explorer.EXE")) == "whitelisted:explorer"


def test_whitelist_entries_are_normalised_too() -> None:
    p = mine(cmd="C:\\tools\\Keeper.exe", name="keeper.exe")
    assert protection(p, whitelist_processes=("KEEPER.EXE",)) == "whitelisted:keeper"
    assert protection(p, whitelist_processes=("keeper",)) == "whitelisted:keeper"
    assert protection(p, whitelist_processes=("keep",)) is None


def test_not_whitelisted_lookalikes() -> None:
    assert protection(mine(cmd="/usr/bin/vimdiff a b", name="vimdiff")) is None
    assert protection(mine(cmd="/home/noah/bin/worker --editor vim", name="worker")) is None


def test_empty_whitelist() -> None:
    assert protection(mine(cmd="vim x", name="vim"), whitelist_processes=()) is None


def test_whitelist_patterns_search_the_command_line() -> None:
    p = mine(cmd="/opt/keep/daemon --serve", name="daemon")
    assert protection(p, whitelist_patterns=(r"^/opt/keep/",)).startswith("whitelisted:")
    assert protection(p, whitelist_patterns=(r"--serve\b",)).startswith("whitelisted:")
    assert protection(p, whitelist_patterns=(r"^/opt/other/",)) is None


def test_invalid_whitelist_regex_is_rejected() -> None:
    with pytest.raises(ValidationError, match="invalid regex"):
        SafetySettings(whitelist_patterns=("ok", "(unclosed"))


def test_settings_reject_unknown_keys_and_negative_min_pid() -> None:
    with pytest.raises(ValidationError):
        SafetySettings.model_validate({"protect_everything": True})
    with pytest.raises(ValidationError):
        SafetySettings(min_pid=-1)


def test_default_whitelist_covers_desktop_shells_and_editors() -> None:
    lowered = {n.lower() for n in DEFAULT_WHITELIST}
    assert {"systemd", "gnome-shell", "sshd", "vim", "code", "explorer", "csrss"} <= lowered


def test_detector_marks_protected_findings_and_keeps_them() -> None:
    rogue = mine(5000, cmd="/tmp/test_loop", age=7200)
    alice = mine(5001, cmd="/tmp/test_loop", age=7200, uid=1001, user="alice")
    findings = Detector(DEFAULT_RULES).evaluate(
        [rogue, alice], now=T0, host_id="h", policy=SafetyPolicy(SafetySettings(), ME)
    )
    by_pid = {f.identity.pid: f for f in findings}
    assert by_pid[5000].killable
    assert by_pid[5001].protected_by == "other_user"
    assert not by_pid[5001].killable


# --- property test ------------------------------------------------------------------------

NAMES = (
    "worker",
    "test_loop",
    "vim",
    "VIM",
    "code.exe",
    "Code.EXE",
    "explorer.exe",
    "systemd",
    "gnome-shell",
    "python3",
    "tail",
    "keeper",
    "Keeper.Exe",
)
ARGV0 = (
    None,  # no command line: command is the name
    "/tmp/test_loop",
    "/usr/bin/vim",
    "C:\\Windows\\Explorer.EXE",
    "/opt/keep/daemon",
    "/home/noah/bin/worker",
    "tail",
    "/usr/share/code/code",
    "C:\\tools\\keeper.exe",
)
USERS = (
    None,
    "noah",
    "NOAH",
    "alice",
    "root",
    "ROOT",
    "SYSTEM",
    "NT AUTHORITY\\SYSTEM",
    "local service",
    "LAB\\builder",
    "lab\\Builder",
    "NT SERVICE\\MSSQLSERVER",
)
UIDS = (None, 0, 1000, 1001, 501)
GROUPS = (None, 100, 200, 300)
PATTERNS = (r"^/opt/keep/", r"--serve\b", r"worker", r"\.EXE$", r"^tail\b")
PRIVILEGED = {
    "root",
    "system",
    "nt authority\\system",
    "local service",
    "nt authority\\local service",
    "network service",
    "nt authority\\network service",
}

pids = st.one_of(
    st.integers(0, 3000), st.integers(0, 5_000_000), st.sampled_from([0, 1, 2, 999, 1000])
)


rarely = st.integers(0, 7).map(lambda n: n == 0)
# Seconds before T0 a process started: a few fixed values, so that baselines drawn from the
# table's own start times (see `vantages`) land exactly on other processes' start times too.
AGES = st.one_of(st.sampled_from([0.0, 0.02, 0.05, 1.0, 60.0, 3600.0]), st.floats(0, 1e7))


@st.composite
def processes(draw: st.DrawFn) -> list[ProcessInfo]:
    unique_pids = draw(st.lists(pids, min_size=1, max_size=12, unique=True))
    out = []
    for i, pid in enumerate(unique_pids):
        # Parents from earlier in the table most of the time, so that the descendants scope
        # has trees to walk (a forest: no cycles, see test_a_parent_cycle_...).
        parents = st.integers(0, 5_000_000)
        if i:
            parents = st.one_of(st.sampled_from(unique_pids[:i]), parents)
        argv0 = draw(st.one_of(st.just("/home/noah/bin/worker"), st.sampled_from(ARGV0)))
        args = draw(st.lists(st.sampled_from(["--serve", "-f", "x.log", "run"]), max_size=2))
        out.append(
            ProcessInfo(
                pid=pid,
                ppid=draw(parents),
                pgid=draw(st.one_of(st.none(), st.sampled_from(GROUPS))),
                sid=draw(st.one_of(st.none(), st.sampled_from(GROUPS))),
                uid=draw(st.sampled_from(UIDS)),
                user=draw(st.sampled_from(USERS)),
                name=draw(st.one_of(st.just("worker"), st.sampled_from(NAMES))),
                cmdline=(argv0, *args) if argv0 else (),
                create_time=T0.timestamp() - draw(AGES),
                status=draw(
                    st.one_of(st.just(ProcessState.RUNNING), st.sampled_from(ProcessState))
                ),
                cpu_percent=draw(st.sampled_from([0.0, 0.5, 50.0, 99.9, 400.0])),
                cpu_time=draw(st.floats(0, 1e7)),
                rss=draw(st.integers(0, 32 * 1024**3)),
                is_kernel_thread=draw(rarely),
            )
        )
    return out


@st.composite
def scopes(draw: st.DrawFn, table: list[ProcessInfo]) -> tuple[str, int | None]:
    """A scope mode, and for "descendants" its root: a pid of the table (with or without a
    subtree), one that does not exist, or none (the reaper itself: the vantage's pid)."""
    scope = draw(st.sampled_from(["all", "baseline", "descendants"]))
    if scope != "descendants":
        return scope, None
    roots = [p.pid for p in table if p.pid >= 1]
    choices = st.one_of(st.none(), st.integers(1, 5_000_000))
    if roots:  # mostly: a root with a subtree to find
        choices = st.one_of(st.sampled_from(roots), st.sampled_from(roots), choices)
    return scope, draw(choices)


def baselines(table: list[ProcessInfo]) -> st.SearchStrategy[float | None]:
    """When the reaper took its baseline: none, on (or just around) a start time of the
    table -- the tolerance's edges included -- or anywhere."""
    return st.one_of(
        st.none(),  # no baseline taken: the baseline scope must refuse everything
        st.builds(
            lambda at, shift: at + shift,
            st.sampled_from([p.create_time for p in table]),
            st.sampled_from([-0.1, -START_TIME_TOLERANCE, 0.0, START_TIME_TOLERANCE, 0.1]),
        ),
        st.floats(T0.timestamp() - 2e7, T0.timestamp() + 10),
    )


@st.composite
def safety_settings(draw: st.DrawFn, table: list[ProcessInfo] | None = None) -> SafetySettings:
    whitelist = draw(
        st.one_of(
            st.just(DEFAULT_WHITELIST),
            st.lists(
                st.sampled_from(["vim", "CODE", "Explorer.exe", "keeper", "tail"]), max_size=4
            ),
        )
    )
    scope, scope_root_pid = draw(scopes(table or []))
    return SafetySettings(
        whitelist_processes=tuple(whitelist),
        whitelist_patterns=tuple(draw(st.lists(st.sampled_from(PATTERNS), max_size=2))),
        min_pid=draw(st.sampled_from([0, 1, 2, 500, 1000, 3000, 100_000])),
        protect_root=draw(st.booleans()),
        scope=scope,
        scope_root_pid=scope_root_pid,
    )


@st.composite
def vantages(draw: st.DrawFn, table: list[ProcessInfo]) -> Vantage:
    table_pids = [p.pid for p in table]
    some_pid = st.one_of(st.none(), st.sampled_from(table_pids), pids)
    baseline_at = draw(baselines(table))
    # What the vantage brings for the descendants scope; policy_for replaces it with the
    # table's own tree whenever it knows a root (scope_root_pid, else the vantage's pid).
    descendants = draw(st.one_of(st.none(), st.frozensets(st.sampled_from(table_pids), max_size=4)))
    # Often the owner of a process in the table: the case where the other protections
    # (scope among them) decide.
    owner = draw(st.one_of(st.none(), st.sampled_from(table)))
    return Vantage(
        user=owner.user if owner is not None else draw(st.sampled_from(USERS)),
        uid=owner.uid if owner is not None else draw(st.sampled_from(UIDS)),
        pid=draw(some_pid),
        ancestors=frozenset(draw(st.lists(st.sampled_from(table_pids), max_size=3))),
        pgid=draw(st.sampled_from(GROUPS)),
        sid=draw(st.sampled_from(GROUPS)),
        baseline_at=baseline_at,
        descendants=descendants,
    )


def _basename(name: str) -> str:
    return re.split(r"[/\\]", name)[-1].lower().removesuffix(".exe")


def is_below(pid: int, root: int, table: list[ProcessInfo]) -> bool:
    """Whether walking up the parents of ``pid`` reaches ``root`` (``root`` itself is not)."""
    parent_of = {p.pid: p.ppid for p in table}
    if pid == root:
        return False
    seen = set()
    node = pid
    while node in parent_of and node not in seen:
        seen.add(node)
        node = parent_of[node]
        if node == root:
            return True
    return False


def out_of_scope(p: ProcessInfo, s: SafetySettings, v: Vantage, table: list[ProcessInfo]) -> bool:
    """Seed 002's scope: only what started after the baseline, or lives below the root."""
    if s.scope == "baseline":
        # Started at (or, within the start-time tolerance, around) the baseline or before
        # it: pre-existing. No baseline at all: nothing is known to be new.
        return v.baseline_at is None or p.create_time <= v.baseline_at + START_TIME_TOLERANCE
    if s.scope == "descendants":
        root = s.scope_root_pid if s.scope_root_pid is not None else v.pid
        if root is None:  # no root to walk from: only what the vantage names, if anything
            return v.descendants is None or p.pid not in v.descendants
        return not is_below(p.pid, root, table)
    return False


def oracle_reasons(
    p: ProcessInfo, s: SafetySettings, v: Vantage, table: list[ProcessInfo] | None = None
) -> set[str]:
    """Every reason this process must never be signalled (written from the spec, not the code)."""
    reasons = set()
    if out_of_scope(p, s, v, table if table is not None else [p]):
        reasons.add("out of scope")
    if p.pid <= 1:
        reasons.add("pid<=1")
    if p.is_kernel_thread:
        reasons.add("kernel thread")
    if p.status == ProcessState.ZOMBIE:
        reasons.add("zombie")
    if p.pid < s.min_pid:
        reasons.add("below min_pid")
    if v.pid is not None and p.pid == v.pid:
        reasons.add("self")
    if p.pid in v.ancestors:
        reasons.add("ancestor")
    if v.pgid is not None and p.pgid == v.pgid:
        reasons.add("own group")
    if v.sid is not None and p.sid == v.sid:
        reasons.add("own session")
    if s.protect_root and (p.uid == 0 or (p.user or "").lower() in PRIVILEGED):
        reasons.add("root")
    if v.uid is not None and p.uid is not None:
        other = p.uid != v.uid
    elif v.user and p.user is not None:
        other = p.user.lower() != v.user.lower()
    else:
        other = True  # owner or vantage unknown: never assume it is ours
    if other:
        reasons.add("other user")
    whitelist = {_basename(n) for n in s.whitelist_processes}
    candidates = {_basename(p.name)} | ({_basename(p.cmdline[0])} if p.cmdline else set())
    if candidates & whitelist:
        reasons.add("whitelisted name")
    command = " ".join(p.cmdline) if p.cmdline else p.name
    if any(re.search(pattern, command) for pattern in s.whitelist_patterns):
        reasons.add("whitelisted pattern")
    return reasons


EVERYTHING = Rule(
    name="everything", priority=Priority.CRITICAL, conditions=RuleConditions(age_seconds=0)
)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_protected_process_is_ever_killable(data: st.DataObject) -> None:
    table = data.draw(processes(), label="table")
    safety = data.draw(safety_settings(table), label="settings")
    vantage = data.draw(vantages(table), label="vantage")
    # As every look at a host builds it: the descendants scope resolved from this table.
    policy = policy_for(safety, vantage, table)

    findings = Detector([*DEFAULT_RULES, EVERYTHING]).evaluate(
        table, now=T0, host_id="h", policy=policy
    )

    by_pid = {p.pid: p for p in table}
    # The catch-all rule selects everything: one finding per process, none dropped.
    assert sorted(f.identity.pid for f in findings) == sorted(by_pid)
    for finding in findings:
        p = by_pid[finding.identity.pid]
        reasons = oracle_reasons(p, safety, vantage, table)
        if reasons:
            assert not finding.killable, (p, reasons, finding.protected_by)
            assert finding.protected_by is not None
        else:
            # Nothing protects it and every rule that can win here kills: it must be killable.
            assert finding.killable, (p, finding.protected_by)


def _unprotected_but_for_the_scope(p: ProcessInfo) -> ProcessInfo:
    """``p`` made an ordinary running process of noah's (uid 1000), not whitelisted."""
    return p.model_copy(
        update={
            "pid": max(p.pid, 2),
            "uid": 1000,
            "user": "noah",
            "name": "worker",
            "cmdline": ("/home/noah/bin/worker", "--loop"),
            "status": ProcessState.RUNNING,
            "is_kernel_thread": False,
            "pgid": None,
            "sid": None,
        }
    )


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_the_scope_alone_decides_for_otherwise_unprotected_processes(
    data: st.DataObject,
) -> None:
    """Every other protection off or not applying: killable exactly when in scope.

    The general property above rarely gets here (some protection nearly always applies), so
    this one checks both directions of every scope mode: out of scope is never killable, in
    scope is never refused.
    """
    drawn = data.draw(processes(), label="table")
    table = list({p.pid: p for p in map(_unprotected_but_for_the_scope, drawn)}.values())
    scope, root = data.draw(scopes(table), label="scope")
    safety = SafetySettings(
        whitelist_processes=(), min_pid=0, protect_root=False, scope=scope, scope_root_pid=root
    )
    vantage = Vantage(
        user="noah",
        uid=1000,
        pid=data.draw(st.one_of(st.none(), st.sampled_from([p.pid for p in table])), "pid"),
        baseline_at=data.draw(baselines(table), label="baseline_at"),
        descendants=data.draw(
            st.one_of(st.none(), st.frozensets(st.sampled_from([p.pid for p in table]))),
            label="descendants",
        ),
    )
    policy = policy_for(safety, vantage, table)
    findings = Detector([EVERYTHING]).evaluate(table, now=T0, host_id="h", policy=policy)

    assert sorted(f.identity.pid for f in findings) == sorted(p.pid for p in table)
    by_pid = {p.pid: p for p in table}
    for finding in findings:
        p = by_pid[finding.identity.pid]
        outside = out_of_scope(p, safety, vantage, table)
        itself = p.pid == vantage.pid or p.pid <= 1
        assert finding.killable is not (outside or itself), (p, finding.protected_by)
        if outside and not itself:
            assert finding.protected_by is not None
            assert finding.protected_by.startswith("outside_scope:")


def test_a_parent_cycle_does_not_put_the_scope_root_in_its_own_scope() -> None:
    """A torn snapshot (PIDs reused while the table was read) can show A's parent as B and
    B's parent as A. The root of a descendants scope is still not its own descendant."""
    root = mine(5000, ppid=5001)
    child = mine(5001, ppid=5000)
    table = [root, child]
    settings = SafetySettings(
        min_pid=0, protect_root=False, scope="descendants", scope_root_pid=5000
    )
    policy = policy_for(settings, ME, table)
    assert policy.protection_for(child) is None
    assert policy.protection_for(root) == "outside_scope:descendants"


def test_whitelist_refusal_names_the_entry_that_matched() -> None:
    policy = SafetyPolicy(
        SafetySettings(whitelist_processes=("code",), whitelist_patterns=(r"--keep-me",)),
        Vantage(user="noah", uid=1000),
    )
    by_argv0 = proc(5000, cmd="/usr/share/code/code --type=utility", name="node")
    by_pattern = proc(5001, cmd="/opt/tool --keep-me", name="tool")
    assert policy.protection_for(by_argv0) == "whitelisted:code"
    assert policy.protection_for(by_pattern) == "whitelisted:--keep-me"
