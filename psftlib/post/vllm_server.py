"""The ``trl vllm-serve`` server of GRPO's ``vllm_mode: server``, started and stopped by the GRPO job itself.

In server mode TRL's trainer (its main process) sends the rollout prompts to, and pushes the weights into, a vLLM
server on GPUs of its own. :func:`grpo_server` starts that server on the job's main process (``RANK`` 0) before the
trainer exists, on the GPUs after the training processes' (``accelerate launch --num_processes`` = the job's GPUs
minus ``grpo.vllm_server_gpus``; local rank ``r`` trains on the job's GPU ``r``), waits until its ``/health``
endpoint answers (TRL's ``VLLMClient.check_server`` asks the same one), and stops it however the job ends::

    with grpo_server(settings, cold_start, log):
        run_grpo(cold_start, prompts, settings, out, ...)

:func:`running_server` is the lifecycle alone (any command, tests use a stand-in): the server runs in a session
of its own (its vLLM workers too), its output goes to ``log``, and on exit (normal, an exception,
``KeyboardInterrupt``, or SIGTERM, which it turns into ``SystemExit``) the whole process group gets SIGTERM, then
SIGKILL after ``grace`` seconds; should this process be killed outright, Linux sends the server SIGTERM
(``PR_SET_PDEATHSIG``). A server that exits or does not answer in time raises :class:`VLLMServerError` with the
log's last lines.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psftlib.config import ConfigError
from psftlib.eval.harness import _LAUNCH_VARS

if TYPE_CHECKING:
    from psftlib.post.grpo import GRPOSettings

HEALTH_PATH = (
    "/health"  # vLLM's health endpoint, the one trl.generation.vllm_client.VLLMClient.check_server polls
)
LOG_TAIL_LINES = 40


class VLLMServerError(RuntimeError):
    """The vLLM server exited, or did not answer its health endpoint in time; the message has its log's tail."""


@dataclasses.dataclass(frozen=True)
class ServerSpec:
    """One ``trl vllm-serve`` server: the options of TRL 1.16's ``trl.scripts.vllm_serve.ScriptArguments``."""

    model: str
    host: str = "0.0.0.0"
    port: int = 8000
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None

    def command(self) -> list[str]:
        """The command line: ``trl vllm-serve`` (its module, in this Python) with the options by their field names."""
        cmd = [sys.executable, "-m", "trl.scripts.vllm_serve", "--model", self.model, "--host", self.host,
               "--port", str(self.port), "--tensor_parallel_size", str(self.tensor_parallel_size),
               "--data_parallel_size", str(self.data_parallel_size),
               "--gpu_memory_utilization", str(self.gpu_memory_utilization)]  # fmt: skip
        if self.max_model_len is not None:
            cmd += ["--max_model_len", str(self.max_model_len)]
        return cmd

    @property
    def health_url(self) -> str:
        """Where this process asks whether the server is up (a wildcard bind address is asked on loopback)."""
        return f"http://{probe_host(self.host)}:{self.port}{HEALTH_PATH}"


def probe_host(host: str) -> str:
    """The address to connect to for a server bound to ``host`` (``0.0.0.0`` / ``::`` / empty: loopback)."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def visible_gpus() -> list[str]:
    """The job's GPUs as ``CUDA_VISIBLE_DEVICES`` entries: that variable's list when set, else every GPU torch sees."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def reserve_gpus(count: int, training_processes: int, visible: Sequence[str] | None = None) -> list[str]:
    """The ``count`` GPUs after the first ``training_processes`` of ``visible`` (default :func:`visible_gpus`): local
    rank ``r`` of ``accelerate launch`` trains on visible GPU ``r``, so these are the server's alone."""
    visible = list(visible_gpus() if visible is None else visible)
    if count < 1:
        raise ConfigError(
            f"grpo.vllm_server_gpus: {count}; server mode needs at least one GPU for the server"
        )
    if training_processes + count > len(visible):
        raise ConfigError(
            f"grpo.vllm_server_gpus: {count} server GPUs + {training_processes} training processes > the job's "
            f"{len(visible)} GPUs (CUDA_VISIBLE_DEVICES={','.join(visible) or '<none>'}); launch the job's GPUs "
            "minus grpo.vllm_server_gpus processes (accelerate launch --num_processes)"
        )
    return visible[training_processes : training_processes + count]


def server_spec(settings: GRPOSettings, model: str | Path) -> ServerSpec:
    """The server of ``settings`` (``vllm_server_*``) serving the checkpoint ``model`` (the cold start)."""
    gpus, tp = settings.vllm_server_gpus, settings.vllm_tensor_parallel_size
    if gpus % tp:
        raise ConfigError(
            f"grpo.vllm_server_gpus: {gpus} is not a multiple of grpo.vllm_tensor_parallel_size {tp} (the server "
            "runs vllm_server_gpus / vllm_tensor_parallel_size data-parallel engines)"
        )
    return ServerSpec(model=str(model), host=settings.vllm_server_host, port=settings.vllm_server_port,
                      tensor_parallel_size=tp, data_parallel_size=gpus // tp,
                      gpu_memory_utilization=settings.vllm_server_gpu_memory_utilization,
                      max_model_len=settings.max_prompt_length + settings.max_completion_length)  # fmt: skip


def grpo_server(
    settings: GRPOSettings, model: str | Path, log: str | Path
) -> contextlib.AbstractContextManager:
    """The server of a GRPO job around its training, on the main process when ``use_vllm`` and ``vllm_mode:
    server``; a no-op context otherwise (colocate mode, HF generate, the other ranks)."""
    if not (settings.use_vllm and settings.vllm_mode == "server") or int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    settings.check_vllm()  # no vllm package: a clear error now, not a dead server
    spec = server_spec(settings, model)
    training = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    gpus = reserve_gpus(settings.vllm_server_gpus, training)
    return running_server(spec.command(), spec.health_url, log, gpus, settings.vllm_server_start_timeout)


def log_tail(log: str | Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``log`` (a note when it is missing)."""
    try:
        text = Path(log).read_text(errors="replace")
    except FileNotFoundError:
        return f"({log} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def port_in_use(host: str, port: int) -> bool:
    """Whether something already accepts connections at ``host:port`` (a server of another job, a stale one)."""
    with contextlib.suppress(OSError), socket.create_connection((probe_host(host), port), timeout=1.0):
        return True
    return False


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


@contextlib.contextmanager
def running_server(
    command: Sequence[str],
    health_url: str,
    log: str | Path,
    gpus: Sequence[str] | None = None,
    timeout: float = 1200.0,
    poll: float = 1.0,
    grace: float = 30.0,
) -> Iterator[subprocess.Popen]:
    """Run ``command`` (its own process group, output to ``log``, ``CUDA_VISIBLE_DEVICES=gpus``, without the
    launcher's ``RANK`` / ``MASTER_PORT`` ...) until ``health_url`` answers 200, yield it, and stop its whole
    process group on every exit. :class:`VLLMServerError` (with the log's tail) when the port is taken already,
    when the server exits first, or when it has not answered within ``timeout`` seconds."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    host_port = health_url.split("//", 1)[-1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    if port_in_use(host, int(port)):
        raise VLLMServerError(
            f"{host_port} is in use before the vLLM server started (another job's server, or a stale one): stop it, "
            "or set grpo.vllm_server_port to a free port"
        )
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS and not k.startswith("TORCHELASTIC_")}
    env["VLLM_SERVER_DEV_MODE"] = "1"  # TRL's weight-transfer endpoints (trl vllm-serve sets it too)
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    with open(log, "w") as out:
        proc = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True, preexec_fn=_die_with_parent())  # fmt: skip
    restore = _catch_sigterm()
    try:
        _wait_healthy(proc, health_url, log, timeout, poll)
        yield proc
    finally:
        try:
            stop_group(proc, grace)
        finally:
            restore()


def _wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout: float, poll: float) -> None:
    start = time.monotonic()
    while not answers(url):
        code = proc.poll()
        if code is not None:
            raise VLLMServerError(
                f"the vLLM server ({' '.join(proc.args)}) exited with code {code} before {url} answered; the "
                f"last lines of {log}:\n{log_tail(log)}"
            )
        if time.monotonic() - start > timeout:
            raise VLLMServerError(
                f"the vLLM server did not answer {url} within {timeout:g} s (grpo.vllm_server_start_timeout); the "
                f"last lines of {log}:\n{log_tail(log)}"
            )
        time.sleep(poll)


def stop_group(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM to ``proc``'s process group (the server and its workers), SIGKILL to what is left after ``grace``."""
    pgid = proc.pid  # start_new_session: the leader's pid is the group's id
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (proc.poll() is None or group_alive(pgid)):
        time.sleep(0.1)
    if proc.poll() is None or group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    proc.wait()


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies waiting to be reaped do not count, on Linux)."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc_dir.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "(comm)": state, ppid, pgrp, ...
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
    return False


def _catch_sigterm() -> Callable[[], None]:
    """Make SIGTERM (Snakemake, SLURM, the launcher stopping the job) raise ``SystemExit`` so the server is stopped
    on the way out; returns what puts the previous handler back (nothing to do off the main thread, where handlers
    cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    return lambda: signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _die_with_parent() -> Any:
    """A ``preexec_fn`` asking Linux to SIGTERM the server when this process dies (even by SIGKILL); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork: the child only calls it
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)

    return preexec
