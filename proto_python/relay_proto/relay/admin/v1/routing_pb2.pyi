from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RouteTarget(_message.Message):
    __slots__ = ("model", "provider_id", "weight")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    model: str
    provider_id: str
    weight: int
    def __init__(self, model: _Optional[str] = ..., provider_id: _Optional[str] = ..., weight: _Optional[int] = ...) -> None: ...

class VirtualModel(_message.Message):
    __slots__ = ("name", "tenant_id", "strategy", "targets", "fallbacks", "id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant_id: str
    strategy: str
    targets: _containers.RepeatedCompositeFieldContainer[RouteTarget]
    fallbacks: _containers.RepeatedScalarFieldContainer[str]
    id: str
    def __init__(self, name: _Optional[str] = ..., tenant_id: _Optional[str] = ..., strategy: _Optional[str] = ..., targets: _Optional[_Iterable[_Union[RouteTarget, _Mapping]]] = ..., fallbacks: _Optional[_Iterable[str]] = ..., id: _Optional[str] = ...) -> None: ...

class ListVirtualModelsRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class ListVirtualModelsResponse(_message.Message):
    __slots__ = ("virtual_models",)
    VIRTUAL_MODELS_FIELD_NUMBER: _ClassVar[int]
    virtual_models: _containers.RepeatedCompositeFieldContainer[VirtualModel]
    def __init__(self, virtual_models: _Optional[_Iterable[_Union[VirtualModel, _Mapping]]] = ...) -> None: ...

class UpsertVirtualModelRequest(_message.Message):
    __slots__ = ("virtual_model", "request_id")
    VIRTUAL_MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    virtual_model: VirtualModel
    request_id: str
    def __init__(self, virtual_model: _Optional[_Union[VirtualModel, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpsertVirtualModelResponse(_message.Message):
    __slots__ = ("virtual_model",)
    VIRTUAL_MODEL_FIELD_NUMBER: _ClassVar[int]
    virtual_model: VirtualModel
    def __init__(self, virtual_model: _Optional[_Union[VirtualModel, _Mapping]] = ...) -> None: ...

class DeleteVirtualModelRequest(_message.Message):
    __slots__ = ("name", "tenant_id", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant_id: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., tenant_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteVirtualModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BudgetRoute(_message.Message):
    __slots__ = ("alias", "route_to", "threshold_percent", "tenant_id", "key_id", "id")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    ROUTE_TO_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_PERCENT_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    alias: str
    route_to: str
    threshold_percent: str
    tenant_id: str
    key_id: str
    id: str
    def __init__(self, alias: _Optional[str] = ..., route_to: _Optional[str] = ..., threshold_percent: _Optional[str] = ..., tenant_id: _Optional[str] = ..., key_id: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class ListBudgetRoutesRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class ListBudgetRoutesResponse(_message.Message):
    __slots__ = ("budget_routes",)
    BUDGET_ROUTES_FIELD_NUMBER: _ClassVar[int]
    budget_routes: _containers.RepeatedCompositeFieldContainer[BudgetRoute]
    def __init__(self, budget_routes: _Optional[_Iterable[_Union[BudgetRoute, _Mapping]]] = ...) -> None: ...

class UpsertBudgetRouteRequest(_message.Message):
    __slots__ = ("budget_route", "request_id")
    BUDGET_ROUTE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    budget_route: BudgetRoute
    request_id: str
    def __init__(self, budget_route: _Optional[_Union[BudgetRoute, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpsertBudgetRouteResponse(_message.Message):
    __slots__ = ("budget_route",)
    BUDGET_ROUTE_FIELD_NUMBER: _ClassVar[int]
    budget_route: BudgetRoute
    def __init__(self, budget_route: _Optional[_Union[BudgetRoute, _Mapping]] = ...) -> None: ...

class DeleteBudgetRouteRequest(_message.Message):
    __slots__ = ("alias", "tenant_id", "key_id", "request_id")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    alias: str
    tenant_id: str
    key_id: str
    request_id: str
    def __init__(self, alias: _Optional[str] = ..., tenant_id: _Optional[str] = ..., key_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteBudgetRouteResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetProviderRegionRequest(_message.Message):
    __slots__ = ("provider_id", "region", "request_id")
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    region: str
    request_id: str
    def __init__(self, provider_id: _Optional[str] = ..., region: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class SetProviderRegionResponse(_message.Message):
    __slots__ = ("provider_id", "region")
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    region: str
    def __init__(self, provider_id: _Optional[str] = ..., region: _Optional[str] = ...) -> None: ...
