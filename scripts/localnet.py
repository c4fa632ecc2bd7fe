"""A local anvil chain on a loopback port: the `Anvil` context manager (tests, demo, `make up`) and
`hashgrid chain start|stop` for a long-running one whose pid is kept in the state directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Annotated

import typer
from rich.console import Console

from hashgrid.config import REPO_ROOT, Settings
from hashgrid.errors import ChainError, ConfigError

READY_TIMEOUT = 30.0


def anvil_binary() -> str:
    """anvil from `make setup` (the platform binary itself, not npm's node wrapper, so killing the process
    kills anvil), else one on PATH; ANVIL_BINARY overrides both."""
    named = os.environ.get("ANVIL_BINARY")
    modules = REPO_ROOT / "node_modules"
    candidates = (
        [named]
        if named
        else [
            *map(str, sorted(modules.glob("@foundry-rs/anvil-linux-*/bin/anvil"))),
            str(modules / ".bin" / "anvil"),
            shutil.which("anvil"),
        ]
    )
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    raise ConfigError("anvil not found: run `make setup` first")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chain_id_at(url: str, timeout: float = 1.0) -> int | None:
    """eth_chainId of the node at `url`, or None when nothing answers."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(json.loads(response.read())["result"], 16)
    except (OSError, urllib.error.URLError, ValueError, KeyError):
        return None


class Anvil:
    """Run anvil on 127.0.0.1 while the block is open; its whole process group is killed on exit."""

    def __init__(
        self,
        port: int | None = None,
        block_time: float | None = None,
        *,
        gas_limit: int | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.port = port
        self.block_time = block_time
        self.gas_limit = gas_limit
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Anvil:
        try:
            return self._start()
        except BaseException:  # Ctrl-C while waiting for readiness must not leave anvil behind
            self._stop_process()
            raise

    def _start(self) -> Anvil:
        fixed = self.port
        if fixed and chain_id_at(f"http://127.0.0.1:{fixed}", timeout=0.5) is not None:
            raise ChainError(f"a node already answers at 127.0.0.1:{fixed}: stop it or pick another port")
        last_error = ""
        for _attempt in range(1 if fixed else 3):  # a probed free port can be taken before anvil binds it
            port = fixed or free_port()
            args = [anvil_binary(), "--host", "127.0.0.1", "--port", str(port), "--quiet", *self.extra_args]
            if self.block_time is not None:
                args += ["--block-time", str(self.block_time)]
            if self.gas_limit is not None:
                args += ["--gas-limit", str(self.gas_limit)]
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - a file, not a pipe: unread while anvil runs
            self.process = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=self._stderr, start_new_session=True
            )
            self.port = port
            if self._wait_ready():
                return self
            last_error = self._stop_process().strip()[-300:]
        raise ChainError(f"anvil did not start on 127.0.0.1:{self.port}: {last_error or 'no answer'}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            if chain_id_at(self.url, timeout=0.5) is not None:
                return True
            time.sleep(0.05)  # polling interval, not synchronisation: readiness is the eth_chainId answer
        return False

    def _stop_process(self) -> str:
        """Kill anvil's process group; returns what it wrote to stderr."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            except ProcessLookupError:
                pass
        stderr, self._stderr = self._stderr, None
        if stderr is None:
            return ""
        stderr.seek(0)
        text = stderr.read().decode(errors="replace")
        stderr.close()
        return text

    def stop(self) -> None:
        self._stop_process()

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# ---------------------------------------------------------------------- CLI
app = typer.Typer(help="Start or stop a local anvil chain.", no_args_is_help=True, add_completion=False)
console = Console()


def _pid_file(settings: Settings) -> Path:
    return settings.state_dir / "anvil.pid"


@app.command()
def start(
    port: Annotated[int, typer.Option(help="loopback port (default 8545)")] = 8545,
    block_time: Annotated[float | None, typer.Option(help="seconds per block (default: mine per tx)")] = None,
) -> None:
    """Start anvil in the background on 127.0.0.1:PORT; its pid goes to <state_dir>/anvil.pid."""
    settings = Settings()
    pid_file = _pid_file(settings)
    url = f"http://127.0.0.1:{port}"
    if chain_id_at(url) is not None:
        console.print(f"[red]error:[/] something already answers at {url}")
        raise typer.Exit(1)
    anvil = Anvil(port=port, block_time=block_time)
    try:
        anvil.start()
    except (ChainError, ConfigError) as exc:
        from hashgrid.exits import exit_code_for

        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(int(exit_code_for(exc))) from None
    assert anvil.process is not None
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{anvil.process.pid}\n{port}\n")
    anvil.process = None  # detach: `hashgrid chain stop` ends it
    console.print(f"anvil running at {url} (pid in {pid_file})")


@app.command()
def stop() -> None:
    """Stop the anvil started by `hashgrid chain start`."""
    pid_file = _pid_file(Settings())
    if not pid_file.exists():
        console.print(f"[red]error:[/] no anvil pid file at {pid_file}: nothing to stop")
        raise typer.Exit(1)
    pid = int(pid_file.read_text().split()[0])
    try:
        os.killpg(pid, signal.SIGTERM)
        console.print(f"stopped anvil (pid {pid})")
    except ProcessLookupError:
        console.print(f"anvil (pid {pid}) was not running")
    pid_file.unlink()


if __name__ == "__main__":
    app()
