"""Make the broker's ACLs equal services.kafka_security.GRANTS, and rotate a principal's SCRAM password."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from services.kafka_security import (
    ADMIN,
    GRANTS,
    PRINCIPALS,
    SUPER_USERS,
    kafka_python_auth,
    read_credentials_file,
    write_credentials_file,
)
from services.settings import Settings, get_settings

_RESOURCE = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP}
SCRAM_ITERATIONS = 8192  # what kafka-storage --add-scram and kafka-configs use for SCRAM-SHA-512


@dataclass(frozen=True)
class AclReport:
    created: int
    deleted: int
    total: int

    def summary(self) -> str:
        return f"ACLs: {self.total} in force ({self.created} created, {self.deleted} removed)"


@contextmanager
def admin_client(bootstrap: str, settings: Settings | None = None) -> Iterator[KafkaAdminClient]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="stockledger-acls",
                             **kafka_python_auth(ADMIN, settings))
    try:
        yield admin
    finally:
        admin.close()


def wanted_acls() -> list[ACL]:
    return [
        ACL(principal=f"User:{g.principal}", host="*", operation=ACLOperation[op],
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(_RESOURCE[g.resource], g.name, ACLResourcePatternType.LITERAL))
        for g in GRANTS for op in g.operations
    ]


def _key(acl: ACL) -> tuple:
    p = acl.resource_pattern
    return (acl.principal, acl.host, int(acl.operation), int(acl.permission_type), int(p.resource_type),
            p.resource_name, int(p.pattern_type))


def current_acls(admin: KafkaAdminClient) -> list[ACL]:
    everything = ACLFilter(principal=None, host=None, operation=ACLOperation.ANY,
                           permission_type=ACLPermissionType.ANY,
                           resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY))
    acls, error = admin.describe_acls(everything)
    if error is not None and getattr(error, "errno", 0):
        raise RuntimeError(f"describe_acls failed: {error!r}")
    return list(acls)


def apply_acls(bootstrap: str, settings: Settings | None = None) -> AclReport:
    """Create the missing grants and delete any ACL of our principals that GRANTS does not list."""
    wanted = {_key(a): a for a in wanted_acls()}
    ours = {f"User:{p}" for p in PRINCIPALS if p not in SUPER_USERS}
    with admin_client(bootstrap, settings) as admin:
        have = {_key(a): a for a in current_acls(admin) if a.principal in ours}
        missing = [a for k, a in wanted.items() if k not in have]
        extra = [a for k, a in have.items() if k not in wanted]
        if missing:
            result = admin.create_acls(missing)
            if result["failed"]:
                raise RuntimeError(f"creating ACLs failed: {result['failed'][0]!r}")
        if extra:
            admin.delete_acls([ACLFilter(principal=a.principal, host=a.host, operation=a.operation,
                                         permission_type=a.permission_type, resource_pattern=a.resource_pattern)
                               for a in extra])
    return AclReport(created=len(missing), deleted=len(extra), total=len(wanted))


def rotate_password(bootstrap: str, principal: str, settings: Settings | None = None) -> None:
    """Give the principal a new random password on the broker, then in the credentials file.

    Sessions already open stay up; the next login needs the new password (docs/SECURITY.md, rotation).
    """
    settings = settings or get_settings()
    if principal not in PRINCIPALS:
        raise ValueError(f"unknown principal {principal!r}; one of: {', '.join(PRINCIPALS)}")
    password = secrets.token_urlsafe(24)
    with admin_client(bootstrap, settings) as admin:
        upsert = UserScramCredentialUpsertion(principal, ScramMechanism.SCRAM_SHA_512, password,
                                              iterations=SCRAM_ITERATIONS)
        errors = {u: e for u, e in admin.alter_user_scram_credentials([upsert]).items() if e}
    if errors:
        raise RuntimeError(f"the broker refused the new credential of {principal!r}: {errors[principal]}")
    path = settings.credentials_file
    write_credentials_file(path, read_credentials_file(path) | {principal: password})
