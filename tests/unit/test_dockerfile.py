"""The container image, checked statically (no Docker daemon here): pinned bases, a
non-root runtime without compilers, COPY sources that exist and reach the build
context, and entry points that are real `relay` commands."""

from __future__ import annotations

import fnmatch
import posixpath
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from relay_server import cli

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPILERS = ("build-essential", "gcc", "g++", "clang", "make", "cargo", "rustc")


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse(text: str) -> list[Stage]:
    """Stages of a Dockerfile: continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest.strip()))
    return stages


def exec_form(value: str) -> list[str]:
    import json

    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed), value
    return parsed


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())


def test_every_base_image_is_pinned(stages: list[Stage]) -> None:
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.base in names:
            continue
        tag = stage.base.rsplit("/", 1)[-1].partition(":")[2]  # a registry may carry a :port
        assert "@sha256:" in stage.base or (tag and tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag)), (
            f"base image {stage.base!r} is not pinned to an exact version"
        )


def test_the_build_is_multi_stage_and_the_runtime_copies_from_the_builder(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    builders = {s.name for s in stages[:-1]}
    copies_from = {re.search(r"--from=(\S+)", rest).group(1)  # type: ignore[union-attr]
                   for kw, rest in stages[-1].instructions if kw == "COPY" and "--from=" in rest}  # fmt: skip
    assert copies_from and copies_from <= builders


def test_the_runtime_stage_runs_as_a_non_root_user_without_compilers(stages: list[Stage]) -> None:
    runtime = stages[-1]
    users = [rest for kw, rest in runtime.instructions if kw == "USER"]
    assert users, "the runtime stage never leaves root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    # A numeric uid lets Kubernetes verify runAsNonRoot; it must be the one the stage creates.
    assert user.isdigit(), "USER should be a numeric uid (runAsNonRoot can only check a number)"
    created = " ".join(rest for kw, rest in runtime.instructions if kw == "RUN")
    assert f"--uid {user}" in created, "the runtime stage does not create the user it runs as"
    for keyword, rest in runtime.instructions:
        if keyword == "RUN":
            words = set(shlex.split(rest.replace("&&", " ")))
            assert not words & set(COMPILERS), f"the runtime stage installs a compiler: {rest}"
    deploy = (REPO / "deploy" / "k8s" / "base").rglob("*.yaml")
    uids = {int(m) for path in deploy for m in re.findall(r"runAsUser: (\d+)", path.read_text())}
    assert uids <= {int(user)}, f"the manifests run as {uids}, the image as {user}"


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        candidates = [pattern, pattern.removeprefix("**/")]
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(prefix, c) or fnmatch.fnmatch(Path(prefix).name, c.removeprefix("**/"))
               for prefix in prefixes for c in candidates if c.startswith("**/") or c == pattern):  # fmt: skip
            ignored = not negate
    return ignored


def test_every_copy_source_exists_and_is_in_the_build_context(stages: list[Stage]) -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]  # fmt: skip
    sources = []
    for stage in stages:
        for keyword, rest in stage.instructions:
            if keyword in ("COPY", "ADD") and "--from=" not in rest:
                words = [w for w in shlex.split(rest) if not w.startswith("--")]
                sources += words[:-1]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"
        assert not _ignored(source.rstrip("/"), patterns), f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]  # fmt: skip
    for path in (".relay/quickstart.env", ".venv/bin/python", ".git/config", "tests/unit/test_lint.py"):
        assert _ignored(path, patterns), f"{path} would be sent to the build"


def test_entrypoint_is_the_relay_console_script_and_every_command_exists(stages: list[Stage]) -> None:
    runtime = dict(stages[-1].instructions)
    entrypoint, command = exec_form(runtime["ENTRYPOINT"]), exec_form(runtime["CMD"])
    scripts = tomllib.loads((REPO / "server" / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["relay"] and "relay" in scripts
    # The venv's bin (where the console script is installed) is on PATH.
    env = " ".join(rest for kw, rest in stages[-1].instructions if kw == "ENV")
    assert "PATH=/opt/relay/venv/bin" in env
    assert_relay_command(command)


def assert_relay_command(argv: list[str]) -> None:
    """``relay <argv>`` parses: every flag and subcommand exists (checked with --help)."""
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--help"])
    assert exit_.value.code == 0, f"relay {' '.join(argv)} is not a relay command"


def test_assert_relay_command_rejects_an_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(AssertionError):
        assert_relay_command(["no-such-command"])


def test_every_server_dependency_is_pinned_for_the_image() -> None:
    """The image installs with requirements-dev.txt as constraints: each run-time dependency has a pin."""
    deps = tomllib.loads((REPO / "server" / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {re.split(r"[=\[]", line)[0].strip().lower()
            for line in (REPO / "requirements-dev.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")}  # fmt: skip
    names = {re.split(r"[<>=\[ ]", d)[0].lower() for d in deps} - {"relay-proto", "relay-sdk"}
    missing = sorted(names - pins)
    assert not missing, f"not pinned in requirements-dev.txt: {missing}"


def test_the_constraints_pip_gets_carry_no_extras(stages: list[Stage]) -> None:
    """pip refuses a constraints file with extras (psycopg[binary]): the builder strips them first."""
    runs = [rest for stage in stages for kw, rest in stage.instructions if kw == "RUN" and "--constraint" in rest]
    assert runs
    for run in runs:
        constraints = re.search(r"--constraint (\S+)", run).group(1)  # type: ignore[union-attr]
        if constraints == "requirements-dev.txt" and "[" in (REPO / constraints).read_text():
            pytest.fail("requirements-dev.txt has extras: pip would refuse it as constraints")
        stripped = [r for s in stages for kw, r in s.instructions if kw == "RUN" and f"> {constraints}" in r]
        assert constraints == "requirements-dev.txt" or stripped, f"{constraints} is never written"
        for line in stripped:
            assert "sed -E 's/\\[[^]]*\\]//'" in line, line


def image_files(stages: list[Stage]) -> set[tuple[str, str]]:
    """(path in the final image, repository path it comes from) for every COPY, following
    ``COPY --from=<stage>`` back to the repository."""
    by_stage: dict[str, set[tuple[str, str]]] = {}
    files: set[tuple[str, str]] = set()
    for stage in stages:
        files, workdir = set(), "/"
        for keyword, rest in stage.instructions:
            if keyword == "WORKDIR":
                workdir = rest
            if keyword != "COPY":
                continue
            words = shlex.split(rest)
            origin = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
            *sources, dest = [w for w in words if not w.startswith("--")]
            dest_abs = dest if dest.startswith("/") else posixpath.join(workdir, dest)
            for source in sources:
                if dest.endswith("/") and not source.endswith("/"):
                    target = posixpath.join(dest_abs, posixpath.basename(source))
                else:
                    target = posixpath.normpath(dest_abs)
                source = source.rstrip("/")
                if origin is None:
                    files.add((posixpath.normpath(target), source))
                    continue
                for path, repo in by_stage[origin]:
                    if path == source or path.startswith(source + "/"):
                        files.add((target + path[len(source):], repo))
        by_stage[stage.name] = files
    return files


def test_files_relay_finds_beside_its_sources_are_in_the_image(stages: list[Stage]) -> None:
    """Relay is installed editable at /app, so paths it derives from its own location
    (migrations/, the Envoy descriptor, the OpenAPI document) must sit at the same place under /app."""
    from relay_server.stack import envoy as stack_envoy
    from relay_server.storage.postgres.migrate import default_migrations_dir

    files = image_files(stages)
    needed = [default_migrations_dir(), stack_envoy.TEMPLATE_PATH.parent / "relay.pb", stack_envoy.OPENAPI_PATH,
              REPO / "server" / "relay_server" / "cli.py", REPO / "proto_python" / "relay_proto",
              REPO / "sdk_python" / "relay_sdk"]  # fmt: skip
    for path in needed:
        rel = str(path.relative_to(REPO))
        assert any((rel == repo or rel.startswith(repo + "/")) and image + rel[len(repo):] == f"/app/{rel}"
                   for image, repo in files), f"{rel} is not at /app/{rel} in the image"  # fmt: skip
    # ... and nothing the image does not need: no tests, no local state.
    assert not any(repo.startswith(("tests", ".relay", ".venv")) for _, repo in files)
