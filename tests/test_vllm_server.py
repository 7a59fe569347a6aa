"""GRPO's ``vllm_mode: server``: the job starts ``trl vllm-serve`` itself (psftlib.post.vllm_server). Without vllm:
the lifecycle runs a stand-in server (a small http.server answering ``/health`` after a delay), and the real
command is checked against TRL's own parser."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from psftlib.config import ConfigError
from psftlib.post.grpo import GRPOSettings
from psftlib.post.vllm_server import (
    HEALTH_PATH,
    ServerSpec,
    VLLMServerError,
    answers,
    grpo_server,
    port_in_use,
    reserve_gpus,
    running_server,
    server_spec,
    visible_gpus,
)

# modes: serve (answer /health after the delay), die (exit 3 with an error), silent (never listen),
# stubborn (ignore SIGTERM, as a hung server might); every mode starts a worker in its process group, as vLLM does
STAND_IN = textwrap.dedent(
    """
    import http.server, json, os, signal, subprocess, sys, time
    port, delay, mode, info = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    worker = subprocess.Popen([sys.executable, "-c", "import signal, sys, time; "
                               + ("signal.signal(signal.SIGTERM, signal.SIG_IGN); " if mode == "stubborn" else "")
                               + "time.sleep(600)"])
    keys = ("CUDA_VISIBLE_DEVICES", "RANK", "MASTER_PORT", "VLLM_SERVER_DEV_MODE")
    with open(info + ".tmp", "w") as f:
        json.dump({"pid": os.getpid(), "worker": worker.pid, "env": {k: os.environ.get(k) for k in keys}}, f)
    os.replace(info + ".tmp", info)
    print("loading weights ...", flush=True)
    if mode == "die":
        print("RuntimeError: CUDA out of memory (stand-in)", flush=True)
        worker.kill()
        sys.exit(3)
    time.sleep(delay)
    if mode == "silent":
        time.sleep(600)

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_gone(*pids: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while any(running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(running(p) for p in pids)


@pytest.fixture
def stand_in(tmp_path):
    """``make(mode, delay) -> (command, health_url, info file)`` for a stand-in server on a free port."""
    script = tmp_path / "stand_in_server.py"
    script.write_text(STAND_IN)

    def make(mode: str = "serve", delay: float = 0.5):
        port = free_port()
        info = tmp_path / f"info_{port}.json"
        cmd = [sys.executable, str(script), str(port), str(delay), mode, str(info)]
        return cmd, f"http://127.0.0.1:{port}{HEALTH_PATH}", info

    return make


def read_info(info: Path, within: float = 5.0) -> dict:
    deadline = time.monotonic() + within
    while not info.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return json.loads(info.read_text())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_server_answers_inside_and_is_gone_after(stand_in, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")  # the launcher's variables must not reach the server
    monkeypatch.setenv("MASTER_PORT", "29500")
    cmd, url, info = stand_in(delay=1.0)
    log = tmp_path / "logs" / "server.log"
    start = time.monotonic()
    with running_server(cmd, url, log, gpus=["3", "5"], timeout=20, poll=0.1, grace=5) as proc:
        assert time.monotonic() - start >= 1.0  # waited for the delayed /health
        assert answers(url)
        seen = read_info(info)
        assert seen["env"] == {"CUDA_VISIBLE_DEVICES": "3,5", "RANK": None, "MASTER_PORT": None,
                               "VLLM_SERVER_DEV_MODE": "1"}  # fmt: skip
        assert os.getpgid(seen["worker"]) == proc.pid != os.getpgid(0)  # its own session, workers included
    assert proc.returncode is not None
    assert wait_gone(seen["pid"], seen["worker"])
    assert not port_in_use("127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0]))
    assert "loading weights" in log.read_text()


def test_timeout_names_the_endpoint_and_the_log_tail(stand_in, tmp_path):
    cmd, url, info = stand_in("silent")
    start = time.monotonic()
    with (
        pytest.raises(VLLMServerError, match=r"did not answer .*/health within 1\.5 s") as err,
        running_server(cmd, url, tmp_path / "server.log", timeout=1.5, poll=0.1, grace=5),
    ):
        pytest.fail("the body runs only once the server answers")
    assert time.monotonic() - start < 10
    assert "loading weights" in str(err.value)  # the log's tail
    seen = read_info(info)
    assert wait_gone(seen["pid"], seen["worker"])


def test_server_dying_early_reports_its_exit_code_and_log(stand_in, tmp_path):
    cmd, url, _ = stand_in("die")
    with (
        pytest.raises(VLLMServerError, match="exited with code 3") as err,
        running_server(cmd, url, tmp_path / "server.log", timeout=20, poll=0.1),
    ):
        pytest.fail("the body runs only once the server answers")
    assert "CUDA out of memory (stand-in)" in str(err.value)
    assert str(tmp_path / "server.log") in str(err.value)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_an_exception_in_the_body_stops_the_whole_group(stand_in, tmp_path, exc):
    cmd, url, info = stand_in()
    with (
        pytest.raises(exc),
        running_server(cmd, url, tmp_path / "server.log", timeout=20, poll=0.1, grace=5),
    ):
        seen = read_info(info)
        raise exc("training failed")
    assert wait_gone(seen["pid"], seen["worker"])


def test_a_server_ignoring_sigterm_is_killed_after_the_grace(stand_in, tmp_path):
    cmd, url, info = stand_in("stubborn")
    start = time.monotonic()
    with running_server(cmd, url, tmp_path / "server.log", timeout=20, poll=0.1, grace=1.0):
        seen = read_info(info)
        stopping = time.monotonic()
    assert 1.0 <= time.monotonic() - stopping < 10 and time.monotonic() - start < 20
    assert wait_gone(seen["pid"], seen["worker"])


def test_sigterm_to_the_job_stops_the_server(stand_in, tmp_path):
    """Snakemake / SLURM stop a job with SIGTERM: the job exits 143 and takes its server along."""
    cmd, url, info = stand_in()
    job = textwrap.dedent(
        f"""
        import sys, time
        from psftlib.post.vllm_server import running_server
        with running_server({cmd!r}, {url!r}, {str(tmp_path / "server.log")!r}, timeout=20, poll=0.1, grace=5):
            print("up", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", job], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        seen = read_info(info)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_gone(seen["pid"], seen["worker"])


def test_a_taken_port_is_refused_before_starting(stand_in, tmp_path):
    cmd, url, info = stand_in()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        with (
            pytest.raises(VLLMServerError, match=f"127.0.0.1:{port} is in use.*grpo.vllm_server_port"),
            running_server(cmd, url, tmp_path / "server.log", timeout=5, poll=0.1),
        ):
            pytest.fail("no server may start on a taken port")
    assert not info.exists()  # never started


def test_the_command_is_what_trl_vllm_serve_parses():
    """Every option reaches TRL 1.16's ScriptArguments by name (nothing left over for ``vllm serve`` to guess)."""
    from trl.scripts.vllm_serve import make_parser

    spec = ServerSpec("/ckpt/psft", host="0.0.0.0", port=8123, tensor_parallel_size=2, data_parallel_size=2,
                      gpu_memory_utilization=0.85, max_model_len=12288)  # fmt: skip
    cmd = spec.command()
    assert cmd[:3] == [sys.executable, "-m", "trl.scripts.vllm_serve"]
    args, extra = make_parser().parse_args_and_config(args=cmd[3:], return_remaining_strings=True)
    assert extra == []
    assert (args.model, args.host, args.port, args.tensor_parallel_size, args.data_parallel_size,
            args.gpu_memory_utilization, args.max_model_len) == ("/ckpt/psft", "0.0.0.0", 8123, 2, 2, 0.85, 12288)  # fmt: skip
    assert spec.health_url == "http://127.0.0.1:8123/health"
    assert ServerSpec("m", host="10.0.0.7").health_url == "http://10.0.0.7:8000/health"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_the_real_command_without_vllm_fails_with_the_log_tail(tmp_path):
    spec = ServerSpec(str(tmp_path / "ckpt"), port=free_port())
    with (
        pytest.raises(VLLMServerError, match="exited with code") as err,
        running_server(spec.command(), spec.health_url, tmp_path / "server.log", timeout=60, poll=0.2),
    ):
        pytest.fail("no vllm, no server")
    assert "No module named 'vllm'" in str(err.value)  # the server's own error, from its log


def test_server_spec_of_grpo_settings():
    settings = GRPOSettings(use_vllm=True, vllm_mode="server", vllm_server_gpus=2, vllm_tensor_parallel_size=1,
                            vllm_server_port=8011, vllm_server_gpu_memory_utilization=0.8,
                            max_prompt_length=2048, max_completion_length=10240)  # fmt: skip
    spec = server_spec(settings, Path("/runs/psft/checkpoint"))
    assert spec == ServerSpec("/runs/psft/checkpoint", "0.0.0.0", 8011, 1, 2, 0.8, 12288)
    with pytest.raises(
        ConfigError, match="vllm_server_gpus: 3 is not a multiple of .*vllm_tensor_parallel_size 2"
    ):
        server_spec(GRPOSettings(vllm_server_gpus=3, vllm_tensor_parallel_size=2), "m")


def test_reserved_gpus_follow_the_training_processes(monkeypatch):
    eight = [str(i) for i in range(8)]
    assert reserve_gpus(1, 7, eight) == ["7"]
    assert reserve_gpus(4, 4, eight) == ["4", "5", "6", "7"]
    with pytest.raises(ConfigError, match=r"1 server GPUs \+ 8 training processes > the job's 8 GPUs"):
        reserve_gpus(1, 8, eight)
    with pytest.raises(ConfigError, match="at least one GPU"):
        reserve_gpus(0, 1, eight)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4, 6,7")
    assert visible_gpus() == ["4", "6", "7"]
    assert reserve_gpus(1, 2) == ["7"]


def test_grpo_server_only_in_server_mode_on_the_main_process(monkeypatch, tmp_path):
    for settings in (GRPOSettings(), GRPOSettings(use_vllm=True, vllm_mode="colocate"),
                     GRPOSettings(use_vllm=False, vllm_mode="server")):  # fmt: skip
        assert isinstance(grpo_server(settings, "m", tmp_path / "log"), contextlib.nullcontext)
    server = GRPOSettings(use_vllm=True, vllm_mode="server")
    monkeypatch.setenv("RANK", "1")
    assert isinstance(grpo_server(server, "m", tmp_path / "log"), contextlib.nullcontext)
    monkeypatch.setenv("RANK", "0")
    if importlib.util.find_spec("vllm") is None:  # the package is checked before anything starts
        with pytest.raises(ConfigError, match="needs the vllm package"):
            grpo_server(server, "m", tmp_path / "log")
    assert not (tmp_path / "log").exists()
