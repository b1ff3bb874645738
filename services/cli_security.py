"""`stockledger acls ...` (the broker's principals and ACLs) and `stockledger token ...` (API bearer tokens)."""

from __future__ import annotations

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
