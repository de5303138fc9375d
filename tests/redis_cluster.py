"""Private Redis Cluster and Sentinel set-ups for tests, made of `RedisServer` processes in temp folders."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from .redis_server import RedisServer, free_port


def _wait_for(condition: str, check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {condition}")
        time.sleep(0.05)


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _slot_map(client: redis.Redis) -> tuple[tuple[int, int, int], ...]:
    """`(first slot, last slot, primary port)` for each range, as one node sees the cluster."""
    ranges = client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
    return tuple(sorted((int(r[0]), int(r[1]), int(r[2][1])) for r in ranges))


class LocalCluster:
    """A Redis Cluster on 127.0.0.1: `primaries` nodes with the slots, each with `replicas` replicas.

    Nodes declare a peer failed after `node_timeout_ms`, and keep serving their own slots when another
    primary is gone (`cluster-require-full-coverage no`).
    """

    def __init__(
        self, directory: Path, *, primaries: int = 3, replicas: int = 0, node_timeout_ms: int = 500
    ) -> None:
        self.directory = directory
        self.replicas = replicas
        count = primaries * (1 + replicas)
        self.nodes: list[RedisServer] = []
        for index in range(count):
            node_dir = directory / f"node{index}"
            node = RedisServer(
                node_dir,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(node_dir / "nodes.conf"),
                "--cluster-node-timeout",
                str(node_timeout_ms),
                "--cluster-require-full-coverage",
                "no",
                "--repl-diskless-sync-delay",
                "0",
                "--cluster-replica-validity-factor",
                "0",
            )
            node.port = cluster_port()
            node.new_port = cluster_port
            self.nodes.append(node)

    @property
    def url(self) -> str:
        """The `redis+cluster://` URL listing every node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> LocalCluster:
        try:
            for node in self.nodes:
                node.start()
            cli = shutil.which("redis-cli")
            if cli is None:
                raise RuntimeError("redis-cli is not on PATH: `apt-get install redis-tools`")
            subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{node.port}" for node in self.nodes),
                    "--cluster-replicas",
                    str(self.replicas),
                    "--cluster-yes",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=30,
            )
            _wait_for("the cluster to be ready", self.is_ready)
        except BaseException:
            self.stop()
            raise
        return self

    def is_ready(self) -> bool:
        """Every live node reports `cluster_state:ok` and the same slot map; every replica is in sync."""
        maps = set()
        for node in self.alive():
            with node.client() as client:
                if client.cluster("info")["cluster_state"] != "ok":
                    return False
                maps.add(_slot_map(client))
                role = client.info("replication")
                if role["role"] == "slave" and role["master_link_status"] != "up":
                    return False
        return len(maps) == 1

    def alive(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.process is not None]

    def primaries(self) -> list[RedisServer]:
        result = []
        for node in self.alive():
            with node.client() as client:
                if client.info("replication")["role"] == "master":
                    result.append(node)
        return result

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


class LocalSentinel:
    """One `redis-server --sentinel` on 127.0.0.1 watching `primary` as `service` (quorum 1)."""

    def __init__(
        self, directory: Path, primary: RedisServer, service: str = "mymaster", *, down_after_ms: int = 1000
    ) -> None:
        self.directory = directory
        self.down_after_ms = down_after_ms
        self.primary = primary
        self.service = service
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}/{db}"

    def start(self) -> LocalSentinel:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH: `apt-get install redis-server`")
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "sentinel.conf"
        config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.directory}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.service} {max(2000, 2 * self.down_after_ms)}\n"
        )
        self.process = subprocess.Popen(
            [binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            _wait_for("the sentinel to know the primary", self._knows_primary)
        except BaseException:
            self.kill()
            raise
        return self

    def _knows_primary(self) -> bool:
        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2) as client:
            address = client.sentinel_get_master_addr_by_name(self.service)
        return address is not None and int(address[1]) == self.primary.port

    def wait_for_replicas(self, count: int) -> None:
        """Block until the sentinel has discovered `count` replicas, so that it can fail over."""

        def known() -> bool:
            with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2) as client:
                return len(client.sentinel_slaves(self.service)) >= count

        _wait_for(f"the sentinel to discover {count} replicas", known)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
