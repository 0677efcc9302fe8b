import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CatalogModel(_message.Message):
    __slots__ = ("id", "provider_id", "relay_name", "provider_name", "display_name", "kind", "input_cost_per_1m", "output_cost_per_1m", "context_window", "max_output_tokens", "supports_streaming", "supports_functions", "supports_vision", "status", "aliases", "routes", "cache_read_cost_per_1m", "cache_write_cost_per_1m", "embedding_dimensions", "supports_json_schema")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    RELAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    INPUT_COST_PER_1M_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_COST_PER_1M_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_STREAMING_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_VISION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    CACHE_READ_COST_PER_1M_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_COST_PER_1M_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_JSON_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    id: str
    provider_id: str
    relay_name: str
    provider_name: str
    display_name: str
    kind: str
    input_cost_per_1m: str
    output_cost_per_1m: str
    context_window: int
    max_output_tokens: int
    supports_streaming: bool
    supports_functions: bool
    supports_vision: bool
    status: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    routes: _containers.RepeatedCompositeFieldContainer[ModelRoute]
    cache_read_cost_per_1m: str
    cache_write_cost_per_1m: str
    embedding_dimensions: int
    supports_json_schema: bool
    def __init__(self, id: _Optional[str] = ..., provider_id: _Optional[str] = ..., relay_name: _Optional[str] = ..., provider_name: _Optional[str] = ..., display_name: _Optional[str] = ..., kind: _Optional[str] = ..., input_cost_per_1m: _Optional[str] = ..., output_cost_per_1m: _Optional[str] = ..., context_window: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., supports_streaming: _Optional[bool] = ..., supports_functions: _Optional[bool] = ..., supports_vision: _Optional[bool] = ..., status: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., routes: _Optional[_Iterable[_Union[ModelRoute, _Mapping]]] = ..., cache_read_cost_per_1m: _Optional[str] = ..., cache_write_cost_per_1m: _Optional[str] = ..., embedding_dimensions: _Optional[int] = ..., supports_json_schema: _Optional[bool] = ...) -> None: ...

class ModelRoute(_message.Message):
    __slots__ = ("provider_id", "provider_name", "priority", "status", "region")
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_NAME_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    provider_name: str
    priority: int
    status: str
    region: str
    def __init__(self, provider_id: _Optional[str] = ..., provider_name: _Optional[str] = ..., priority: _Optional[int] = ..., status: _Optional[str] = ..., region: _Optional[str] = ...) -> None: ...

class Provider(_message.Message):
    __slots__ = ("id", "name", "api", "base_url", "status", "priority", "circuit_state", "consecutive_failures", "recent_requests", "recent_failures", "recent_p95_ms", "region")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    API_FIELD_NUMBER: _ClassVar[int]
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_STATE_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    RECENT_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    RECENT_FAILURES_FIELD_NUMBER: _ClassVar[int]
    RECENT_P95_MS_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    api: str
    base_url: str
    status: str
    priority: int
    circuit_state: str
    consecutive_failures: int
    recent_requests: int
    recent_failures: int
    recent_p95_ms: int
    region: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., api: _Optional[str] = ..., base_url: _Optional[str] = ..., status: _Optional[str] = ..., priority: _Optional[int] = ..., circuit_state: _Optional[str] = ..., consecutive_failures: _Optional[int] = ..., recent_requests: _Optional[int] = ..., recent_failures: _Optional[int] = ..., recent_p95_ms: _Optional[int] = ..., region: _Optional[str] = ...) -> None: ...

class ProviderEvent(_message.Message):
    __slots__ = ("id", "provider_id", "kind", "status", "message", "error_rate", "p95_ms", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    provider_id: str
    kind: str
    status: str
    message: str
    error_rate: str
    p95_ms: int
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., provider_id: _Optional[str] = ..., kind: _Optional[str] = ..., status: _Optional[str] = ..., message: _Optional[str] = ..., error_rate: _Optional[str] = ..., p95_ms: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListProviderEventsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "provider_id", "kind", "start_time", "end_time")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    provider_id: str
    kind: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., provider_id: _Optional[str] = ..., kind: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListProviderEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[ProviderEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[ProviderEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListCatalogModelsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "provider_id")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    provider_id: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., provider_id: _Optional[str] = ...) -> None: ...

class ListCatalogModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[CatalogModel]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[CatalogModel, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListProvidersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListProvidersResponse(_message.Message):
    __slots__ = ("providers",)
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    providers: _containers.RepeatedCompositeFieldContainer[Provider]
    def __init__(self, providers: _Optional[_Iterable[_Union[Provider, _Mapping]]] = ...) -> None: ...

class UpdateProviderRequest(_message.Message):
    __slots__ = ("provider", "update_mask", "request_id")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    provider: Provider
    update_mask: _field_mask_pb2.FieldMask
    request_id: str
    def __init__(self, provider: _Optional[_Union[Provider, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateProviderResponse(_message.Message):
    __slots__ = ("provider",)
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    provider: Provider
    def __init__(self, provider: _Optional[_Union[Provider, _Mapping]] = ...) -> None: ...

class UpsertCatalogModelRequest(_message.Message):
    __slots__ = ("model", "request_id", "update_mask")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    model: CatalogModel
    request_id: str
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, model: _Optional[_Union[CatalogModel, _Mapping]] = ..., request_id: _Optional[str] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpsertCatalogModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: CatalogModel
    def __init__(self, model: _Optional[_Union[CatalogModel, _Mapping]] = ...) -> None: ...

class DeleteCatalogModelRequest(_message.Message):
    __slots__ = ("relay_name", "request_id")
    RELAY_NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    relay_name: str
    request_id: str
    def __init__(self, relay_name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteCatalogModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
