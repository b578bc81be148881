"""Option parsing shared by ``kbucket-host`` and ``kbucket-hub`` (internal).

Every docs/commands.md prompt has an option; the typer application turns the command
line into a ``NodeArgs`` (``SetupOptions`` and ``RunOptions``), which ``main_for`` hands
to ``kbapps.noderun.run_node``. Usage errors become one ``Error:`` line (exit 2);
``docs/commands.md`` lists every option.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kbapps import output
from kbapps.allocator import tune_allocator

if TYPE_CHECKING:
    import typer

    from kbapps.config import NodeType
    from kbapps.noderun import RunOptions
    from kbapps.nodesetup import SetupOptions

__all__ = ("NodeArgs", "main_for", "make_app")


@dataclass(frozen=True, slots=True)
class NodeArgs:
    """The command line of ``kbucket-host``/``kbucket-hub``, parsed.

    Attributes:
        directory: DIR.
        setup: the answers and set-up options.
        run: the options of the running node.
    """

    directory: str
    setup: SetupOptions
    run: RunOptions


_HOST_HELP = (
    "Share the directory DIR (default: the current directory) on the kbucket network: "
    "asks the set-up questions on the first run (or takes them from the options), "
    "indexes the files (SHA-1, remembered in DIR/.kbucket/), serves them over HTTP and "
    "joins the parent hub if one is given. Runs until Ctrl+C."
)
_HUB_HELP = (
    "Run a kbucket hub in the directory DIR (default: the current directory): children "
    "(shares and hubs) join it, and it answers finds and proxies downloads for the "
    "whole network. HTTPS/WSS when the port ends in 443 or --tls-cert is given. Runs "
    "until Ctrl+C."
)


def make_app(kind: NodeType) -> typer.Typer:
    """The typer application of ``kbucket-host`` (``"leaf"``) or ``kbucket-hub``."""
    import typer

    from kbapps.cli._typer_app import Command, new_app, version_option

    app = new_app()
    noun = "share" if kind == "leaf" else "hub"

    directory_arg = typer.Argument(".", metavar="DIR", help=f"The {noun}'s directory.")
    name_opt = typer.Option(None, "--name", metavar="NAME", help=f"Name for this {noun}.")
    research_opt = typer.Option(
        None,
        "--scientific-research",
        metavar="yes|no",
        help="Answer the research question (no: exit 1, nothing written).",
    )
    description_opt = typer.Option(
        None, "--description", metavar="TEXT", help=f"Brief description of the {noun}."
    )
    owner_opt = typer.Option(None, "--owner", metavar="NAME", help="Owner's full name.")
    email_opt = typer.Option(None, "--owner-email", metavar="EMAIL", help="Owner's email.")
    listen_url_opt = typer.Option(
        None,
        "--listen-url",
        metavar="URL",
        help="URL others use to reach this node ('.' = http://localhost:PORT).",
    )
    parent_opt = typer.Option(
        None, "--parent-hub", metavar="URL", help="Parent hub to join ('.' = none)."
    )
    parent_pass_opt = typer.Option(
        None, "--parent-hub-passcode", metavar="PASSCODE", help="Passcode the parent hub requires."
    )
    port_help = (
        "Listen port (0 = any free port; default: the first free port from 2000 to 2999)."
        if kind == "leaf"
        else "Listen port (0 = any free port; default 3240; a port ending in 443 serves HTTPS)."
    )
    port_opt = typer.Option(None, "--port", metavar="N", help=port_help)
    host_opt = typer.Option(None, "--host", metavar="ADDR", help="Bind address (default 0.0.0.0).")
    auto_opt = typer.Option(
        False, "--auto", help="Ask nothing: use the options, then saved answers, then defaults."
    )
    heartbeat_opt = typer.Option(
        None,
        "--heartbeat-timeout",
        metavar="SECONDS",
        help="Silence after which a parent or child link is dropped (default 30).",
    )
    connections_opt = typer.Option(
        None,
        "--max-connections-per-client",
        metavar="N",
        help="Connections served at once for one client address (default 256; "
        "many users behind one NAT share an address).",
    )
    streams_opt = typer.Option(
        None,
        "--max-streams-per-client",
        metavar="N",
        help="Proxied downloads open at once for one client address (default 64).",
    )

    upload_rate_opt = typer.Option(
        None,
        "--max-upload-rate",
        metavar="RATE",
        help="Bytes per second the share sends at most, to all its downloaders together,"
        " directly and through its hub (500K, 20M, 1G; 0 = no limit, the default;"
        " saved in kbnode.json).",
    )
    confirm_opt = typer.Option(
        None,
        "--confirm-share",
        metavar="yes|no",
        help="Answer the question about sharing everything under DIR (no: exit 1).",
    )
    passcode_opt = typer.Option(
        None,
        "--passcode",
        metavar="PASSCODE",
        help="Passcode children must present (empty = open).",
    )
    tls_cert_opt = typer.Option(
        None, "--tls-cert", metavar="FILE", help="TLS certificate (PEM): serve HTTPS."
    )
    tls_key_opt = typer.Option(None, "--tls-key", metavar="FILE", help="TLS private key (PEM).")
    index_budget_opt = typer.Option(
        None,
        "--index-budget",
        metavar="SIZE",
        help="Bytes of index (content ids, paths, node ids) held for all children together"
        " (512M, 2G; default 1G; a bare number is an old entry count, 80 bytes each;"
        " saved in kbnode.json).",
    )
    open_quota_opt = typer.Option(
        None,
        "--open-child-quota",
        metavar="SIZE",
        help="Bytes of index a child that joined without the passcode may hold, per node"
        " it proves (default 128M; a bare number is an old entry count; saved in"
        " kbnode.json).",
    )
    cache_size_opt = typer.Option(
        None,
        "--cache-size",
        metavar="SIZE",
        help="Bound of the relay cache of proxied content in DIR/.kbucket/cache (500M, 20G;"
        " 0 = off; default 1G; saved in kbnode.json).",
    )

    if kind == "leaf":

        @app.command(cls=Command, help=_HOST_HELP)
        def host(
            directory: str = directory_arg,
            name: str | None = name_opt,
            scientific_research: str | None = research_opt,
            description: str | None = description_opt,
            owner: str | None = owner_opt,
            owner_email: str | None = email_opt,
            confirm_share: str | None = confirm_opt,
            listen_url: str | None = listen_url_opt,
            parent_hub: str | None = parent_opt,
            parent_hub_passcode: str | None = parent_pass_opt,
            port: int | None = port_opt,
            bind_host: str | None = host_opt,
            auto: bool = auto_opt,
            heartbeat_timeout: float | None = heartbeat_opt,
            max_connections_per_client: int | None = connections_opt,
            max_streams_per_client: int | None = streams_opt,
            max_upload_rate: str | None = upload_rate_opt,
            version: bool = version_option(),
        ) -> NodeArgs:
            # Imported once the command line is valid: they pull in the transport
            # (~0.5 s of CPU), which --help, --version and a usage error never need.
            from kbapps.noderun import RunOptions
            from kbapps.nodesetup import SetupOptions

            options = SetupOptions(
                name=name,
                scientific_research=scientific_research,
                description=description,
                owner=owner,
                owner_email=owner_email,
                confirm_share=confirm_share,
                max_upload_rate=max_upload_rate,
                listen_url=listen_url,
                parent_hub=parent_hub,
                parent_hub_passcode=parent_hub_passcode,
                port=port,
                host=bind_host,
                auto=auto,
            )
            run = RunOptions(
                heartbeat_timeout=heartbeat_timeout,
                max_connections_per_client=max_connections_per_client,
                max_streams_per_client=max_streams_per_client,
            )
            return NodeArgs(directory, options, run)

    else:

        @app.command(cls=Command, help=_HUB_HELP)
        def hub(
            directory: str = directory_arg,
            name: str | None = name_opt,
            scientific_research: str | None = research_opt,
            description: str | None = description_opt,
            owner: str | None = owner_opt,
            owner_email: str | None = email_opt,
            listen_url: str | None = listen_url_opt,
            parent_hub: str | None = parent_opt,
            parent_hub_passcode: str | None = parent_pass_opt,
            passcode: str | None = passcode_opt,
            tls_cert: Path | None = tls_cert_opt,
            tls_key: Path | None = tls_key_opt,
            index_budget: str | None = index_budget_opt,
            open_child_quota: str | None = open_quota_opt,
            cache_size: str | None = cache_size_opt,
            port: int | None = port_opt,
            bind_host: str | None = host_opt,
            auto: bool = auto_opt,
            heartbeat_timeout: float | None = heartbeat_opt,
            max_connections_per_client: int | None = connections_opt,
            max_streams_per_client: int | None = streams_opt,
            version: bool = version_option(),
        ) -> NodeArgs:
            # Imported once the command line is valid: they pull in the transport
            # (~0.5 s of CPU), which --help, --version and a usage error never need.
            from kbapps.noderun import RunOptions
            from kbapps.nodesetup import SetupOptions

            options = SetupOptions(
                name=name,
                scientific_research=scientific_research,
                description=description,
                owner=owner,
                owner_email=owner_email,
                listen_url=listen_url,
                parent_hub=parent_hub,
                parent_hub_passcode=parent_hub_passcode,
                passcode=passcode,
                tls_cert=tls_cert,
                tls_key=tls_key,
                index_budget=index_budget,
                open_child_quota=open_child_quota,
                cache_size=cache_size,
                port=port,
                host=bind_host,
                auto=auto,
            )
            run = RunOptions(
                heartbeat_timeout=heartbeat_timeout,
                max_connections_per_client=max_connections_per_client,
                max_streams_per_client=max_streams_per_client,
            )
            return NodeArgs(directory, options, run)

    return app


def main_for(kind: NodeType, prog: str, argv: list[str] | None) -> int:
    """Run ``kbucket-host``/``kbucket-hub`` on ``argv``; return the exit code."""
    args = sys.argv[1:] if argv is None else argv
    tune_allocator()
    # Console lines must reach a reading process as they happen, even through a pipe.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)

    def body() -> int:
        from kbapps.cli._typer_app import parse_with_typer

        parsed = parse_with_typer(make_app(kind), args, prog)
        if isinstance(parsed, int):  # --help, --version
            return parsed
        assert isinstance(parsed, NodeArgs)
        from kbapps.noderun import run_node

        return run_node(kind, parsed.directory, parsed.setup, parsed.run)

    return output.run_command(body)
