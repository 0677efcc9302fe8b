import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyEnvironment(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_ENVIRONMENT_UNSPECIFIED: _ClassVar[KeyEnvironment]
    KEY_ENVIRONMENT_LIVE: _ClassVar[KeyEnvironment]
    KEY_ENVIRONMENT_TEST: _ClassVar[KeyEnvironment]

class KeyScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_SCOPE_UNSPECIFIED: _ClassVar[KeyScope]
    KEY_SCOPE_INFERENCE: _ClassVar[KeyScope]
    KEY_SCOPE_MANAGEMENT: _ClassVar[KeyScope]

class KeyStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_STATUS_UNSPECIFIED: _ClassVar[KeyStatus]
    KEY_STATUS_ACTIVE: _ClassVar[KeyStatus]
    KEY_STATUS_REVOKED: _ClassVar[KeyStatus]
    KEY_STATUS_EXPIRED: _ClassVar[KeyStatus]

class SpendCapWindow(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPEND_CAP_WINDOW_UNSPECIFIED: _ClassVar[SpendCapWindow]
    SPEND_CAP_WINDOW_DAILY: _ClassVar[SpendCapWindow]
    SPEND_CAP_WINDOW_MONTHLY: _ClassVar[SpendCapWindow]
    SPEND_CAP_WINDOW_TOTAL: _ClassVar[SpendCapWindow]
KEY_ENVIRONMENT_UNSPECIFIED: KeyEnvironment
KEY_ENVIRONMENT_LIVE: KeyEnvironment
KEY_ENVIRONMENT_TEST: KeyEnvironment
KEY_SCOPE_UNSPECIFIED: KeyScope
KEY_SCOPE_INFERENCE: KeyScope
KEY_SCOPE_MANAGEMENT: KeyScope
KEY_STATUS_UNSPECIFIED: KeyStatus
KEY_STATUS_ACTIVE: KeyStatus
KEY_STATUS_REVOKED: KeyStatus
KEY_STATUS_EXPIRED: KeyStatus
SPEND_CAP_WINDOW_UNSPECIFIED: SpendCapWindow
SPEND_CAP_WINDOW_DAILY: SpendCapWindow
SPEND_CAP_WINDOW_MONTHLY: SpendCapWindow
SPEND_CAP_WINDOW_TOTAL: SpendCapWindow

class RateLimits(_message.Message):
    __slots__ = ("rpm", "tpm", "requests_per_day")
    RPM_FIELD_NUMBER: _ClassVar[int]
    TPM_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    rpm: int
    tpm: int
    requests_per_day: int
    def __init__(self, rpm: _Optional[int] = ..., tpm: _Optional[int] = ..., requests_per_day: _Optional[int] = ...) -> None: ...

class SpendCap(_message.Message):
    __slots__ = ("amount_usd", "window")
    AMOUNT_USD_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    amount_usd: str
    window: SpendCapWindow
    def __init__(self, amount_usd: _Optional[str] = ..., window: _Optional[_Union[SpendCapWindow, str]] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("id", "tenant_id", "name", "key_prefix", "key_hint", "environment", "scope", "status", "end_user_id", "parent_key_id", "allowed_models", "rate_limits", "spend_cap", "expire_time", "last_used_time", "create_time", "revoke_time", "rotated_to_key_id", "grace_expire_time", "created_by")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    KEY_HINT_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    END_USER_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    SPEND_CAP_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKE_TIME_FIELD_NUMBER: _ClassVar[int]
    ROTATED_TO_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    name: str
    key_prefix: str
    key_hint: str
    environment: KeyEnvironment
    scope: KeyScope
    status: KeyStatus
    end_user_id: str
    parent_key_id: str
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    rate_limits: RateLimits
    spend_cap: SpendCap
    expire_time: _timestamp_pb2.Timestamp
    last_used_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    revoke_time: _timestamp_pb2.Timestamp
    rotated_to_key_id: str
    grace_expire_time: _timestamp_pb2.Timestamp
    created_by: str
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., name: _Optional[str] = ..., key_prefix: _Optional[str] = ..., key_hint: _Optional[str] = ..., environment: _Optional[_Union[KeyEnvironment, str]] = ..., scope: _Optional[_Union[KeyScope, str]] = ..., status: _Optional[_Union[KeyStatus, str]] = ..., end_user_id: _Optional[str] = ..., parent_key_id: _Optional[str] = ..., allowed_models: _Optional[_Iterable[str]] = ..., rate_limits: _Optional[_Union[RateLimits, _Mapping]] = ..., spend_cap: _Optional[_Union[SpendCap, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_used_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoke_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rotated_to_key_id: _Optional[str] = ..., grace_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("tenant_id", "api_key", "request_id", "parent_key_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    api_key: ApiKey
    request_id: str
    parent_key_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., api_key: _Optional[_Union[ApiKey, _Mapping]] = ..., request_id: _Optional[str] = ..., parent_key_id: _Optional[str] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("api_key", "secret")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    secret: str
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ("tenant_id", "page_size", "page_token", "status", "end_user_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    END_USER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    page_size: int
    page_token: str
    status: KeyStatus
    end_user_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., status: _Optional[_Union[KeyStatus, str]] = ..., end_user_id: _Optional[str] = ...) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("api_keys", "next_page_token")
    API_KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    api_keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    next_page_token: str
    def __init__(self, api_keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetApiKeyRequest(_message.Message):
    __slots__ = ("tenant_id", "key_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    key_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., key_id: _Optional[str] = ...) -> None: ...

class GetApiKeyResponse(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class UpdateApiKeyRequest(_message.Message):
    __slots__ = ("tenant_id", "api_key", "update_mask", "request_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    api_key: ApiKey
    update_mask: _field_mask_pb2.FieldMask
    request_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., api_key: _Optional[_Union[ApiKey, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateApiKeyResponse(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("tenant_id", "key_id", "request_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    key_id: str
    request_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., key_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class RotateApiKeyRequest(_message.Message):
    __slots__ = ("tenant_id", "key_id", "grace_period_seconds", "request_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    key_id: str
    grace_period_seconds: int
    request_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., key_id: _Optional[str] = ..., grace_period_seconds: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class RotateApiKeyResponse(_message.Message):
    __slots__ = ("api_key", "secret", "old_secret_expire_time")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    OLD_SECRET_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    secret: str
    old_secret_expire_time: _timestamp_pb2.Timestamp
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ..., old_secret_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
