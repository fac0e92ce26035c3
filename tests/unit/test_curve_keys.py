"""CURVE keys: the key files' layout, the ZAP decision, refusal logging, allow-list
reloads, the keyless exposure rules and handshake failure messages (pure parts)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import zmq
from zmq.utils import z85

from mesh import ConfigError
from mesh.config import COORDINATOR_SETTINGS, NODE_SETTINGS, resolve_settings
from mesh.time.clock import ManualClock
from mesh.transport.curve import Curve, security_note
from mesh.transport.exposure import (
    endpoint_host,
    exposure_error,
    is_loopback,
    route_source,
    wildcard_advertise,
)
from mesh.transport.handshake import describe_failure
from mesh.transport.keys import (
    generate_keys,
    generation_targets,
    load_pair,
    own_pair_names,
    server_key_paths,
)
from mesh.transport.zap import AllowList, RefusalLog, answer


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- key files ------------------------------------------------------------------------------


def test_generate_writes_pairs_public_keys_and_the_allow_list(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    written = generate_keys(keys, ["coordinator", "node", "client"])
    assert set(written) == set(generation_targets(keys, ["coordinator", "node", "client"]))
    assert sorted(p.name for p in keys.iterdir()) == [
        "client.key",
        "client.key_secret",
        "coordinator.key",
        "coordinator.key_secret",
        "node.key",
        "node.key_secret",
        "public",
    ]
    assert sorted(p.name for p in (keys / "public").iterdir()) == [
        "client.key",
        "coordinator.key",
        "node.key",
    ]
    for name in ("coordinator", "node", "client"):
        assert _mode(keys / f"{name}.key_secret") == 0o600
        public, secret = zmq.auth.load_certificate(keys / f"{name}.key_secret")
        assert secret is not None and len(z85.decode(secret)) == 32
        # the public key file and the allow-list copy hold the pair's public key only
        assert zmq.auth.load_certificate(keys / f"{name}.key") == (public, None)
        assert zmq.auth.load_certificate(keys / "public" / f"{name}.key") == (public, None)
        assert zmq.curve_public(secret) == public  # a real pair
    assert _mode(keys) == 0o700
    # three different pairs
    assert (
        len(
            {
                zmq.auth.load_certificate(keys / f"{n}.key")[0]
                for n in ("coordinator", "node", "client")
            }
        )
        == 3
    )


def test_generate_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    generate_keys(tmp_path, ["node"])
    before = (tmp_path / "node.key_secret").read_bytes()
    with pytest.raises(ConfigError, match=r"exist already.*--force"):
        generate_keys(tmp_path, ["node", "extra"])
    assert (tmp_path / "node.key_secret").read_bytes() == before
    assert not (tmp_path / "extra.key_secret").exists()  # nothing written at all
    generate_keys(tmp_path, ["node"], force=True)
    assert (tmp_path / "node.key_secret").read_bytes() != before
    assert _mode(tmp_path / "node.key_secret") == 0o600


@pytest.mark.parametrize("name", ["public", "../x", "a/b", "", "x.key", "-x"])
def test_key_names_must_be_plain_file_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="key name"):
        generate_keys(tmp_path, [name])


def test_which_pair_a_process_uses_and_where_server_keys_are_found(tmp_path: Path) -> None:
    assert own_pair_names("node", "node-7") == ["node-7", "node"]
    assert own_pair_names("node", None) == ["node"]
    assert own_pair_names("coordinator") == ["coordinator"]
    assert server_key_paths(tmp_path, "node-7", "node") == [
        tmp_path / "node-7.key",
        tmp_path / "public" / "node-7.key",
        tmp_path / "node.key",
        tmp_path / "public" / "node.key",
    ]
    generate_keys(tmp_path, ["node", "node-7"])
    assert load_pair(tmp_path, ["node-7", "node"]).name == "node-7"
    assert load_pair(tmp_path, ["node-8", "node"]).name == "node"
    with pytest.raises(ConfigError, match=r"no key pair.*coordinator.key_secret"):
        load_pair(tmp_path, ["coordinator"])
    curve = Curve.load(tmp_path, ["node"], serve=False)
    node_7 = zmq.auth.load_certificate(tmp_path / "node-7.key")[0]
    shared = zmq.auth.load_certificate(tmp_path / "node.key")[0]
    assert curve.server_key(["node-7", "node"]) == node_7
    assert curve.server_key(["node-8", "node"]) == shared
    with pytest.raises(ConfigError, match="no public key"):
        curve.server_key(["coordinator"])
    # only public keys on a client host: found in public/ too
    (tmp_path / "node-7.key").unlink()
    assert curve.server_key(["node-7", "node"]) == node_7


def test_a_daemon_needs_a_non_empty_allow_list(tmp_path: Path) -> None:
    generate_keys(tmp_path, ["coordinator"])
    for key in (tmp_path / "public").iterdir():
        key.unlink()
    with pytest.raises(ConfigError, match=r"no public keys in .*public"):
        Curve.load(tmp_path, ["coordinator"], serve=True)
    assert Curve.load(tmp_path, ["coordinator"], serve=False).allow is None  # a client's


# -- the ZAP decision -----------------------------------------------------------------------


def _request(
    key: bytes | None, mechanism: bytes = b"CURVE", version: bytes = b"1.0"
) -> list[bytes]:
    frames = [version, b"7", b"mesh", b"10.1.2.3", b"", mechanism]
    return frames + ([key] if key is not None else [])


def test_zap_lets_in_allowed_curve_keys_only() -> None:
    good_public, _ = zmq.curve_keypair()
    bad_public, _ = zmq.curve_keypair()
    allowed = frozenset({good_public})

    ok = answer(_request(z85.decode(good_public)), allowed)
    assert ok.reply == [b"1.0", b"7", b"200", b"OK", good_public, b""] and ok.refused is None

    no = answer(_request(z85.decode(bad_public)), allowed)
    assert no.reply[:3] == [b"1.0", b"7", b"400"] and no.reply[4] == b""
    assert (no.address, no.key, no.refused) == ("10.1.2.3", bad_public.decode(), "key not allowed")

    for request in (
        _request(None, b"NULL"),
        _request(b"user", b"PLAIN"),
        _request(z85.decode(good_public), version=b"2.0"),
        [b"1.0", b"7"],
    ):
        refused = answer(request, allowed)
        assert refused.reply[2] == b"400" and refused.refused, request


def test_refusals_are_logged_once_a_minute_per_address_and_key() -> None:
    clock = ManualClock()
    refusals = RefusalLog(clock)
    assert refusals.should_log("10.0.0.1", "K") == (True, 0)
    assert refusals.should_log("10.0.0.1", "K") == (False, 1)
    assert refusals.should_log("10.0.0.1", "K") == (False, 2)
    assert refusals.should_log("10.0.0.2", "K") == (True, 0)  # another address
    clock.advance(60_000)
    assert refusals.should_log("10.0.0.1", "K") == (True, 2)  # says how many were quiet
    assert refusals.refused == 5


def test_the_allow_list_reloads_and_keeps_the_old_keys_on_an_error(tmp_path: Path) -> None:
    generate_keys(tmp_path, ["coordinator", "client"])
    (tmp_path / "public" / "client.key").unlink()
    allow = AllowList(tmp_path / "public")
    client = zmq.auth.load_certificate(tmp_path / "client.key")[0]
    assert client not in allow.keys and len(allow.keys) == 1
    (tmp_path / "public" / "client.key").write_bytes((tmp_path / "client.key").read_bytes())
    assert allow.reload() and client in allow.keys
    (tmp_path / "public" / "broken.key").write_text("curve\n")
    assert not allow.reload() and client in allow.keys and len(allow.keys) == 2


# -- without keys: loopback only ----------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("*", False),
        ("[::]", False),
        ("10.0.0.5", False),
        ("db.example.com", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    error = exposure_error("listen on", host, keys=False, insecure=False)
    assert (error is None) is loopback
    assert exposure_error("listen on", host, keys=True, insecure=False) is None
    assert exposure_error("listen on", host, keys=False, insecure=True) is None


def test_the_refusal_says_why_in_one_line() -> None:
    error = exposure_error(
        "listen on", endpoint_host("tcp://0.0.0.0:5550"), keys=False, insecure=False
    )
    assert error is not None and "\n" not in error
    assert "every interface (0.0.0.0)" in error and "--keys" in error and "--insecure" in error


def test_a_wildcard_is_never_advertised() -> None:
    for host in ("0.0.0.0", "*", "::", "[::]"):
        assert wildcard_advertise(host) is not None
    assert wildcard_advertise("10.0.0.5") is None
    # bound to every interface: the address that reaches the coordinator is advertised
    assert route_source("tcp://127.0.0.1:5550") == "127.0.0.1"


def test_keys_and_insecure_come_from_flags_env_and_files(tmp_path: Path) -> None:
    for settings, role in ((COORDINATOR_SETTINGS, "coordinator"), (NODE_SETTINGS, "node")):
        default = resolve_settings(settings, role, flags={}, env={})
        assert default["keys"] is None and default["insecure"] is False
        env = {"MESH_KEYS": "~/k", "MESH_INSECURE": "1"}
        from_env = resolve_settings(settings, role, flags={}, env=env)
        assert from_env["keys"] == Path("~/k").expanduser() and from_env["insecure"] is True
        toml = tmp_path / f"{role}.toml"
        toml.write_text(f'[{role}]\nkeys = "/etc/mesh/keys"\ninsecure = true\n')
        from_file = resolve_settings(settings, role, flags={}, env={}, config_file=toml)
        assert from_file["keys"] == Path("/etc/mesh/keys") and from_file["insecure"] is True
        with pytest.raises(ConfigError, match=r"insecure = 'maybe' .*MESH_INSECURE"):
            resolve_settings(settings, role, flags={}, env={"MESH_INSECURE": "maybe"})


def test_handshake_failures_are_explained() -> None:
    what = "the coordinator at tcp://10.0.0.1:5550"
    refused = describe_failure(zmq.EVENT_HANDSHAKE_FAILED_AUTH, what)
    assert refused.startswith(f"{what} did not accept this client's key") and "--keys" in refused
    assert "server key" in describe_failure(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, what)
    assert "without --keys" in describe_failure(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, what)
    silent = describe_failure(None, what, "node")
    assert "this node's key" in silent and "not running" in silent and "--keys" in silent
    assert security_note(None) == "no keys: only for one trusted machine"
