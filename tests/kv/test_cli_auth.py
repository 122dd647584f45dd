"""``raft-engine node --client-password-file``: the flag, the TOML key, and a node process that
makes its clients AUTH."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from engine.cli import build_parser, main, node_settings

from .test_cli import env, processes, write  # noqa: F401 - processes is a fixture
from .util import LIVENESS, free_ports, wait_until

NODE = ["node", "--id", "n1", "--peers", "n1=127.0.0.1:7001", "--client", "127.0.0.1:6401"]


def test_flag_and_toml_key(tmp_path: Path) -> None:
    password = write(tmp_path / "password", "pw\n")
    args = build_parser().parse_args([*NODE, "--client-password-file", password])
    assert node_settings(args)["client_password_file"] == password
    config = write(tmp_path / "node.toml", f"""
        id = "n1"
        client = "127.0.0.1:6401"
        client-password-file = "{password}"
        [peers]
        n1 = "127.0.0.1:7001"
    """)
    settings = node_settings(build_parser().parse_args(["node", "--config", config]))
    assert settings["client_password_file"] == password


@pytest.mark.parametrize("text, message", [("", "is empty"), (None, "No such file")])
def test_unusable_password_file_exits_2(tmp_path: Path, text: str | None, message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "password"
    if text is not None:
        path.write_text(text)
    assert main([*NODE, "--client-password-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert "--client-password-file" in err and message in err


def test_node_process_requires_auth(tmp_path: Path,
                                    processes: list[subprocess.Popen[bytes]]) -> None:  # noqa: F811
    raft_port, client_port = free_ports(2)
    password = write(tmp_path / "password", "s3cret pass\n")
    log = open(tmp_path / "node.log", "wb")  # noqa: SIM115 - closed below
    with log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "node", "--id", "n1", "--peers",
             f"n1=127.0.0.1:{raft_port}", "--client", f"127.0.0.1:{client_port}",
             "--client-password-file", password], stdout=log, stderr=subprocess.STDOUT,
            env=env())
    processes.append(proc)
    good = redis.Redis(port=client_port, password="s3cret pass", socket_timeout=LIVENESS)
    anonymous = redis.Redis(port=client_port, protocol=2, socket_timeout=LIVENESS)
    try:
        def leads() -> bool:
            try:
                return good.info("raft")["raft_role"] == "leader"
            except redis.ConnectionError:
                return False
        wait_until(leads, what="the single node leads")
        assert good.set("k", "v") is True
        assert good.get("k") == b"v"
        with pytest.raises(redis.AuthenticationError):
            anonymous.get("k")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=client_port, password="wrong", socket_timeout=LIVENESS).ping()
        # The admin commands AUTH first with --password-file, and fail clearly without it.
        address = f"127.0.0.1:{client_port}"
        assert main(["status", address, "--node", "--password-file", password]) == 0
        assert main(["status", address, "--password-file", password, "--json"]) == 0
        assert main(["snapshot", address, "--password-file", password]) == 0
        assert main(["status", address, "--node"]) == 1
    finally:
        good.close()
        anonymous.close()
