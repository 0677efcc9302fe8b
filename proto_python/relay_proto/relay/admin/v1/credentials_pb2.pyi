import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProviderCredential(_message.Message):
    __slots__ = ("id", "tenant_id", "provider_id", "name", "key_hint", "base_url", "status", "rpm_limit", "tpm_limit", "priority", "relay_owned", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_HINT_FIELD_NUMBER: _ClassVar[int]
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RPM_LIMIT_FIELD_NUMBER: _ClassVar[int]
    TPM_LIMIT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    RELAY_OWNED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    provider_id: str
    name: str
    key_hint: str
    base_url: str
    status: str
    rpm_limit: int
    tpm_limit: int
    priority: int
    relay_owned: bool
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., provider_id: _Optional[str] = ..., name: _Optional[str] = ..., key_hint: _Optional[str] = ..., base_url: _Optional[str] = ..., status: _Optional[str] = ..., rpm_limit: _Optional[int] = ..., tpm_limit: _Optional[int] = ..., priority: _Optional[int] = ..., relay_owned: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateProviderCredentialRequest(_message.Message):
    __slots__ = ("tenant_id", "credential", "secret", "request_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    credential: ProviderCredential
    secret: str
    request_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., credential: _Optional[_Union[ProviderCredential, _Mapping]] = ..., secret: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateProviderCredentialResponse(_message.Message):
    __slots__ = ("credential",)
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    credential: ProviderCredential
    def __init__(self, credential: _Optional[_Union[ProviderCredential, _Mapping]] = ...) -> None: ...

class ListProviderCredentialsRequest(_message.Message):
    __slots__ = ("tenant_id", "page_size", "page_token", "provider_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    page_size: int
    page_token: str
    provider_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., provider_id: _Optional[str] = ...) -> None: ...

class ListProviderCredentialsResponse(_message.Message):
    __slots__ = ("credentials", "next_page_token")
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    credentials: _containers.RepeatedCompositeFieldContainer[ProviderCredential]
    next_page_token: str
    def __init__(self, credentials: _Optional[_Iterable[_Union[ProviderCredential, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RotateProviderCredentialRequest(_message.Message):
    __slots__ = ("tenant_id", "credential_id", "secret", "request_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    credential_id: str
    secret: str
    request_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., credential_id: _Optional[str] = ..., secret: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RotateProviderCredentialResponse(_message.Message):
    __slots__ = ("credential",)
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    credential: ProviderCredential
    def __init__(self, credential: _Optional[_Union[ProviderCredential, _Mapping]] = ...) -> None: ...

class DisableProviderCredentialRequest(_message.Message):
    __slots__ = ("tenant_id", "credential_id", "request_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    credential_id: str
    request_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., credential_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DisableProviderCredentialResponse(_message.Message):
    __slots__ = ("credential",)
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    credential: ProviderCredential
    def __init__(self, credential: _Optional[_Union[ProviderCredential, _Mapping]] = ...) -> None: ...
