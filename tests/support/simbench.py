"""Throughput self-check of the simulated endpoint: requests/s sustained and server CPU per request.

Why: the simulator shares a small CPU with the client under test, so it must be cheap per request.
This starts the CLI server in its own process, drives it with C keep-alive connections from a lean
raw-socket client (or the real `openai` AsyncOpenAI client with `--client openai`), and reports the
rate and the server process's CPU seconds per request (from /proc, Linux).

    python tests/support/simbench.py --concurrency 128 --seconds 10 --latency 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).with_name("simserver.py")

_SCHEMA = {
    "type": "object",
    "properties": {
        "理由": {"type": "string", "maxLength": 60},
        "场景": {"type": "string", "enum": ["隐私保护", "知情同意", "临床试验"]},
        "要点": {"type": "array", "items": {"type": "string", "maxLength": 30}, "minItems": 1, "maxItems": 4},
        "依据": {
            "type": "object",
            "properties": {
                "编号": {"type": "string", "maxLength": 30},
                "摘要": {"type": "string", "maxLength": 40},
            },
            "required": ["编号", "摘要"],
        },
        "风险": {"type": "boolean"},
    },
    "required": ["理由", "场景", "要点", "依据", "风险"],
}


def _body(i: int) -> dict:
    """A mix like a generation run: structured calls mostly, some plain chat and tool calls."""
    messages = [
        {"role": "system", "content": "你是医学伦理评测的出题助手。"},
        {"role": "user", "content": f"请根据第{i}条规范起草一个临床情境并给出判定。"},
    ]
    body: dict = {"model": "sim-model", "messages": messages}
    if i % 4 == 0:
        return body
    if i % 4 == 1:
        body["tools"] = [{"type": "function", "function": {"name": "判定", "parameters": _SCHEMA}}]
        body["tool_choice"] = {"type": "function", "function": {"name": "判定"}}
        return body
    body["response_format"] = {"type": "json_schema", "json_schema": {"name": "判定", "schema": _SCHEMA}}
    return body


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _raw_worker(port: int, stop_at: float, counter: list[int], offset: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    try:
        while time.monotonic() < stop_at:
            payload = json.dumps(_body(i), ensure_ascii=False).encode()
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            body = await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer: {head[:40]!r} {body[:200]!r}")
            counter[0] += 1
            i += 1000
    finally:
        writer.close()


async def _openai_worker(client, stop_at: float, counter: list[int], offset: int) -> None:
    i = offset
    while time.monotonic() < stop_at:
        await client.chat.completions.create(**_body(i))
        counter[0] += 1
        i += 1000


async def _drive(port: int, concurrency: int, seconds: float, client_kind: str) -> int:
    counter = [0]
    stop_at = time.monotonic() + seconds
    if client_kind == "raw":
        workers = [_raw_worker(port, stop_at, counter, k) for k in range(concurrency)]
    else:
        import httpx
        import openai

        http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        )
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sim", http_client=http)
        workers = [_openai_worker(client, stop_at, counter, k) for k in range(concurrency)]
    await asyncio.gather(*workers)
    return counter[0]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--concurrency", type=int, default=128)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--latency", type=float, default=0.05, help="server latency mean (constant)")
    p.add_argument("--client", choices=("raw", "openai"), default="raw")
    a = p.parse_args(argv)
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--port", "0", "--latency", str(a.latency), "--no-records"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"server did not start: {line!r}")
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        cpu0, wall0, client0 = _cpu_seconds(proc.pid), time.monotonic(), time.process_time()
        done = asyncio.run(_drive(port, a.concurrency, a.seconds, a.client))
        wall = time.monotonic() - wall0
        cpu, client_cpu = _cpu_seconds(proc.pid) - cpu0, time.process_time() - client0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(
        json.dumps(
            {
                "client": a.client,
                "concurrency": a.concurrency,
                "latency_s": a.latency,
                "requests": done,
                "wall_s": round(wall, 2),
                "requests_per_s": round(done / wall, 1),
                "server_cpu_s": round(cpu, 2),
                "server_cpu_share": round(cpu / wall, 3),
                "server_cpu_ms_per_request": round(1000 * cpu / max(done, 1), 3),
                "client_cpu_s": round(client_cpu, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
