import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.type import date_pb2 as _date_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UsageGroupBy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USAGE_GROUP_BY_UNSPECIFIED: _ClassVar[UsageGroupBy]
    USAGE_GROUP_BY_DAY: _ClassVar[UsageGroupBy]
    USAGE_GROUP_BY_MODEL: _ClassVar[UsageGroupBy]
    USAGE_GROUP_BY_API_KEY: _ClassVar[UsageGroupBy]
    USAGE_GROUP_BY_END_USER: _ClassVar[UsageGroupBy]
USAGE_GROUP_BY_UNSPECIFIED: UsageGroupBy
USAGE_GROUP_BY_DAY: UsageGroupBy
USAGE_GROUP_BY_MODEL: UsageGroupBy
USAGE_GROUP_BY_API_KEY: UsageGroupBy
USAGE_GROUP_BY_END_USER: UsageGroupBy

class Money(_message.Message):
    __slots__ = ("micros", "usd")
    MICROS_FIELD_NUMBER: _ClassVar[int]
    USD_FIELD_NUMBER: _ClassVar[int]
    micros: int
    usd: str
    def __init__(self, micros: _Optional[int] = ..., usd: _Optional[str] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("group", "request_count", "input_tokens", "output_tokens", "cache_hits", "error_count", "cost", "relay_revenue", "total_tokens", "cache_read_tokens", "cache_write_tokens", "provider_cost")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    REQUEST_COUNT_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    ERROR_COUNT_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    RELAY_REVENUE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_READ_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_COST_FIELD_NUMBER: _ClassVar[int]
    group: str
    request_count: int
    input_tokens: int
    output_tokens: int
    cache_hits: int
    error_count: int
    cost: Money
    relay_revenue: Money
    total_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    provider_cost: Money
    def __init__(self, group: _Optional[str] = ..., request_count: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cache_hits: _Optional[int] = ..., error_count: _Optional[int] = ..., cost: _Optional[_Union[Money, _Mapping]] = ..., relay_revenue: _Optional[_Union[Money, _Mapping]] = ..., total_tokens: _Optional[int] = ..., cache_read_tokens: _Optional[int] = ..., cache_write_tokens: _Optional[int] = ..., provider_cost: _Optional[_Union[Money, _Mapping]] = ...) -> None: ...

class QueryUsageRequest(_message.Message):
    __slots__ = ("tenant_id", "start_date", "end_date", "group_by", "environment", "api_key_id", "model_id", "end_user_id", "max_groups")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    END_USER_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_GROUPS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    start_date: _date_pb2.Date
    end_date: _date_pb2.Date
    group_by: UsageGroupBy
    environment: str
    api_key_id: str
    model_id: str
    end_user_id: str
    max_groups: int
    def __init__(self, tenant_id: _Optional[str] = ..., start_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., end_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., group_by: _Optional[_Union[UsageGroupBy, str]] = ..., environment: _Optional[str] = ..., api_key_id: _Optional[str] = ..., model_id: _Optional[str] = ..., end_user_id: _Optional[str] = ..., max_groups: _Optional[int] = ...) -> None: ...

class QueryUsageResponse(_message.Message):
    __slots__ = ("rows", "total", "group_count")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    GROUP_COUNT_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[UsageRow]
    total: UsageRow
    group_count: int
    def __init__(self, rows: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ..., total: _Optional[_Union[UsageRow, _Mapping]] = ..., group_count: _Optional[int] = ...) -> None: ...

class GetApiKeyUsageRequest(_message.Message):
    __slots__ = ("tenant_id", "key_id", "start_date", "end_date")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    key_id: str
    start_date: _date_pb2.Date
    end_date: _date_pb2.Date
    def __init__(self, tenant_id: _Optional[str] = ..., key_id: _Optional[str] = ..., start_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., end_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ...) -> None: ...

class GetApiKeyUsageResponse(_message.Message):
    __slots__ = ("days", "total", "cap_spent", "cap_remaining", "cap_window", "cap")
    DAYS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    CAP_SPENT_FIELD_NUMBER: _ClassVar[int]
    CAP_REMAINING_FIELD_NUMBER: _ClassVar[int]
    CAP_WINDOW_FIELD_NUMBER: _ClassVar[int]
    CAP_FIELD_NUMBER: _ClassVar[int]
    days: _containers.RepeatedCompositeFieldContainer[UsageRow]
    total: UsageRow
    cap_spent: Money
    cap_remaining: Money
    cap_window: str
    cap: Money
    def __init__(self, days: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ..., total: _Optional[_Union[UsageRow, _Mapping]] = ..., cap_spent: _Optional[_Union[Money, _Mapping]] = ..., cap_remaining: _Optional[_Union[Money, _Mapping]] = ..., cap_window: _Optional[str] = ..., cap: _Optional[_Union[Money, _Mapping]] = ...) -> None: ...

class RequestRecord(_message.Message):
    __slots__ = ("id", "api_key_id", "model_id", "provider_id", "request_type", "stream", "input_tokens", "output_tokens", "total_cost", "status", "error_code", "http_status", "latency_ms", "ttft_ms", "cache_hit", "end_user_id", "create_time", "environment", "requested_model", "cache_read_tokens", "cache_write_tokens", "input_cost", "output_cost", "relay_revenue", "markup_rate", "error_message", "attempts", "usage_source", "door", "cache_kind", "guardrails")
    ID_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_TYPE_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    END_USER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_MODEL_FIELD_NUMBER: _ClassVar[int]
    CACHE_READ_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    INPUT_COST_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_COST_FIELD_NUMBER: _ClassVar[int]
    RELAY_REVENUE_FIELD_NUMBER: _ClassVar[int]
    MARKUP_RATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    USAGE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    DOOR_FIELD_NUMBER: _ClassVar[int]
    CACHE_KIND_FIELD_NUMBER: _ClassVar[int]
    GUARDRAILS_FIELD_NUMBER: _ClassVar[int]
    id: str
    api_key_id: str
    model_id: str
    provider_id: str
    request_type: str
    stream: bool
    input_tokens: int
    output_tokens: int
    total_cost: Money
    status: str
    error_code: str
    http_status: int
    latency_ms: int
    ttft_ms: int
    cache_hit: bool
    end_user_id: str
    create_time: _timestamp_pb2.Timestamp
    environment: str
    requested_model: str
    cache_read_tokens: int
    cache_write_tokens: int
    input_cost: Money
    output_cost: Money
    relay_revenue: Money
    markup_rate: str
    error_message: str
    attempts: int
    usage_source: str
    door: str
    cache_kind: str
    guardrails: _containers.RepeatedCompositeFieldContainer[GuardrailDecision]
    def __init__(self, id: _Optional[str] = ..., api_key_id: _Optional[str] = ..., model_id: _Optional[str] = ..., provider_id: _Optional[str] = ..., request_type: _Optional[str] = ..., stream: _Optional[bool] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., total_cost: _Optional[_Union[Money, _Mapping]] = ..., status: _Optional[str] = ..., error_code: _Optional[str] = ..., http_status: _Optional[int] = ..., latency_ms: _Optional[int] = ..., ttft_ms: _Optional[int] = ..., cache_hit: _Optional[bool] = ..., end_user_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., environment: _Optional[str] = ..., requested_model: _Optional[str] = ..., cache_read_tokens: _Optional[int] = ..., cache_write_tokens: _Optional[int] = ..., input_cost: _Optional[_Union[Money, _Mapping]] = ..., output_cost: _Optional[_Union[Money, _Mapping]] = ..., relay_revenue: _Optional[_Union[Money, _Mapping]] = ..., markup_rate: _Optional[str] = ..., error_message: _Optional[str] = ..., attempts: _Optional[int] = ..., usage_source: _Optional[str] = ..., door: _Optional[str] = ..., cache_kind: _Optional[str] = ..., guardrails: _Optional[_Iterable[_Union[GuardrailDecision, _Mapping]]] = ...) -> None: ...

class GuardrailDecision(_message.Message):
    __slots__ = ("guardrail", "stage", "action", "count")
    GUARDRAIL_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    guardrail: str
    stage: str
    action: str
    count: int
    def __init__(self, guardrail: _Optional[str] = ..., stage: _Optional[str] = ..., action: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class ListRequestsRequest(_message.Message):
    __slots__ = ("tenant_id", "page_size", "page_token", "api_key_id", "model_id", "status", "start_time", "end_time", "end_user_id", "environment", "request_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    END_USER_ID_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    page_size: int
    page_token: str
    api_key_id: str
    model_id: str
    status: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    end_user_id: str
    environment: str
    request_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., api_key_id: _Optional[str] = ..., model_id: _Optional[str] = ..., status: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_user_id: _Optional[str] = ..., environment: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListRequestsResponse(_message.Message):
    __slots__ = ("requests", "next_page_token")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RequestRecord]
    next_page_token: str
    def __init__(self, requests: _Optional[_Iterable[_Union[RequestRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class BillingLineItem(_message.Message):
    __slots__ = ("model_id", "request_count", "input_tokens", "output_tokens", "total_cost", "provider_cost")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_COUNT_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_COST_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    request_count: int
    input_tokens: int
    output_tokens: int
    total_cost: Money
    provider_cost: Money
    def __init__(self, model_id: _Optional[str] = ..., request_count: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., total_cost: _Optional[_Union[Money, _Mapping]] = ..., provider_cost: _Optional[_Union[Money, _Mapping]] = ...) -> None: ...

class BillingPeriod(_message.Message):
    __slots__ = ("id", "period_start", "period_end", "status", "total_cost", "line_items", "finalize_time", "environment", "provider_cost")
    ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_FIELD_NUMBER: _ClassVar[int]
    LINE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    FINALIZE_TIME_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_COST_FIELD_NUMBER: _ClassVar[int]
    id: str
    period_start: _date_pb2.Date
    period_end: _date_pb2.Date
    status: str
    total_cost: Money
    line_items: _containers.RepeatedCompositeFieldContainer[BillingLineItem]
    finalize_time: _timestamp_pb2.Timestamp
    environment: str
    provider_cost: Money
    def __init__(self, id: _Optional[str] = ..., period_start: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., period_end: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., status: _Optional[str] = ..., total_cost: _Optional[_Union[Money, _Mapping]] = ..., line_items: _Optional[_Iterable[_Union[BillingLineItem, _Mapping]]] = ..., finalize_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., environment: _Optional[str] = ..., provider_cost: _Optional[_Union[Money, _Mapping]] = ...) -> None: ...

class ListBillingPeriodsRequest(_message.Message):
    __slots__ = ("tenant_id", "page_size", "page_token", "environment")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    page_size: int
    page_token: str
    environment: str
    def __init__(self, tenant_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., environment: _Optional[str] = ...) -> None: ...

class ListBillingPeriodsResponse(_message.Message):
    __slots__ = ("billing_periods", "next_page_token")
    BILLING_PERIODS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    billing_periods: _containers.RepeatedCompositeFieldContainer[BillingPeriod]
    next_page_token: str
    def __init__(self, billing_periods: _Optional[_Iterable[_Union[BillingPeriod, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
