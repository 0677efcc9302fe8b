"""Generate the SDK's typed method layer from the service descriptors in `protos/`.

Output: `sdk_python/relay_sdk/_gen/methods.py`, checked in.  For every
service of `relay.*` it writes a sync and an async client class with one
snake_case method per RPC (HttpBody RPCs are skipped: they exist for REST), an
`iter_*` pager per AIP-158 `List*` RPC, and the mixins that hang the service
clients on `Relay` / `AsyncRelay`.  The runtime behaviour (auth metadata,
retries, error mapping, streams, pages) lives in the hand-written `_wrappers.py`
and `_pagers.py`; this file only spells out names and types so editors and
mypy see them.  Output depends only on the protos (deterministic).

Usage: python scripts/gen_sdk.py [--root DIR]   (DIR defaults to the repository)
"""

from __future__ import annotations

import argparse
import keyword
import re
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "protos"
OUT = Path("sdk_python/relay_sdk/_gen/methods.py")

# The attribute of a service on the clients is the snake_case of its name without
# "Service", in the plural when it lists that resource (ApiKeyService has ListApiKeys:
# `client.api_keys`).  Only names that read badly that way are spelled out here.
_ATTRIBUTE_ALIASES = {"relay.v1.OpenAIService": "models"}
# Call options are keywords next to the request's fields, so no field may share their names.
_CALL_OPTIONS = ("timeout", "extra_metadata")
_SKIPPED_TYPES = {".google.api.HttpBody"}
_SCALARS = {
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "str",
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "bytes",
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: "bool",
    descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE: "float",
    descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT: "float",
}
_TYPE_MESSAGE = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
_LABEL_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED


def snake(name: str) -> str:
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def _module_of(proto_file: str) -> tuple[str, str]:
    """`relay/admin/v1/api_keys.proto` → (import path, local alias)."""
    stem = proto_file.removesuffix(".proto")
    if stem.startswith("relay/"):
        return "relay_proto." + stem.replace("/", ".") + "_pb2", stem.replace("/", "_") + "_pb2"
    return stem.replace("/", ".") + "_pb2", stem.replace("/", "_") + "_pb2"


class _Types:
    """Resolves `.pkg.Message` names to Python expressions and remembers the imports used."""

    def __init__(self, files: list[descriptor_pb2.FileDescriptorProto]) -> None:
        self.messages: dict[str, tuple[str, str, descriptor_pb2.DescriptorProto]] = {}
        self.imports: dict[str, str] = {}
        for file in files:
            for message in file.message_type:
                self._add(file, f".{file.package}", "", message)

    def _add(self, file: descriptor_pb2.FileDescriptorProto, scope: str, py_scope: str, message: descriptor_pb2.DescriptorProto) -> None:
        full, py_name = f"{scope}.{message.name}", f"{py_scope}{message.name}"
        self.messages[full] = (file.name, py_name, message)
        for nested in message.nested_type:
            self._add(file, full, py_name + ".", nested)

    def ref(self, full_name: str) -> str:
        proto_file, py_name, _ = self.messages[full_name]
        module, alias = _module_of(proto_file)
        self.imports[alias] = module
        return f"{alias}.{py_name}"

    def message(self, full_name: str) -> descriptor_pb2.DescriptorProto:
        return self.messages[full_name][2]

    def field_type(self, field: descriptor_pb2.FieldDescriptorProto) -> str:
        if field.type == _TYPE_MESSAGE:
            return self.ref(field.type_name)
        return _SCALARS.get(field.type, "int")  # ints and enums


@dataclass(frozen=True)
class _Method:
    service: str  # full service name
    name: str
    request: str
    response: str
    streaming: bool
    admin: bool
    doc: str
    pager_items: tuple[str, str] | None  # (repeated field, item type)


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {
        tuple(loc.path): textwrap.dedent(loc.leading_comments).strip()
        for loc in file.source_code_info.location
        if loc.leading_comments
    }


def _pager_items(types: _Types, request: str, response: str) -> tuple[str, str] | None:
    """AIP-158: a request with `page_token` and a response with `next_page_token` and one repeated field."""
    if not any(f.name == "page_token" for f in types.message(request).field):
        return None
    fields = types.message(response).field
    repeated = [f for f in fields if f.label == _LABEL_REPEATED]
    if not any(f.name == "next_page_token" for f in fields) or len(repeated) != 1:
        return None
    return repeated[0].name, types.field_type(repeated[0])


def collect(fds: descriptor_pb2.FileDescriptorSet) -> tuple[_Types, list[tuple[str, str, list[_Method]]]]:
    files = sorted((f for f in fds.file), key=lambda f: f.name)
    types = _Types(files)
    services: list[tuple[str, str, list[_Method]]] = []
    for file in files:
        if not file.package.startswith("relay."):
            continue
        comments = _comments(file)
        for s_index, service in enumerate(file.service):
            full = f"{file.package}.{service.name}"
            methods = []
            for m_index, method in enumerate(service.method):
                if method.client_streaming or {method.input_type, method.output_type} & _SKIPPED_TYPES:
                    continue
                for option in _CALL_OPTIONS:
                    if any(f.name == option for f in types.message(method.input_type).field):
                        raise SystemExit(f"{full}.{method.name}: request field {option!r} clashes with a call option")
                methods.append(
                    _Method(
                        service=full,
                        name=method.name,
                        request=method.input_type,
                        response=method.output_type,
                        streaming=method.server_streaming,
                        admin=".admin." in f".{file.package}.",
                        doc=comments.get((6, s_index, 2, m_index), ""),
                        pager_items=None if method.server_streaming else _pager_items(types, method.input_type, method.output_type),
                    )
                )
            if methods:
                services.append((full, comments.get((6, s_index), ""), methods))
    return types, services


def _docstring(text: str, indent: str) -> list[str]:
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    lines = text.splitlines() or [""]
    if len(lines) == 1:
        return [f'{indent}"""{lines[0]}"""']
    return [f'{indent}"""{lines[0]}', *[f"{indent}{ln}".rstrip() for ln in lines[1:]], f'{indent}"""']


def _spec_name(method: _Method) -> str:
    return "_" + snake(method.service.rsplit(".", 1)[1]).upper() + "__" + snake(method.name).upper()


def attribute_name(service: str, methods: list[_Method]) -> str:
    base = service.rsplit(".", 1)[1].removesuffix("Service")
    if any(m.name == f"List{base}s" for m in methods):
        base += "s"
    attr = _ATTRIBUTE_ALIASES.get(service) or snake(base)
    return attr + "_" if keyword.iskeyword(attr) else attr


_SIGNATURE = """\
    {prefix}def {name}(
        self,
        request: {request} | Mapping[str, Any] | None = None,
        /,
        *,
        timeout: float | None = None,
        extra_metadata: Metadata | None = None,
        **fields: Any,
    ) -> {result}:"""


def _method_lines(types: _Types, method: _Method, is_async: bool) -> list[str]:
    request, response = types.ref(method.request), types.ref(method.response)
    doc = method.doc or f"Calls ``{method.name}``."
    rpc = f"``/{method.service}/{method.name}``"
    args = f"{_spec_name(method)}, request, fields, timeout, extra_metadata"
    out: list[str] = []
    if method.streaming:
        kind = "AsyncResponseStream" if is_async else "ResponseStream"
        out.append(_SIGNATURE.format(prefix="", name=snake(method.name), request=request, result=f"{kind}[{response}]"))
        out += _docstring(f"{doc}\n\nServer stream of {rpc}; iterate it for ``{response.rsplit('.', 1)[1]}`` messages.", " " * 8)
        out.append(f"        return self._invoker.stream({args})")
    else:
        prefix, wait = ("async ", "await ") if is_async else ("", "")
        out.append(_SIGNATURE.format(prefix=prefix, name=snake(method.name), request=request, result=response))
        out += _docstring(f"{doc}\n\nUnary {rpc}.", " " * 8)
        out.append(f"        return {wait}self._invoker.unary({args})")
    if method.pager_items is not None:
        field, item = method.pager_items
        pager = "AsyncPager" if is_async else "Pager"
        out.append("")
        name = "iter_" + snake(method.name).removeprefix("list_")
        out.append(_SIGNATURE.format(prefix="", name=name, request=request, result=f"{pager}[{item}, {response}]"))
        out += _docstring(f"Every ``{field}`` item of {rpc}, fetching pages lazily.", " " * 8)
        out.append(f'        return self._invoker.pager({_spec_name(method)}, "{field}", request, fields, timeout, extra_metadata)')
    return out


def _class_lines(types: _Types, service: str, doc: str, methods: list[_Method], is_async: bool) -> list[str]:
    short = service.rsplit(".", 1)[1]
    name = ("Async" if is_async else "") + short + "Client"
    invoker = "AsyncInvoker" if is_async else "SyncInvoker"
    flavour = "Async (grpc.aio)" if is_async else "Sync"
    out = [f"class {name}:"]
    out += _docstring(f"{flavour} client of ``{service}``.\n\n{doc}".rstrip(), "    ")
    out += ["", f"    def __init__(self, invoker: {invoker}) -> None:", "        self._invoker = invoker"]
    for method in methods:
        out.append("")
        out += _method_lines(types, method, is_async)
    return out


def render(fds: descriptor_pb2.FileDescriptorSet) -> str:
    types, services = collect(fds)
    body: list[str] = []
    for _service, _, methods in services:
        for method in methods:
            body += [
                f"{_spec_name(method)} = MethodSpec(",
                f'    "/{method.service}/{method.name}",',
                f"    {types.ref(method.request)},",
                f"    {types.ref(method.response)},",
                f"    admin={method.admin},",
                ")",
            ]
    for is_async in (False, True):
        for service, doc, methods in services:
            body += ["", "", *_class_lines(types, service, doc, methods, is_async)]
    for is_async, mixin, invoker in ((False, "SyncServices", "SyncInvoker"), (True, "AsyncServices", "AsyncInvoker")):
        body += ["", "", f"class {mixin}:", f'    """The service clients of ``{"AsyncRelay" if is_async else "Relay"}``, one attribute per service."""', ""]
        for service, _, methods in services:
            cls = ("Async" if is_async else "") + service.rsplit(".", 1)[1] + "Client"
            body.append(f"    {attribute_name(service, methods)}: {cls}")
        body += ["", f"    def _bind_services(self, invoker: {invoker}) -> None:"]
        for service, _, methods in services:
            cls = ("Async" if is_async else "") + service.rsplit(".", 1)[1] + "Client"
            body.append(f"        self.{attribute_name(service, methods)} = {cls}(invoker)")
    body += ["", "", "# Full service name → attribute on the clients (every service of the protos)."]
    body.append("SERVICE_ATTRIBUTES: dict[str, str] = {")
    body += [f'    "{service}": "{attribute_name(service, methods)}",' for service, _, methods in services]
    body.append("}")
    header = [
        '"""Typed methods for every RPC of the Relay protos.',
        "",
        "Generated by scripts/gen_sdk.py from protos/. Do not edit.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from collections.abc import Mapping",
        "from typing import Any",
        "",
        *[f"import {module} as {alias}" for alias, module in sorted(types.imports.items(), key=lambda kv: kv[1])],
        "from relay_sdk._pagers import AsyncPager, Pager",
        "from relay_sdk._wrappers import AsyncInvoker, AsyncResponseStream, Metadata, MethodSpec, ResponseStream, SyncInvoker",
        "",
    ]
    return "\n".join(header + body) + "\n"


def _include_dirs() -> list[str]:
    import google.api.annotations_pb2 as annotations  # noqa: PLC0415  (only needed when generating)
    import grpc_tools  # noqa: PLC0415

    site = Path(annotations.__file__).resolve().parent.parent.parent
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    return [str(PROTO_ROOT), str(site), str(well_known)]


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """Every proto under protos/, with imports and comments (for docstrings)."""
    files = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        cmd = [sys.executable, "-m", "grpc_tools.protoc", *(f"-I{d}" for d in _include_dirs())]
        cmd += ["--include_imports", "--include_source_info", f"--descriptor_set_out={out}", *files]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"protoc failed:\n{result.stderr}")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def generate(root: Path) -> Path:
    path = root / OUT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(descriptor_set()))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO)
    args = parser.parse_args()
    print(f"generated {generate(args.root)}")


if __name__ == "__main__":
    main()
