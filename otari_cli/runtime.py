"""Runtime: what one invocation knows (global options, output, gateway), built by the root."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import typer

from otari_cli import daemon
from otari_cli.client import DEFAULT_TIMEOUT, Gateway
from otari_cli.config import (
    Dirs,
    LocalSettings,
    Selection,
    Target,
    config_file_path,
    load_contexts,
    local_settings,
    resolve_target,
)
from otari_cli.errors import Aborted
from otari_cli.output import Format, Output


@dataclass(frozen=True)
class Options:
    """The global command-line options."""

    url: str | None = None
    master_key: str | None = None
    context: str | None = None
    output: Format | None = None
    quiet: bool = False
    debug: bool = False
    timeout: float = DEFAULT_TIMEOUT


class Runtime:
    """Per-invocation state, owned by the root Typer context (no module globals)."""

    def __init__(
        self, options: Options, env: Mapping[str, str] | None = None, dirs: Dirs | None = None
    ) -> None:
        self.options = options
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.dirs = dirs or Dirs.from_platform()
        self.output = Output(options.output, quiet=options.quiet)
        self._gateway: Gateway | None = None

    def local(
        self, config: Path | None = None, overrides: Mapping[str, object] = {}
    ) -> LocalSettings:
        """The local daemon's settings as it would resolve them."""
        path = config_file_path(config, self.env, self.dirs)
        return local_settings(path, overrides, self.env, self.dirs)

    def target(self) -> Target:
        """The gateway this invocation talks to."""
        record, _stale = daemon.check(self.dirs.pidfile)
        daemon_config = Path(record.config) if record and record.config else None
        chosen = Selection.from_flags(
            self.options.url, self.options.master_key, self.options.context, self.env
        )
        return resolve_target(
            chosen,
            load_contexts(self.dirs.contexts_file),
            lambda: self.local(daemon_config),
            record.url if record else None,
            self.env,
        )

    @cached_property
    def gateway(self) -> Gateway:
        """The client for the target gateway (created on first use)."""
        target = self.target()
        local = target.context is None and not target.url_source.startswith("--url")
        hint = " (is it running? try `otari start` or `otari status`)" if local else ""
        self._gateway = Gateway(
            target.url,
            target.master_key,
            timeout=self.options.timeout,
            hint=hint,
            require_key=target.url_source.startswith("--url"),
        )
        return self._gateway

    def confirm(self, action: str, yes: bool) -> None:
        """Ask before a destructive action unless --yes; decline -> Aborted (exit 1)."""
        if yes:
            return
        if not self.output.confirm(f"{action}?"):
            raise Aborted("aborted: nothing was changed")

    def close(self) -> None:
        """Release the HTTP client, if one was made."""
        if self._gateway is not None:
            self._gateway.close()


def runtime(ctx: typer.Context) -> Runtime:
    """The Runtime the root command stored on the context."""
    found = ctx.find_object(Runtime)
    if found is None:  # a sub-app invoked without the root app (programming error)
        raise RuntimeError("otari commands must run under the root app")
    return found
