"""The model catalog as operators change it, against `relay serve --workers 2`
with Redis: a change made through one worker is served by the other on its very
next request (no restart), every change is audited, and providers are listed
with their circuit state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import psycopg
import pytest
from google.protobuf import field_mask_pb2

from relay_proto.relay.admin.v1 import catalog_pb2, catalog_pb2_grpc
from relay_server.stack.redis import RedisHandle
from tests.e2e.admin_helpers import channels_on_every_worker, chat_request, chat_stub, error_of, rest
from tests.support.pg import PgCluster
from tests.support.stack import RelayStack, start_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(pg_cluster: PgCluster, redis_server: RedisHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayStack]:
    db = pg_cluster.create_database()
    relay = start_stack(db, Path(tmp_path_factory.mktemp("relay-catalog")), redis_url=redis_server.url, workers=2)
    yield relay
    relay.stop()
    pg_cluster.drop_database(db)


@pytest.fixture(scope="module")
def admin(stack: RelayStack) -> Iterator[httpx.Client]:
    with rest(stack, stack.admin_token) as client:
        yield client


@pytest.fixture(scope="module")
def workers(stack: RelayStack) -> Iterator[list[grpc.Channel]]:
    channels = channels_on_every_worker(stack)
    yield channels
    for channel in channels:
        channel.close()


def _catalog(channel: grpc.Channel) -> catalog_pb2_grpc.ModelCatalogServiceStub:
    return catalog_pb2_grpc.ModelCatalogServiceStub(channel)


def _op(stack: RelayStack) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {stack.admin_token}"),)


def _chat(channel: grpc.Channel, stack: RelayStack, model: str):
    request = chat_request()
    request.model = model
    return chat_stub(channel).CreateChatCompletion(request, metadata=(("authorization", f"Bearer {stack.test_key}"),))


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def _audit(stack: RelayStack, model_id: str) -> list[tuple[str, dict]]:
    with psycopg.connect(stack.db.owner_dsn) as conn:
        rows = conn.execute(
            "SELECT action, metadata FROM audit_log WHERE resource_type = 'model' AND resource_id = %s ORDER BY created_at",
            (model_id,),
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


def test_add_price_alias_disable_and_delete_reach_every_worker_at_once(stack: RelayStack, workers: list[grpc.Channel]) -> None:
    a, b = workers[0], workers[-1]
    model = catalog_pb2.CatalogModel(
        relay_name="acme-chat", provider_id="openai", provider_name="gpt-4o-mini", kind="chat",
        input_cost_per_1m="1.5", output_cost_per_1m="3", context_window=8192, supports_streaming=True,
    )  # fmt: skip
    for channel in workers:  # unknown everywhere before
        assert _code(lambda ch=channel: _chat(ch, stack, "acme-chat")) is grpc.StatusCode.NOT_FOUND
    created = _catalog(a).UpsertCatalogModel(catalog_pb2.UpsertCatalogModelRequest(model=model), metadata=_op(stack)).model
    assert (created.id, created.status, created.input_cost_per_1m) == ("acme-chat", "active", "1.5")
    for channel in workers:  # the very next request on each worker
        assert _chat(channel, stack, "acme-chat").model == "acme-chat"

    # A price change through worker B, with an update mask: nothing else changes.
    update = catalog_pb2.UpsertCatalogModelRequest(
        model=catalog_pb2.CatalogModel(relay_name="acme-chat", input_cost_per_1m="2.25", aliases=["acme-latest"]),
        update_mask=field_mask_pb2.FieldMask(paths=["input_cost_per_1m", "aliases"]),
    )
    updated = _catalog(b).UpsertCatalogModel(update, metadata=_op(stack)).model
    assert (updated.input_cost_per_1m, updated.output_cost_per_1m, updated.context_window) == ("2.25", "3", 8192)
    assert list(updated.aliases) == ["acme-latest"]
    for channel in workers:  # the alias resolves to the model everywhere
        assert _chat(channel, stack, "acme-latest").choices

    disable = catalog_pb2.UpsertCatalogModelRequest(
        model=catalog_pb2.CatalogModel(relay_name="acme-chat", status="disabled"),
        update_mask=field_mask_pb2.FieldMask(paths=["status"]),
    )
    assert _catalog(a).UpsertCatalogModel(disable, metadata=_op(stack)).model.status == "disabled"
    for channel in workers:
        for name in ("acme-chat", "acme-latest"):
            assert _code(lambda ch=channel, n=name: _chat(ch, stack, n)) is grpc.StatusCode.NOT_FOUND
    listed = _catalog(b).ListCatalogModels(catalog_pb2.ListCatalogModelsRequest(page_size=1000), metadata=_op(stack))
    assert [m.status for m in listed.models if m.relay_name == "acme-chat"] == ["disabled"]  # operators still see it

    # It served requests (the request log references it): it can be disabled, not deleted.
    assert _code(
        lambda: _catalog(b).DeleteCatalogModel(catalog_pb2.DeleteCatalogModelRequest(relay_name="acme-chat"), metadata=_op(stack))
    ) is grpc.StatusCode.FAILED_PRECONDITION
    unused = catalog_pb2.CatalogModel(relay_name="acme-unused", provider_id="mistral", input_cost_per_1m="1",
                                      output_cost_per_1m="1", context_window=1000)  # fmt: skip
    _catalog(a).UpsertCatalogModel(catalog_pb2.UpsertCatalogModelRequest(model=unused), metadata=_op(stack))
    _catalog(b).DeleteCatalogModel(catalog_pb2.DeleteCatalogModelRequest(relay_name="acme-unused"), metadata=_op(stack))
    listed = _catalog(a).ListCatalogModels(catalog_pb2.ListCatalogModelsRequest(page_size=1000), metadata=_op(stack))
    assert "acme-unused" not in {m.relay_name for m in listed.models}
    assert _code(
        lambda: _catalog(a).DeleteCatalogModel(catalog_pb2.DeleteCatalogModelRequest(relay_name="acme-unused"), metadata=_op(stack))
    ) is grpc.StatusCode.NOT_FOUND
    assert [a for a, _ in _audit(stack, "acme-unused")] == ["catalog.model_created", "catalog.model_deleted"]
    actions = _audit(stack, "acme-chat")
    assert [a for a, _ in actions] == [
        "catalog.model_created", "catalog.model_updated", "catalog.model_updated",
    ]  # fmt: skip
    assert actions[1][1]["changes"]["input_cost_per_1m"] == ["1.5", "2.25"]
    assert actions[2][1]["changes"] == {"status": ["active", "disabled"]}


def test_bad_catalog_input_is_refused_and_changes_nothing(stack: RelayStack, workers: list[grpc.Channel]) -> None:
    stub = _catalog(workers[0])
    bad = [
        catalog_pb2.CatalogModel(relay_name="x1", provider_id="nope", input_cost_per_1m="1", output_cost_per_1m="1", context_window=1),
        catalog_pb2.CatalogModel(relay_name="x2", provider_id="openai", input_cost_per_1m="-1", output_cost_per_1m="1", context_window=1),
        catalog_pb2.CatalogModel(relay_name="x3", provider_id="openai", input_cost_per_1m="1", output_cost_per_1m="1"),
        catalog_pb2.CatalogModel(relay_name="x4", provider_id="openai", input_cost_per_1m="1", output_cost_per_1m="1",
                                 context_window=1, kind="embedding"),
        catalog_pb2.CatalogModel(relay_name="bad name!", provider_id="openai", input_cost_per_1m="1", output_cost_per_1m="1",
                                 context_window=1),
    ]  # fmt: skip
    for model in bad:
        req = catalog_pb2.UpsertCatalogModelRequest(model=model)
        assert _code(lambda r=req: stub.UpsertCatalogModel(r, metadata=_op(stack))) is grpc.StatusCode.INVALID_ARGUMENT
    clash = catalog_pb2.CatalogModel(relay_name="x5", provider_id="openai", input_cost_per_1m="1", output_cost_per_1m="1",
                                     context_window=1, aliases=["gpt-4o"])  # fmt: skip
    req = catalog_pb2.UpsertCatalogModelRequest(model=clash)
    assert _code(lambda: stub.UpsertCatalogModel(req, metadata=_op(stack))) is grpc.StatusCode.ALREADY_EXISTS
    listed = stub.ListCatalogModels(catalog_pb2.ListCatalogModelsRequest(page_size=1000), metadata=_op(stack))
    assert not {m.relay_name for m in listed.models} & {"x1", "x2", "x3", "x4", "x5", "bad name!"}


def test_only_operators_change_the_catalog_and_rest_works(stack: RelayStack, admin: httpx.Client) -> None:
    body = {"provider_id": "anthropic", "provider_name": "claude-x", "input_cost_per_1m": "3", "output_cost_per_1m": "15",
            "context_window": 200000, "supports_streaming": True}  # fmt: skip
    with rest(stack, stack.test_key) as tenant_key:  # the demo tenant's management key: not an operator
        r = tenant_key.put("/v1/catalog/models/rest-model", json=body)
        assert r.status_code == 403, r.text
        assert error_of(r)["code"] == "permission_denied"
    with rest(stack, "not-a-credential") as nobody:
        assert nobody.get("/v1/catalog/providers").status_code == 401
    r = admin.put("/v1/catalog/models/rest-model", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["model"]["relay_name"] == "rest-model" and r.json()["model"]["provider_id"] == "anthropic"
    r = admin.put("/v1/catalog/models/rest-model", params={"update_mask": "output_cost_per_1m,status"},
                  json={"output_cost_per_1m": "12.5", "status": "deprecated"})  # fmt: skip
    assert r.status_code == 200, r.text
    model = r.json()["model"]
    assert (model["output_cost_per_1m"], model["status"], model["input_cost_per_1m"], model["provider_name"]) == (
        "12.5", "deprecated", "3", "claude-x"
    )
    r = admin.get("/v1/catalog/providers")
    assert r.status_code == 200, r.text
    providers = {p["id"]: p for p in r.json()["providers"]}
    assert {"openai", "anthropic", "test"} <= set(providers)
    assert providers["openai"]["circuit_state"] == "closed" and providers["openai"]["status"] == "active"
    r = admin.delete("/v1/catalog/models/rest-model")
    assert r.status_code == 200, r.text
    assert admin.delete("/v1/catalog/models/rest-model").status_code == 404


def _set_tenant_models(admin: httpx.Client, models: str) -> None:
    r = admin.patch("/v1/tenants/ten_demo/config", json={"config": {"allowed_models": models}})
    assert r.status_code == 200, r.text


def test_tenant_allowed_models_apply_to_every_door_and_intersect_with_the_key_and_plan(
    stack: RelayStack, admin: httpx.Client, workers: list[grpc.Channel]
) -> None:
    import openai

    sdk = openai.OpenAI(base_url=stack.base_url, api_key=stack.test_key, max_retries=0, timeout=30)
    hi = [{"role": "user", "content": "hi"}]
    assert sdk.chat.completions.create(model="gpt-4o", messages=hi).choices  # no restriction yet
    _set_tenant_models(admin, '["gpt-4o-mini", "gpt-4.1"]')
    try:
        with pytest.raises(openai.NotFoundError) as err:  # REST door: the OpenAI 404
            sdk.chat.completions.create(model="gpt-4o", messages=hi)
        assert err.value.body["code"] == "model_not_found"
        for channel in workers:  # gRPC door, on every worker at once
            assert _code(lambda ch=channel: _chat(ch, stack, "gpt-4o")) is grpc.StatusCode.NOT_FOUND
            assert _chat(channel, stack, "gpt-4o-mini").choices
        assert {m.id for m in sdk.models.list()} == {"gpt-4o-mini", "gpt-4.1"}
        with pytest.raises(openai.NotFoundError):
            sdk.models.retrieve("gpt-4o")

        # A key's own list narrows the tenant's: only the intersection is callable.
        r = admin.post("/v1/keys", json={"tenant_id": "ten_demo", "api_key": {
            "name": "narrow", "environment": "KEY_ENVIRONMENT_TEST", "allowed_models": ["gpt-4o-mini", "gpt-4o"]}})  # fmt: skip
        assert r.status_code == 200, r.text
        narrow = openai.OpenAI(base_url=stack.base_url, api_key=r.json()["secret"], max_retries=0, timeout=30)
        assert narrow.chat.completions.create(model="gpt-4o-mini", messages=hi).choices
        for model in ("gpt-4o", "gpt-4.1"):
            with pytest.raises(openai.NotFoundError):
                narrow.chat.completions.create(model=model, messages=hi)

        # The plan's list narrows further (plan_models; the demo tenant is on `pro`).
        with psycopg.connect(stack.db.owner_dsn) as conn:
            conn.execute("INSERT INTO plan_models (plan, model_id) VALUES ('pro', 'gpt-4.1')")
        r = admin.post("/v1/keys", json={"tenant_id": "ten_demo", "api_key": {"name": "plan", "environment": "KEY_ENVIRONMENT_TEST"}})
        assert r.status_code == 200, r.text
        planned = openai.OpenAI(base_url=stack.base_url, api_key=r.json()["secret"], max_retries=0, timeout=30)
        assert planned.chat.completions.create(model="gpt-4.1", messages=hi).choices
        with pytest.raises(openai.NotFoundError):
            planned.chat.completions.create(model="gpt-4o-mini", messages=hi)
    finally:
        with psycopg.connect(stack.db.owner_dsn) as conn:
            conn.execute("DELETE FROM plan_models")
        _set_tenant_models(admin, "")
    for channel in workers:  # lifting the restriction also reaches every worker at once
        assert _chat(channel, stack, "gpt-4o").choices


def test_a_retried_delete_with_its_request_id_succeeds_again(stack: RelayStack, workers: list[grpc.Channel]) -> None:
    stub = _catalog(workers[0])
    model = catalog_pb2.CatalogModel(relay_name="retry-me", provider_id="groq", input_cost_per_1m="0.1",
                                     output_cost_per_1m="0.1", context_window=1000)  # fmt: skip
    stub.UpsertCatalogModel(catalog_pb2.UpsertCatalogModelRequest(model=model), metadata=_op(stack))
    delete = catalog_pb2.DeleteCatalogModelRequest(relay_name="retry-me", request_id="del-retry-me-1")
    stub.DeleteCatalogModel(delete, metadata=_op(stack))
    stub.DeleteCatalogModel(delete, metadata=_op(stack))  # the SDK retrying after a lost answer
    assert [a for a, _ in _audit(stack, "retry-me")] == ["catalog.model_created", "catalog.model_deleted"]
    other = catalog_pb2.DeleteCatalogModelRequest(relay_name="retry-me", request_id="del-retry-me-2")
    assert _code(lambda: stub.DeleteCatalogModel(other, metadata=_op(stack))) is grpc.StatusCode.NOT_FOUND
