"""Sample one worker with py-spy and rank where its CPU goes.

py-spy (PyPI ``py-spy``) attaches to a running process (no restart, no code
change) and records Python stacks; ``--nonblocking`` keeps it from pausing the
worker, so the figures under load stay honest.  Time spent in C (grpc core,
orjson, the Redis and Postgres drivers) is charged to the Python line that
called it.  Idle samples (the loop waiting in epoll) are left out: the
percentages are shares of the worker's busy time.

Three views of the same samples:
* self: the innermost frame (``function (file:line)``), the classic hot spot;
* inclusive: every Relay function on the stack (what a change there could save);
* by area: self time grouped by package or Relay module.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
# Idle thread-pool workers blocked in ``queue.get`` that py-spy still reports as
# busy (seen as a leaf at these lines): they are waiting, not working.
_IDLE_LEAVES = (
    ("Thread.run", "threading.py"),
    ("_worker", "concurrent/futures/thread.py"),
    ("BufferedLineHandler._tick", "relay_server/logging_setup.py"),  # the log flusher's sleep between batches
)


def find_py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pid: int, duration_s: int, out: Path, *, rate: int = 200, native: bool = False) -> subprocess.Popen[str]:
    """Start py-spy on ``pid`` for ``duration_s``; the caller drives load meanwhile and waits.

    ``native`` adds C frames (grpc core, uvloop, orjson), which shows what the
    Python line a sample lands on was doing; py-spy must then pause the worker
    for each sample, so the load figures during such a run are lower.
    """
    binary = find_py_spy()
    if binary is None:
        raise FileNotFoundError("py-spy is not installed: `.venv/bin/pip install py-spy`")
    argv = [binary, "record", "--pid", str(pid), "--duration", str(duration_s), "--rate", str(rate),
            "--format", "raw", "--output", str(out), *(["--native"] if native else ["--nonblocking"])]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@dataclass
class Frame:
    func: str
    file: str
    line: str

    @property
    def where(self) -> str:
        return f"{_short(self.file)}:{self.line}" if self.line else _short(self.file)


@dataclass
class Profile:
    samples: int = 0
    idle_skipped: int = 0
    self_time: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    areas: Counter[str] = field(default_factory=Counter)

    def top(self, counter: Counter[str], n: int) -> list[tuple[str, int, float]]:
        return [(name, count, 100.0 * count / self.samples) for name, count in counter.most_common(n)]

    def to_json(self, n: int = 25) -> dict[str, object]:
        def rows(counter: Counter[str]) -> list[dict[str, object]]:
            return [{"frame": f, "samples": c, "percent": round(p, 1)} for f, c, p in self.top(counter, n)]

        return {"samples": self.samples, "idle_thread_samples_skipped": self.idle_skipped, "self": rows(self.self_time), "inclusive_relay": rows(self.inclusive),
                "by_area": rows(self.areas)}  # fmt: skip


def _short(path: str) -> str:
    """``.../site-packages/grpc/aio/_server.py`` → ``grpc/aio/_server.py``; Relay paths from ``relay_server/``."""
    for marker in ("site-packages/", "server/relay_server/", "lib/python3"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return ("relay_server/" + tail) if marker == "server/relay_server/" else tail
    return path


def _area(frame: Frame) -> str:
    short = _short(frame.file)
    if short.startswith("relay_server/"):
        return short.rsplit(":", 1)[0]
    if "/" not in short:  # stdlib module at top level, e.g. "logging/__init__.py" keeps its dir
        return f"stdlib {short}"
    head = short.split("/", 1)[0]
    if ".11/" in frame.file and "site-packages" not in frame.file:
        return f"stdlib {head}"
    return head


def parse(text: str) -> Profile:
    profile = Profile()
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in (_parse_frame(raw) for raw in stack.split(";")) if f is not None]
        if not frames:
            continue
        leaf = frames[-1]
        if any(leaf.func == func and leaf.file.endswith(tail) for func, tail in _IDLE_LEAVES):
            profile.idle_skipped += count
            continue
        profile.samples += count
        profile.self_time[f"{leaf.func} ({leaf.where})"] += count
        profile.areas[_area(leaf)] += count
        seen = {f"{f.func} ({_short(f.file)})" for f in frames if "relay_server/" in f.file}
        for name in seen:
            profile.inclusive[name] += count
    return profile


def _parse_frame(raw: str) -> Frame | None:
    match = _FRAME.match(raw.strip())
    if match is None:
        return None
    return Frame(match["func"], match["file"], match["line"] or "")


def render(profile: Profile, n: int = 20) -> str:
    out = [f"py-spy samples (busy only): {profile.samples} (+{profile.idle_skipped} idle thread-pool samples left out)"]
    for title, counter in (("self time (innermost frame)", profile.self_time),
                           ("inclusive, Relay functions", profile.inclusive),
                           ("self time by area", profile.areas)):  # fmt: skip
        out.append(f"\n{title}:")
        out += [f"  {p:5.1f}%  {name}" for name, _, p in profile.top(counter, n)]
    return "\n".join(out)
