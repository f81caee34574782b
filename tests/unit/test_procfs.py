"""parse_stat on real captured /proc records, and ProcfsReader over a fake /proc tree."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.platform import ProcfsReader, ProcParseError, StatFields, parse_stat, procfs
from agents.platform.procfs import PF_KTHREAD, UserNames, parse_status_euid
from reaper_engine.models import ProcessState

FIXTURES = Path("/work/shared/fixtures/real")


def fixture_lines(name: str) -> list[str]:
    """Data lines of a capture: the leading run of '#' header lines stripped (see README)."""
    lines = (FIXTURES / name).read_text(encoding="utf-8").splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return [line for line in lines if line.strip()]


AWKWARD = fixture_lines("linux_proc_pid_stat_awkward_comm.txt")
TRUNCATED = fixture_lines("linux_proc_pid_stat_truncated75_pwsh17541.txt")


# -- parse_stat on real records ----------------------------------------------------------------


def test_fixtures_loaded():
    assert len(AWKWARD) == 5
    assert len(TRUNCATED) == 2


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        # pid, comm, state, ppid, pgrp, session, flags, utime, stime, starttime, rss_pages
        (0, StatFields(2246, "(sd-pam)", "S", 2245, 2245, 2245, 1077936448, 0, 0, 1971, 821)),
        (1, StatFields(1467, "(sd-pam)", "S", 1465, 1465, 1465, 1077936448, 0, 0, 3448, 566)),
        (
            2,
            StatFields(
                5768,
                "Plex New Transc",
                "S",
                1264,
                1252,
                1252,
                1077960704,
                9260,
                137,
                1430749,
                16704,
            ),
        ),
        (
            3,
            StatFields(25097, "sle ep", "S", 6632, 25097, 6632, 1077952512, 0, 0, 9600533, 187),
        ),
        (
            4,
            StatFields(20063, "mon_macs", "S", 1, 20054, 2690, 4202496, 344, 769, 7638028330, 516),
        ),
    ],
)
def test_parse_real_awkward_comm(index, expected):
    assert parse_stat(AWKWARD[index]) == expected


def test_comm_with_nested_parens_and_spaces_is_split_on_the_last_paren():
    fields = parse_stat(AWKWARD[0])
    assert fields.comm == "(sd-pam)"  # the record says ((sd-pam))
    assert not fields.is_kernel_thread


@pytest.mark.parametrize("line", TRUNCATED)
def test_real_truncated_records_are_refused(line):
    with pytest.raises(ProcParseError):
        parse_stat(line)


@pytest.mark.parametrize("cut", [10, 40, 75, 120, 160])
def test_any_prefix_of_a_record_cut_before_field_44_is_refused(cut):
    with pytest.raises(ProcParseError):
        parse_stat(AWKWARD[3][:cut])


def test_trailing_newline_as_the_kernel_writes_it():
    assert parse_stat(AWKWARD[4] + "\n") == parse_stat(AWKWARD[4])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1234",
        "1234 (comm",
        "1234 comm) S",
        ") 1234 (x",
        "abc (x) S" + " 0" * 50,
        "-1 (x) S" + " 0" * 50,
        "1 (x) SS" + " 0" * 50,
        "1 (x) S -5" + " 0" * 50,  # negative ppid
        "1 (x) S x" + " 0" * 50,
        "٣ (x) S" + " 0" * 50,  # a non-ASCII digit int() would accept
    ],
)
def test_malformed_records_raise_proc_parse_error(text):
    with pytest.raises(ProcParseError):
        parse_stat(text)


def test_proc_parse_error_is_a_value_error():
    assert issubclass(ProcParseError, ValueError)


@given(st.text())
def test_parse_stat_on_arbitrary_text_parses_or_raises_proc_parse_error(text):
    with contextlib.suppress(ProcParseError):
        parse_stat(text)


@given(st.text(alphabet=st.sampled_from("0123456789 ()-Sx\n\t_+"), max_size=300))
def test_parse_stat_on_record_like_text_parses_or_raises_proc_parse_error(text):
    try:
        fields = parse_stat(text)
    except ProcParseError:
        return
    assert fields.pid >= 0
    assert min(fields.ppid, fields.utime, fields.starttime, fields.rss_pages) >= 0


@given(st.integers(0, 60), st.text(max_size=40))
def test_mutilated_real_record_parses_or_raises_proc_parse_error(cut, junk):
    line = AWKWARD[2]
    with contextlib.suppress(ProcParseError):
        parse_stat(line[:cut] + junk + line[cut:])


def test_status_euid_is_the_second_uid():
    status = b"Name:\tx\nState:\tS (sleeping)\nUid:\t1000\t1001\t1002\t1003\nGid:\t0\t0\t0\t0\n"
    assert parse_status_euid(status) == 1001


# -- ProcfsReader over a fake /proc --------------------------------------------------------------

BTIME = 1_700_000_000
HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
ME = os.getuid()


def stat_line(
    pid: int,
    comm: str,
    state: str = "S",
    ppid: int = 1,
    flags: int = 4194560,
    utime: int = 250,
    stime: int = 50,
    starttime: int = 12345,
    rss: int = 100,
) -> str:
    fields = ["0"] * 50  # fields 3..52
    fields[0] = state
    fields[1] = str(ppid)
    fields[2] = str(pid)  # pgrp
    fields[3] = str(pid)  # session
    fields[6] = str(flags)
    fields[11] = str(utime)
    fields[12] = str(stime)
    fields[19] = str(starttime)
    fields[21] = str(rss)
    return f"{pid} ({comm}) {' '.join(fields)}\n"


def make_pid(
    root: Path,
    pid: int,
    stat: str | None,
    cmdline: bytes | None = b"",
    exe: str | None = None,
    status: str | None = None,
) -> Path:
    d = root / str(pid)
    d.mkdir()
    if stat is not None:
        (d / "stat").write_text(stat)
    if cmdline is not None:
        (d / "cmdline").write_bytes(cmdline)
    if exe is not None:
        (d / "exe").symlink_to(exe)
    # A fake tree is owned by whoever runs the tests; as root the reader consults status.
    (d / "status").write_text(status or f"Name:\tx\nUid:\t{ME}\t{ME}\t{ME}\t{ME}\n")
    return d


@pytest.fixture
def fake_proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    root.mkdir()
    (root / "stat").write_text(
        "cpu  1 2 3 4\ncpu0 1 2 3 4\nintr 0\nctxt 99\n"
        f"btime {BTIME}\nprocesses 42\nprocs_running 1\n"
    )
    make_pid(
        root,
        100,
        stat_line(100, "my worker (v2)"),
        cmdline=b"/usr/bin/python3\0-m\0worker\0--name\0a b\0",
        exe="/usr/bin/python3.11",
    )
    make_pid(root, 101, "101 (broken) S 1 1 1 0 -1 x y z" + " 0" * 45 + "\n")  # malformed
    make_pid(root, 102, "102 (Isolated Web Co) S 2937 1284 1284 0 -1 4194560 172529 0 924 0 35")
    make_pid(root, 103, stat_line(103, "gone"), cmdline=None)  # exited between stat and cmdline
    make_pid(root, 2, stat_line(2, "kthreadd", ppid=0, flags=PF_KTHREAD | 0x40), cmdline=None)
    make_pid(root, 104, stat_line(104, "defunct", state="Z", rss=0), cmdline=None)
    make_pid(root, 105, stat_line(105, "stopped", state="t"), cmdline=b"job\0")
    make_pid(root, 106, stat_line(106, "parked", state="P"), cmdline=b"p\0")
    (root / "self").mkdir()  # non-numeric entries are not processes
    (root / "sys").mkdir()
    (root / "thread-self").mkdir()
    return root


def test_read_lists_the_good_and_counts_the_bad(fake_proc):
    snapshot = ProcfsReader(fake_proc).read()
    by_pid = {p.pid: p for p in snapshot.processes}
    assert sorted(by_pid) == [2, 100, 104, 105, 106]
    assert snapshot.skipped == {"malformed_stat": 2, "vanished": 1}


def test_read_maps_a_normal_process(fake_proc):
    reader = ProcfsReader(fake_proc)
    info = {p.pid: p for p in reader.read().processes}[100]
    assert info.name == "my worker (v2)"
    assert info.cmdline == ("/usr/bin/python3", "-m", "worker", "--name", "a b")
    assert info.exe == "/usr/bin/python3.11"
    assert (info.ppid, info.pgid, info.sid) == (1, 100, 100)
    assert info.uid == ME
    assert info.user
    assert info.create_time == pytest.approx(BTIME + 12345 / HZ)
    assert info.cpu_time == pytest.approx(300 / HZ)
    assert info.rss == 100 * PAGE
    assert info.status is ProcessState.SLEEPING
    assert info.cpu_percent == 0.0
    assert not info.is_kernel_thread


def test_kernel_thread_and_zombie_have_no_command_line(fake_proc):
    by_pid = {p.pid: p for p in ProcfsReader(fake_proc).read().processes}
    kthread, zombie = by_pid[2], by_pid[104]
    assert kthread.is_kernel_thread
    assert kthread.cmdline == ()
    assert kthread.exe is None
    assert kthread.command == "kthreadd"
    assert zombie.status is ProcessState.ZOMBIE
    assert zombie.cmdline == ()
    assert not zombie.is_kernel_thread


def test_state_letters(fake_proc):
    by_pid = {p.pid: p for p in ProcfsReader(fake_proc).read().processes}
    assert by_pid[105].status is ProcessState.STOPPED  # 't', tracing stop
    assert by_pid[106].status is ProcessState.UNKNOWN  # 'P', parked


def test_taken_at_is_when_the_read_began(fake_proc):
    before = time.time()
    snapshot = ProcfsReader(fake_proc).read()
    assert before <= snapshot.taken_at <= time.time()


def test_get(fake_proc):
    reader = ProcfsReader(fake_proc)
    info = reader.get(100)
    assert info is not None
    assert info.name == "my worker (v2)"
    assert reader.get(101) is None  # malformed
    assert reader.get(103) is None  # vanished mid-read
    assert reader.get(99999) is None  # never existed
    assert reader.get(-1) is None


def test_unreadable_stat_is_access_denied_but_an_unreadable_exe_is_not(fake_proc, monkeypatch):
    # Root reads files whatever their mode, so the kernel's refusal is simulated.
    real_read_all, real_readlink = procfs._read_all, os.readlink
    make_pid(fake_proc, 200, stat_line(200, "secret"), cmdline=b"s\0")
    make_pid(fake_proc, 201, stat_line(201, "hidden exe"), cmdline=b"h\0", exe="/bin/h")

    def read_all(name, dir_fd=None):
        if name == "stat" and os.path.samefile(f"/proc/self/fd/{dir_fd}", fake_proc / "200"):
            raise PermissionError(13, "Permission denied")
        return real_read_all(name, dir_fd)

    def readlink(path, *, dir_fd=None):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(procfs, "_read_all", read_all)
    monkeypatch.setattr(procfs.os, "readlink", readlink)
    snapshot = ProcfsReader(fake_proc).read()
    by_pid = {p.pid: p for p in snapshot.processes}
    assert snapshot.skipped["access_denied"] == 1
    assert 200 not in by_pid
    assert by_pid[201].exe is None
    assert real_readlink(fake_proc / "201" / "exe") == "/bin/h"


def test_status_is_consulted_only_for_root_owned_user_processes(fake_proc):
    # A non-dumpable process's /proc dir is owned by root; status has its real effective uid.
    make_pid(
        fake_proc,
        300,
        stat_line(300, "sshd"),
        cmdline=b"sshd\0",
        status="Name:\tsshd\nUid:\t1000\t1000\t1000\t1000\n",
    )
    make_pid(fake_proc, 301, stat_line(301, "odd"), cmdline=b"odd\0", status="Name:\todd\n")
    snapshot = ProcfsReader(fake_proc).read()
    by_pid = {p.pid: p for p in snapshot.processes}
    if os.geteuid() == 0:  # the fake dirs are root-owned, as a non-dumpable process's are
        assert by_pid[300].uid == 1000
        assert 301 not in by_pid
        assert snapshot.skipped["malformed_status"] == 1
        assert ProcfsReader(fake_proc, exact_uid=False).get(300).uid == 0  # type: ignore[union-attr]
    else:  # owned by us, not root: the owner is trusted and status never read
        assert by_pid[300].uid == ME
        assert by_pid[301].uid == ME


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root-owned fake /proc dirs (run as root)")
def test_status_is_remembered_for_settled_processes_and_never_by_get(fake_proc):
    old_start = 100 * HZ  # started 100 s after boot: long settled
    young_start = int((time.time() - BTIME - 0.5) * HZ)  # started half a second ago
    status = "Name:\tx\nUid:\t{0}\t{0}\t{0}\t{0}\n"
    old_dir = make_pid(
        fake_proc,
        500,
        stat_line(500, "old", starttime=old_start),
        b"old\0",
        status=status.format(1000),
    )
    young_dir = make_pid(
        fake_proc,
        501,
        stat_line(501, "young", starttime=young_start),
        b"young\0",
        status=status.format(1000),
    )
    reader = ProcfsReader(fake_proc)

    def uids() -> dict[int, int | None]:
        return {p.pid: p.uid for p in reader.read().processes if p.pid in (500, 501)}

    assert uids() == {500: 1000, 501: 1000}
    (old_dir / "status").write_text(status.format(2000))
    (young_dir / "status").write_text(status.format(2000))
    # The settled process is not read again; the young one may still be changing uid.
    assert uids() == {500: 1000, 501: 2000}
    assert reader.get(500).uid == 2000  # type: ignore[union-attr]  # the re-check before a signal
    # The same PID with another start time is another process: read afresh.
    (old_dir / "stat").write_text(stat_line(500, "old", starttime=old_start + 1))
    assert uids()[500] == 2000


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root-owned fake /proc dirs (run as root)")
def test_a_remembered_euid_is_read_again_once_it_is_old(fake_proc, monkeypatch):
    status = "Name:\tx\nUid:\t{0}\t{0}\t{0}\t{0}\n"
    pid_dir = make_pid(
        fake_proc,
        500,
        stat_line(500, "old", starttime=100 * HZ),
        b"old\0",
        status=status.format(1000),
    )
    reader = ProcfsReader(fake_proc)

    def uid() -> int | None:
        return next(p.uid for p in reader.read().processes if p.pid == 500)

    start = time.monotonic()
    clock = [start]
    monkeypatch.setattr(procfs.time, "monotonic", lambda: clock[0])
    assert uid() == 1000
    (pid_dir / "status").write_text(status.format(2000))  # a late setuid(), say
    clock[0] = start + procfs.EUID_MEMORY_SECONDS - 1
    assert uid() == 1000  # remembered, not read
    clock[0] = start + procfs.EUID_MEMORY_SECONDS + 1
    assert uid() == 2000  # too old to trust: read again


def test_deleted_executable_suffix_is_stripped(fake_proc):
    make_pid(fake_proc, 400, stat_line(400, "old"), cmdline=b"old\0", exe="/opt/old (deleted)")
    assert ProcfsReader(fake_proc).get(400).exe == "/opt/old"  # type: ignore[union-attr]


def test_missing_btime_is_an_error(tmp_path):
    (tmp_path / "stat").write_text("cpu 1 2 3\n")
    with pytest.raises(RuntimeError, match="btime"):
        ProcfsReader(tmp_path).read()


def test_user_names_are_cached_for_a_while_then_asked_again(monkeypatch):
    owners = {1001: "alice"}
    asked: list[int] = []

    def getpwuid(uid: int) -> SimpleNamespace:
        asked.append(uid)
        if uid not in owners:
            raise KeyError(uid)
        return SimpleNamespace(pw_name=owners[uid])

    monkeypatch.setattr("pwd.getpwuid", getpwuid)
    now = [100.0]
    names = UserNames(ttl=60.0, clock=lambda: now[0])
    assert names(1001) == "alice"
    assert names(4242) == "4242"  # no passwd entry: the uid itself
    owners[1001] = "bob"  # alice deleted, her uid given to bob
    now[0] += 59.0
    assert names(1001) == "alice"  # within the TTL: one lookup per uid, not per process
    assert asked == [1001, 4242]
    now[0] += 1.0
    assert names(1001) == "bob"
    owners[4242] = "carol"
    assert names(4242) == "carol"
    assert asked == [1001, 4242, 1001, 4242]
