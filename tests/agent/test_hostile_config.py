"""Hostile configs (issue 12): every one gets one clear line per problem and exit 2, never a traceback.

A corpus of what an outside tester threw at ``edge-agent config check``, then hypothesis over the
loader: random values anywhere in a site config, and random bytes as the whole file.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.cli import main
from agent.config import load_config, parse_config
from kernel.errors import ConfigError, StoreError
from sync.signing import generate_keypair
from sync.store import Store
from tests.certs import make_tls
from tests.conftest import agent_argv, agent_env

METER = {"driver": "modbus", "name": "m1", "profile": "eastron-sdm120", "unit": 1,
         "line": {"type": "tcp", "host": "127.0.0.1", "port": 502}}
GOOD: dict[str, Any] = {
    "site": {"id": "bn-ks-01", "name": "Khắc Niệm", "location": {"lat": 21.19, "lon": 106.08}},
    "devices": [METER],
    "store": {"path": "var/store.db"},
    "health": {"listen": None},
}

_ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
) + "site: {id: bomb, name: b, location: {lat: 1, lon: 1}}\n"


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    site_key, site_pub = generate_keypair(tmp_path / "keys", "site")
    _, centre_pub = generate_keypair(tmp_path / "keys", "centre")
    tls = make_tls(tmp_path / "pki")
    return {"key": site_key, "pub": site_pub, "centre": centre_pub, "ca": tls.ca, "cert": tls.client_cert,
            "tls_key": tls.client_key, "server_key": tls.server_key}


def _sync(keys: dict[str, Path], **over: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"broker": "mqtts://127.0.0.1:8883", "signing_key_file": str(keys["key"]),
                           "centre_public_keys": [str(keys["centre"])],
                           "tls": {"ca_file": str(keys["ca"]), "cert_file": str(keys["cert"]),
                                   "key_file": str(keys["tls_key"])}}
    out.update(over)
    return out


def _with(**sections: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(GOOD))
    data.update(sections)
    return data


def _case(name: str, tmp: Path, keys: dict[str, Path]) -> tuple[bytes, list[str]]:
    """(file content, fragments the one-line problems must contain)."""
    dump = lambda d: yaml.safe_dump(d, allow_unicode=True).encode()  # noqa: E731
    garbage = tmp / "garbage.pem"
    garbage.write_bytes(os.urandom(300))
    foreign = tmp / "thesis.docx"
    foreign.write_bytes(b"PK\x03\x04 my only copy")
    cases: dict[str, tuple[bytes, list[str]]] = {
        "driver-is-a-list": (dump(_with(devices=[{**METER, "driver": ["modbus"]}])),
                             ["devices[0].driver: ['modbus'] is not a known device kind"]),
        "alias-bomb": (_ALIAS_BOMB.encode(), ["alias bomb"]),
        "non-utf8": (b"site: {id: \xff\xfe\xfa}\n", ["not UTF-8"]),
        "10mb-random": (os.urandom(10 * 1024 * 1024), ["larger than"]),
        "deep-nesting": (b"[" * 100_000 + b"]" * 100_000, ["nesting deeper than 64"]),
        "profile-dev-zero": (dump(_with(devices=[{**METER, "profile": "/dev/zero"}])),
                             ["devices[0].profile: profile '/dev/zero': file is not a regular file"]),
        "health-port": (dump(_with(health={"listen": "127.0.0.1:99999"})),
                        ["health.listen: port 99999 in '127.0.0.1:99999' is not between 0 and 65535"]),
        "local-page-port": (dump(_with(local_page={"listen": "127.0.0.1:99999"})),
                            ["local_page.listen: port 99999 in '127.0.0.1:99999' is not between 0 and 65535"]),
        "broker-port": (dump(_with(sync=_sync(keys, broker="mqtts://127.0.0.1:99999"))),
                        ["sync.broker: port 99999"]),
        # Python's $ also matches before a final newline: a YAML block scalar ends with one
        "health-final-newline": (dump(_with(health={"listen": "127.0.0.1:8080\n"})),
                                 ["health.listen: '127.0.0.1:8080\\n' is not host:port"]),
        "broker-final-newline": (dump(_with(sync=_sync(keys, broker="mqtts://127.0.0.1:8883\n"))),
                                 ["sync.broker:"]),
        "inf-duration": (dump(_with(sync=_sync(keys))).replace(b"broker:", b"reconnect_max_s: .inf\n  broker:"),
                         ["sync.reconnect_max_s:"]),
        "store-on-foreign-file": (dump(_with(store={"path": str(foreign)})),
                                  ["store.path:", "is not an agent store", "refusing"]),
        "garbage-ca": (dump(_with(sync=_sync(keys, tls={"ca_file": str(garbage)}))),
                       ["sync.tls.ca_file:", "garbage.pem"]),
        "public-key-as-signing-key": (dump(_with(sync=_sync(keys, signing_key_file=str(keys["pub"])))),
                                      ["sync.signing_key_file:", "is a public key, but the signing key must be"]),
        "private-key-as-centre-key": (dump(_with(sync=_sync(keys, centre_public_keys=[str(keys["key"])]))),
                                      ["sync.centre_public_keys[0]:", "holds a private key"]),
        "tls-key-of-another-cert": (dump(_with(sync=_sync(keys, tls={"ca_file": str(keys["ca"]),
                                                                      "cert_file": str(keys["cert"]),
                                                                      "key_file": str(keys["server_key"])}))),
                                    ["sync.tls.cert_file:", "was not issued for the key in"]),
        "tls-with-plaintext-url": (dump(_with(sync=_sync(keys, broker="mqtt://127.0.0.1:1883"))),
                                   ["sync.broker:", "plaintext but a tls section is given"]),
        "plaintext-not-allowed": (dump(_with(sync=_sync(keys, broker="mqtt://127.0.0.1:1883", tls=None))),
                                  ["sync.broker:", "allow_plaintext: true"]),
        "no-centre-key": (dump(_with(sync={k: v for k, v in _sync(keys).items() if k != "centre_public_keys"})),
                          ["sync.centre_public_keys: required field is missing"]),
    }
    return cases[name]


CORPUS = ["driver-is-a-list", "alias-bomb", "non-utf8", "10mb-random", "deep-nesting", "profile-dev-zero",
          "health-port", "local-page-port", "broker-port", "health-final-newline", "broker-final-newline", "inf-duration", "store-on-foreign-file", "garbage-ca",
          "public-key-as-signing-key", "private-key-as-centre-key", "tls-key-of-another-cert",
          "tls-with-plaintext-url", "plaintext-not-allowed", "no-centre-key"]


@pytest.mark.parametrize("name", CORPUS)
def test_corpus_is_one_clear_line_per_problem_and_exit_2(name, tmp_path, keys, capsys):
    content, expected = _case(name, tmp_path, keys)
    path = tmp_path / "site.yaml"
    path.write_bytes(content)
    foreign_before = (tmp_path / "thesis.docx").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main(["config", "check", str(path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 5, err
    assert all(line.startswith(f"{path}: ") and len(line) < 400 for line in lines), err
    for fragment in expected:
        assert fragment in err, err
    # Nothing was moved or changed: the user's file stays where it was.
    assert (tmp_path / "thesis.docx").read_bytes() == foreign_before
    assert list(tmp_path.glob("thesis.docx.corrupt*")) == []


def test_deep_nesting_through_the_real_command_is_one_line(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_bytes(b"site: " + b"[" * 100_000 + b"]" * 100_000)
    out = subprocess.run(agent_argv("config", "check", str(path)), env=agent_env(), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == f"{path}: YAML refused: nesting deeper than 64 levels"


def test_a_store_on_a_foreign_file_is_refused_at_run_time_too(tmp_path):
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not a database")
    with pytest.raises(StoreError, match="is not an agent store"):
        Store(foreign, "bn-ks-01")
    assert foreign.read_text() == "not a database"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_relative_paths_resolve_against_the_config_folder(tmp_path, keys, monkeypatch):
    site_dir = tmp_path / "site"
    (site_dir / "profiles").mkdir(parents=True)
    shipped = Path(__file__).resolve().parents[2] / "drivers" / "modbus" / "profiles" / "eastron-sdm120.yaml"
    (site_dir / "profiles" / "mine.yaml").write_bytes(shipped.read_bytes())
    data = _with(devices=[{**METER, "profile": "profiles/mine.yaml"}], store={})
    (site_dir / "site.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)  # somewhere else
    cfg = load_config(site_dir / "site.yaml")
    assert Path(cfg.devices[0].profile) == site_dir / "profiles" / "mine.yaml"  # type: ignore[attr-defined]
    assert cfg.store.path == site_dir / "var" / "store.db"  # also the default


_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))


def _nest(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4))


_VALUE = st.recursive(_LEAF, _nest, max_leaves=15)
_PLACES = [("site",), ("site", "id"), ("site", "location"), ("devices",), ("devices", 0),
           ("devices", 0, "driver"), ("devices", 0, "line"), ("devices", 0, "line", "port"),
           ("devices", 0, "profile"), ("devices", 0, "poll"), ("devices", 0, "timeout_s"),
           ("devices", 0, "overrides"), ("store",), ("store", "path"), ("store", "max_bytes"), ("sync",),
           ("health",), ("health", "listen"), ("lighting",), ("traffic",), ("inference",), ("logging",),
           ("supervisor",), ("version",)]
_DRIVERS = ["modbus", "system", "lighting", "traffic", "camera", "pms", "sds011", "nmea", "gpio", "signals"]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(_PLACES), _VALUE, st.sampled_from(_DRIVERS))
def test_any_value_anywhere_is_a_config_error_or_a_config(place, value, driver):
    data = json.loads(json.dumps(GOOD))
    data["devices"][0]["driver"] = driver
    data["store"]["path"] = "/nonexistent-kbe-dir/store.db"
    node = data
    for key in place[:-1]:
        node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
    node[place[-1]] = value
    try:
        parse_config(data, "site.yaml", Path("/nonexistent-kbe-dir"))
    except ConfigError as exc:
        problems = exc.problems
    else:
        return
    assert problems  # any other exception fails the test by itself
    assert all("\n" not in p for p in problems), problems


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.binary(max_size=2000), st.text(max_size=2000).map(str.encode),
                 st.lists(st.sampled_from(["[", "{", "]", "}", ":", "-", " ", "\n", "&a", "*a", "!!", "'", '"',
                                           "site", "devices", "x"]), max_size=400).map(lambda p: "".join(p).encode())))
def test_any_bytes_as_the_file_are_a_config_error_or_a_config(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "site.yaml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as exc:
        problems = exc.problems
    else:
        return
    assert problems  # any other exception fails the test by itself
