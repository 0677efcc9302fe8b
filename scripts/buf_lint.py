"""Lint protos/ with buf (STANDARD rules in buf.yaml) without the Buf Schema Registry.

google/api/* comes from the googleapis-common-protos wheel, so we compile a
descriptor image with grpc_tools.protoc and lint the image, limited to relay/.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen import REPO, _protoc, proto_files  # noqa: E402


def main() -> int:
    buf = shutil.which("buf") or str(Path(sys.executable).with_name("buf"))
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "relay.binpb"
        _protoc(["--include_imports", "--include_source_info", f"--descriptor_set_out={image}", *proto_files()])
        result = subprocess.run([buf, "lint", str(image), "--path", "relay", "--config", str(REPO / "buf.yaml")])
    if result.returncode == 0:
        print("buf lint: clean")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
