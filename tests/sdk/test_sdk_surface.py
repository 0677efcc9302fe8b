"""Every RPC of the protos has a typed method on both clients, and the generated layer is fresh."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import ServiceDescriptor

import relay_sdk
from relay_sdk import AsyncRelay, Relay
from relay_sdk._gen.methods import SERVICE_ATTRIBUTES

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import gen_sdk  # noqa: E402

HTTP_BODY = "google.api.HttpBody"


def _services() -> list[ServiceDescriptor]:
    """Read from the generated pb2 modules, independently of the generator."""
    found: list[ServiceDescriptor] = []
    for package in ("relay_proto.relay.v1", "relay_proto.relay.admin.v1"):
        module = importlib.import_module(package)
        for info in pkgutil.iter_modules(module.__path__):
            if info.name.endswith("_pb2"):
                pb2 = importlib.import_module(f"{package}.{info.name}")
                found.extend(pb2.DESCRIPTOR.services_by_name.values())
    return found


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _typed_methods(service: ServiceDescriptor) -> list[str]:
    return [m.name for m in service.methods if HTTP_BODY not in (m.input_type.full_name, m.output_type.full_name)]


def test_every_service_has_an_attribute() -> None:
    names = {s.full_name for s in _services() if _typed_methods(s)}
    assert "relay.v1.InferenceService" in names and "relay.admin.v1.ApiKeyService" in names
    assert set(SERVICE_ATTRIBUTES) == names


@pytest.mark.parametrize("client_type", [Relay, AsyncRelay])
def test_every_rpc_has_a_snake_case_method(client_type: type) -> None:
    mixin = client_type.__mro__[1]  # SyncServices / AsyncServices: the annotated service attributes
    hints = inspect.get_annotations(mixin)
    for service in _services():
        if not _typed_methods(service):
            continue
        service_client = hints[SERVICE_ATTRIBUTES[service.full_name]]
        cls = getattr(importlib.import_module("relay_sdk._gen.methods"), service_client)
        for method in service.methods:
            name = _snake(method.name)
            if method.name not in _typed_methods(service):
                assert not hasattr(cls, name), f"{service.name}.{method.name} is REST-only"
                continue
            assert callable(getattr(cls, name)), f"{cls.__name__} lacks {name}"
            is_coroutine = inspect.iscoroutinefunction(getattr(cls, name))
            assert is_coroutine is (client_type is AsyncRelay and not method.server_streaming)
            request_fields = {f.name for f in method.input_type.fields}
            response_fields = {f.name for f in method.output_type.fields}
            if {"page_token"} <= request_fields and "next_page_token" in response_fields:
                assert hasattr(cls, "iter_" + name.removeprefix("list_")), f"{cls.__name__} lacks a pager for {name}"


def test_openai_rest_rpcs_are_skipped_but_its_model_reads_are_there() -> None:
    assert {"list_models", "get_model"} <= set(dir(relay_sdk._gen.methods.OpenAIServiceClient))
    assert not hasattr(relay_sdk._gen.methods.OpenAIServiceClient, "create_chat_completion")


def test_the_generated_layer_matches_the_protos() -> None:
    fresh = gen_sdk.render(gen_sdk.descriptor_set())
    checked_in = (REPO / gen_sdk.OUT).read_text()
    assert fresh == checked_in, "sdk_python/relay_sdk/_gen/methods.py drifted: run `make gen`"


def test_the_package_exports_its_public_names() -> None:
    for name in relay_sdk.__all__:
        assert getattr(relay_sdk, name) is not None
    with pytest.raises(AttributeError):
        relay_sdk.NoSuchThing  # noqa: B018
