from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PlanQuota(_message.Message):
    __slots__ = ("resource", "limit", "time_window")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    TIME_WINDOW_FIELD_NUMBER: _ClassVar[int]
    resource: str
    limit: int
    time_window: str
    def __init__(self, resource: _Optional[str] = ..., limit: _Optional[int] = ..., time_window: _Optional[str] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("name", "quotas", "features", "allowed_models")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    quotas: _containers.RepeatedCompositeFieldContainer[PlanQuota]
    features: _containers.ScalarMap[str, bool]
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., quotas: _Optional[_Iterable[_Union[PlanQuota, _Mapping]]] = ..., features: _Optional[_Mapping[str, bool]] = ..., allowed_models: _Optional[_Iterable[str]] = ...) -> None: ...

class ListPlansRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPlansResponse(_message.Message):
    __slots__ = ("plans",)
    PLANS_FIELD_NUMBER: _ClassVar[int]
    plans: _containers.RepeatedCompositeFieldContainer[Plan]
    def __init__(self, plans: _Optional[_Iterable[_Union[Plan, _Mapping]]] = ...) -> None: ...

class UpdatePlanRequest(_message.Message):
    __slots__ = ("name", "set_quotas", "remove_quotas", "features", "request_id", "allowed_models")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    SET_QUOTAS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_QUOTAS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    set_quotas: _containers.RepeatedCompositeFieldContainer[PlanQuota]
    remove_quotas: _containers.RepeatedScalarFieldContainer[str]
    features: _containers.ScalarMap[str, bool]
    request_id: str
    allowed_models: PlanModels
    def __init__(self, name: _Optional[str] = ..., set_quotas: _Optional[_Iterable[_Union[PlanQuota, _Mapping]]] = ..., remove_quotas: _Optional[_Iterable[str]] = ..., features: _Optional[_Mapping[str, bool]] = ..., request_id: _Optional[str] = ..., allowed_models: _Optional[_Union[PlanModels, _Mapping]] = ...) -> None: ...

class PlanModels(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, models: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdatePlanResponse(_message.Message):
    __slots__ = ("plan",)
    PLAN_FIELD_NUMBER: _ClassVar[int]
    plan: Plan
    def __init__(self, plan: _Optional[_Union[Plan, _Mapping]] = ...) -> None: ...
