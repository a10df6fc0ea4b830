"""Load-test `mnistkit serve` on loopback: requests per second, latency, server memory.

Starts `mnistkit serve` on a free port, warms it up, then sends REQUESTS predictions from
CLIENTS threads, each request a real PNG (people-sized digits, as bench_predict.py draws
them) on a new connection, as a browser's fetch or curl makes it. Prints requests/s,
p50/p99/max latency, the server's CPU ms per request, and its RSS after the warm-up,
halfway, at the end and at its peak (VmHWM): the issue's targets are at least 300
predictions/s for the default MLP with p99 at most 50 ms, and RSS flat.

The checkpoint holds random weights of the default MLP's shape (speed does not depend on
the values); --model serves another one: `python scripts/bench_serve.py`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_predict import ENVIRONMENT, MNISTKIT, people_pngs, random_checkpoint
from script_arguments import positive_int

URL_PATTERN = re.compile(r"http://127\.0\.0\.1:(\d+)/")
WARM_UP_REQUESTS = 100


def start_server(checkpoint: Path) -> tuple[subprocess.Popen, int]:
    """`mnistkit serve CKPT --port 0` and the port it printed on stderr."""
    process = subprocess.Popen(
        [*MNISTKIT, "serve", str(checkpoint), "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENVIRONMENT,
    )
    line = process.stderr.readline()
    match = URL_PATTERN.search(line)
    if match is None:
        process.kill()
        raise SystemExit(f"mnistkit serve did not print its URL: {line.strip()}")
    # Keep reading stderr so that error lines can never fill the pipe and block the server.
    threading.Thread(target=process.stderr.read, daemon=True).start()
    return process, int(match.group(1))


def memory_mib(pid: int, field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"/proc/{pid}/status has no {field}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def post_png(port: int, body: bytes) -> float:
    """Seconds from connecting to the whole JSON answer; any failure stops the benchmark."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/api/predict", body, {"Content-Type": "image/png"})
        response = connection.getresponse()
        answer = response.read()
    finally:
        connection.close()
    elapsed_s = time.perf_counter() - started
    if response.status != 200 or not 0 <= json.loads(answer)["digit"] <= 9:
        raise SystemExit(f"POST /api/predict answered {response.status}: {answer[:200]!r}")
    return elapsed_s


def load(port: int, bodies: list[bytes], requests: int, clients: int, on_request=None) -> list[float]:
    """Latencies of `requests` POSTs sent by `clients` threads, each taking the next request."""
    counter = iter(range(requests))
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[BaseException] = []

    def client() -> None:
        try:
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                elapsed_s = post_png(port, bodies[index % len(bodies)])
                with lock:
                    latencies.append(elapsed_s)
                if on_request is not None:
                    on_request(index)
        except BaseException as error:  # SystemExit included: report it from the main thread
            failures.append(error)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=positive_int, default=2000, help="timed requests")
    parser.add_argument("--clients", type=positive_int, default=8, help="client threads sending them")
    parser.add_argument(
        "--images", type=positive_int, default=200, help="distinct PNGs the requests cycle through"
    )
    parser.add_argument("--model", type=Path, help="checkpoint to serve [default: the default MLP's shape]")
    options = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = options.model or random_checkpoint(Path(folder), "mlp")
        bodies = [path.read_bytes() for path in people_pngs(Path(folder), options.images)]
        server, port = start_server(checkpoint)
        try:
            load(port, bodies, WARM_UP_REQUESTS, options.clients)
            rss_warm = memory_mib(server.pid, "VmRSS")
            halfway: list[float] = []

            def sample_halfway(index: int) -> None:
                if index == options.requests // 2:
                    halfway.append(memory_mib(server.pid, "VmRSS"))

            cpu_before = cpu_seconds(server.pid)
            started = time.perf_counter()
            latencies = load(port, bodies, options.requests, options.clients, sample_halfway)
            wall_s = time.perf_counter() - started
            cpu_s = cpu_seconds(server.pid) - cpu_before
            rss_end, rss_peak = memory_mib(server.pid, "VmRSS"), memory_mib(server.pid, "VmHWM")
        finally:
            server.terminate()
            server.wait()
    latencies_ms = sorted(1000 * latency for latency in latencies)
    p99_ms = latencies_ms[min(len(latencies_ms) - 1, round(0.99 * len(latencies_ms)))]
    print(
        f"model: {checkpoint.name if options.model else 'default MLP shape (784-512-256-10), random weights'}"
    )
    print(
        f"{options.requests} requests from {options.clients} threads, {len(bodies)} distinct PNGs, "
        "one connection each"
    )
    print(f"throughput: {options.requests / wall_s:,.0f} requests/s ({wall_s:.2f} s)")
    print(
        f"latency: p50 {statistics.median(latencies_ms):.1f} ms, p99 {p99_ms:.1f} ms, "
        f"max {latencies_ms[-1]:.1f} ms"
    )
    print(f"server CPU: {1000 * cpu_s / options.requests:.2f} ms per request")
    print(
        f"server RSS: {rss_warm:.0f} MiB after {WARM_UP_REQUESTS} warm-up requests, {halfway[0]:.0f} MiB "
        f"halfway, {rss_end:.0f} MiB at the end; peak {rss_peak:.0f} MiB"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
