"""The TypeScript SDK's generated code (sdk_typescript/src/gen/) must match protos/.

It regenerates with the pinned protoc-gen-es into a temporary tree and compares
every file, so a proto edited without `make gen` fails here, whichever proto
and whichever file changed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import gen_ts  # noqa: E402


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    if not gen_ts.plugin_available():
        pytest.skip("sdk_typescript/node_modules is missing (no protoc-gen-es): run `make sdk-ts`")
    root = tmp_path_factory.mktemp("ts-gen")
    gen_ts.generate(root)
    return _tree(root / gen_ts.TS_OUT)


def test_checked_in_typescript_matches_a_fresh_generation(fresh: dict[str, bytes]) -> None:
    checked_in = _tree(REPO / gen_ts.TS_OUT)
    missing = sorted(set(fresh) - set(checked_in))
    stale = sorted(set(checked_in) - set(fresh))
    assert not missing and not stale, f"TypeScript file set drifted (run `make gen`): missing {missing}, stale {stale}"
    drifted = [name for name in fresh if fresh[name] != checked_in[name]]
    assert not drifted, f"TypeScript code drifted from protos/ (run `make gen`): {drifted}"


def test_every_relay_proto_and_service_is_generated(fresh: dict[str, bytes]) -> None:
    """Guards the generator's file selection: each proto gets a module, each service a descriptor."""
    for proto in gen_ts.gen.proto_files():
        module = proto.removesuffix(".proto") + "_pb.ts"
        assert module in fresh, f"{proto} produced no {module}"
        services = re.findall(r"^service (\w+)", (gen_ts.gen.PROTO_ROOT / proto).read_text(), re.MULTILINE)
        text = fresh[module].decode()
        for service in services:
            assert f"export const {service}: GenService<" in text, f"{service} of {proto} has no descriptor"
    assert "google/rpc/error_details_pb.ts" in fresh, "the client decodes ErrorInfo from it"
    assert not [name for name in fresh if name.startswith("google/protobuf/")], "WKTs come from @bufbuild/protobuf/wkt"


def test_generation_is_deterministic(fresh: dict[str, bytes], tmp_path: Path) -> None:
    gen_ts.generate(tmp_path)
    assert _tree(tmp_path / gen_ts.TS_OUT) == fresh


def test_generation_fails_clearly_without_the_plugin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(gen_ts, "PLUGIN", tmp_path / "missing" / "protoc-gen-es")
    with pytest.raises(gen_ts.PluginMissing, match="make sdk-ts"):
        gen_ts.generate(tmp_path)
    assert not (tmp_path / gen_ts.TS_OUT).exists(), "nothing is written when generation cannot run"
