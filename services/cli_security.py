"""`stockledger acls ...` (the broker's principals and ACLs) and `stockledger token ...` (API bearer tokens)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.settings import get_settings

acls_app = typer.Typer(help="Kafka principals, their ACLs and SCRAM passwords (docs/SECURITY.md).", no_args_is_help=True)
token_app = typer.Typer(help="Bearer tokens of the HTTP API: create, list, revoke (stored hashed).", no_args_is_help=True)
console = Console()

BootstrapOpt = Annotated[str | None, typer.Option(help="host:port of the broker (default from settings)")]


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


@acls_app.command("show")
def acls_show() -> None:
    """The principals and what each may do, as declared in services/kafka_security.py."""
    from services.kafka_security import GRANTS, SUPER_USERS

    t = Table(title="Kafka ACLs (ALLOW; everything else is denied)")
    for col in ("principal", "resource", "name", "operations"):
        t.add_column(col)
    for name in SUPER_USERS:
        t.add_row(name, "cluster", "*", "everything (super user)")
    for g in GRANTS:
        t.add_row(g.principal, g.resource, g.name, ", ".join(g.operations))
    console.print(t)


@acls_app.command("apply")
def acls_apply(bootstrap: BootstrapOpt = None) -> None:
    """Make the broker's ACLs equal the declared ones (as admin); scripts/kafka.sh runs it at every start."""
    from services.kafka_acls import apply_acls

    bootstrap = bootstrap or get_settings().bootstrap_servers
    try:
        report = apply_acls(bootstrap)
    except Exception as exc:  # noqa: BLE001 - one line for the operator, never a password
        _fail(f"cannot apply ACLs on {bootstrap}: {type(exc).__name__}: {exc}")
    console.print(report.summary())


@acls_app.command("rotate-password")
def acls_rotate(
    principal: Annotated[str, typer.Argument(help="the principal whose SCRAM password is replaced")],
    bootstrap: BootstrapOpt = None,
) -> None:
    """Give a principal a new random SCRAM password on the broker and in the credentials file (0600)."""
    from services.kafka_acls import rotate_password

    settings = get_settings()
    try:
        rotate_password(bootstrap or settings.bootstrap_servers, principal, settings)
    except ValueError as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001
        _fail(f"rotation failed: {type(exc).__name__}: {exc}")
    console.print(f"new password of {principal!r} stored in {settings.credentials_file}; "
                  "restart its clients (open sessions keep working until they reconnect)")


TokensFileOpt = Annotated[Path | None, typer.Option("--tokens-file", help="token file (default: settings api_tokens_file)")]


def _store(tokens_file: Path | None):
    from services.auth import TokenStore

    return TokenStore(tokens_file or get_settings().api_tokens_file)


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="auditor (every read, exports, snapshots), operator (health), holder (own accounts)")],
    account: Annotated[str | None, typer.Option(help="holder only: the account id, e.g. acct-0001")] = None,
    label: Annotated[str, typer.Option(help="a note: who or what holds the token")] = "",
    tokens_file: TokensFileOpt = None,
) -> None:
    """Make a token and print it once (only its SHA-256 is stored); give it to its holder over a safe channel."""
    from services.auth import TokenError

    store = _store(tokens_file)
    try:
        record, token = store.create(role, account, label)
    except TokenError as exc:
        _fail(str(exc))
    # The note to stderr, the token alone to stdout: TOKEN=$(stockledger token create ...) works.
    Console(stderr=True).print(f"token {record.id} ({record.role}{' of ' + record.account if record.account else ''}) "
                               f"stored hashed in {store.path}; it is shown only now:", highlight=False)
    print(token)


@token_app.command("list")
def token_list(tokens_file: TokensFileOpt = None) -> None:
    """The tokens: id, role, account, label, creation time (never the tokens themselves)."""
    from services.audit import iso

    t = Table(title=f"API tokens in {_store(tokens_file).path}")
    for col in ("id", "role", "account", "label", "created"):
        t.add_column(col)
    for r in _store(tokens_file).records():
        t.add_row(r.id, r.role, r.account or "", r.label, iso(r.created_at_us) or "")
    console.print(t)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="the id shown by `token create` / `token list`")],
    tokens_file: TokensFileOpt = None,
) -> None:
    """Remove a token; a running server refuses it from its next request."""
    from services.auth import TokenError

    try:
        record = _store(tokens_file).revoke(token_id)
    except TokenError as exc:
        _fail(str(exc))
    console.print(f"revoked token {record.id} ({record.role})")
