"""The protos are the source of truth: generated code must match them, and they must lint clean."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import gen  # noqa: E402


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def test_checked_in_generated_code_matches_a_fresh_generation(tmp_path: Path) -> None:
    gen.generate(tmp_path)
    fresh = _tree(tmp_path / gen.PY_OUT)
    checked_in = _tree(REPO / gen.PY_OUT)
    assert sorted(fresh) == sorted(checked_in), "generated file set drifted: run `make gen`"
    drifted = [name for name in fresh if fresh[name] != checked_in[name]]
    assert not drifted, f"generated code drifted from protos/ (run `make gen`): {drifted}"
    assert filecmp.cmp(tmp_path / gen.DESCRIPTOR_OUT, REPO / gen.DESCRIPTOR_OUT, shallow=False), (
        "envoy/relay.pb drifted from protos/: run `make gen`"
    )
    openapi = Path("docs/openapi.json")
    assert (tmp_path / openapi).read_text() == (REPO / openapi).read_text(), (
        "docs/openapi.json drifted from protos/ (or the error table): run `make gen`"
    )


def test_protos_pass_buf_standard_lint() -> None:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "buf_lint.py")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_64_bit_integers_in_rest_visible_responses() -> None:
    """int64 renders as a JSON string through the transcoder and breaks the openai SDK."""
    from google.protobuf.descriptor import FieldDescriptor

    from relay_proto.relay.v1 import models_pb2

    wide = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_FIXED64}

    def walk(descriptor, seen):
        if descriptor.full_name in seen:
            return []
        seen.add(descriptor.full_name)
        bad = [f"{descriptor.full_name}.{f.name}" for f in descriptor.fields if f.type in wide]
        for f in descriptor.fields:
            if f.message_type is not None:
                bad += walk(f.message_type, seen)
        return bad

    for message in (models_pb2.ListModelsResponse.DESCRIPTOR, models_pb2.Model.DESCRIPTOR):
        assert walk(message, set()) == []
