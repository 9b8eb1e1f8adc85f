"""``config check`` catches what fails on site (issue 10 item 6): garbage certificate files, a public
key given as the signing key, two devices at one unit id on one line, one port with two baud rates,
two drivers on one serial port; every problem at once, one line each, exit 2, no traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import load_config
from kernel.errors import ConfigError
from sync.pki import check_cert_file, pem_kind
from sync.signing import generate_keypair
from tests.certs import make_tls
from tests.conftest import agent_argv, agent_env


def modbus(name: str, unit: int, port: str = "/dev/ttyUSB0", baud: int = 9600) -> dict:
    return {"driver": "modbus", "name": name, "profile": "eastron-sdm120", "unit": unit,
            "line": {"type": "serial", "port": port, "baudrate": baud}}


def site(tmp_path: Path, devices: list[dict], sync: dict | None = None) -> Path:
    doc: dict = {"site": {"id": "bn-check-01", "name": "check", "location": {"lat": 21.0, "lon": 106.0}},
                 "devices": devices, "store": {"path": "var/store.db"}}
    if sync is not None:
        doc["sync"] = sync
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return exc.value.problems


def test_shared_line_problems_are_each_named(tmp_path):
    devices = [
        modbus("meter-a", 1),
        modbus("meter-b", 1),                             # same unit id, same line
        modbus("meter-c", 2, baud=19200),                 # same port, another baud rate
        {"driver": "pms", "name": "dust", "line": {"type": "serial", "port": "/dev/ttyUSB0", "baudrate": 9600}},
        modbus("meter-d", 1, port="/dev/ttyUSB1"),        # unit 1 on another line is fine
        {**modbus("meter-e", 1), "enabled": False},       # a disabled device holds no port
    ]
    got = problems(site(tmp_path, devices))
    assert got == [
        "devices[1].unit: two devices at unit id 1 on /dev/ttyUSB0: meter-b and meter-a (they would answer together)",
        "devices[2].line.baudrate: one port, two settings: /dev/ttyUSB0 is set to baudrate 19200 here and 9600 by meter-a",
        "devices[3].line: two drivers on one port: /dev/ttyUSB0 is already used by meter-a (modbus), so dust (pms) needs its own port",
    ]


def test_two_streaming_sensors_on_one_port_are_refused(tmp_path):
    line = {"type": "serial", "port": "/dev/ttyAMA0", "baudrate": 9600}
    got = problems(site(tmp_path, [{"driver": "sds011", "name": "a", "line": line},
                                   {"driver": "sds011", "name": "b", "line": line}]))
    assert got == ["devices[1].line: two drivers on one port: /dev/ttyAMA0 is already used by a (sds011), "
                   "so b (sds011) needs its own port"]


def sync_section(keys: Path, tls: dict) -> dict:
    _centre_key, centre_pub = generate_keypair(keys.parent, "centre")
    return {"broker": "mqtts://127.0.0.1:8883", "tls": tls, "signing_key_file": str(keys),
            "centre_public_keys": [str(centre_pub)]}


def test_garbage_certificates_and_a_public_signing_key_all_at_once(tmp_path):
    pki = make_tls(tmp_path / "pki")
    _key, pub = generate_keypair(tmp_path / "keys")
    garbage = tmp_path / "ca.pem"
    garbage.write_text("this is the shop's invoice, not a certificate\n")
    tls = {"ca_file": str(garbage), "cert_file": str(pki.client_key), "key_file": str(pki.client_key)}
    path = site(tmp_path, [modbus("m1", 5), modbus("m2", 5)], sync_section(pub, tls))
    got = problems(path)
    assert f"sync.tls.ca_file: file {str(garbage)!r} is not a certificate: it is not PEM text (no -----BEGIN CERTIFICATE----- block)" in got
    assert f"sync.tls.cert_file: file {str(pki.client_key)!r} is not a certificate: it holds a private key, not a certificate" in got
    assert (f"sync.signing_key_file: file {str(pub)!r} is a public key, but the signing key must be the site's "
            "private key (site.key)") in got
    assert any(p.startswith("devices[1].unit: two devices at unit id 5") for p in got), got
    assert len(got) == 4

    # From the command line: one line per problem, exit 2, no traceback.
    run = subprocess.run(agent_argv("config", "check", str(path)), env=agent_env(), capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 4


def test_certificate_for_another_key_expired_and_csr_instead_of_certificate(tmp_path):
    pki = make_tls(tmp_path / "pki", extra_clients=("other",))
    key, _ = generate_keypair(tmp_path / "keys")
    tls = {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.ca.parent / "other.key")}
    got = problems(site(tmp_path, [], sync_section(key, tls)))
    assert got == [f"sync.tls.cert_file: certificate {str(pki.client_cert)!r} was not issued for the key in "
                   f"{str(pki.ca.parent / 'other.key')!r}"]
    csr = tmp_path / "site.csr"
    csr.write_text("-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n")
    with pytest.raises(ValueError, match="certificate request"):
        check_cert_file(csr)
    import datetime as dt
    with pytest.raises(ValueError, match="expired on"):
        check_cert_file(pki.ca, now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30))


def test_missing_certificate_without_enrolment_says_what_to_do(tmp_path):
    pki = make_tls(tmp_path / "pki")
    key, _ = generate_keypair(tmp_path / "keys")
    tls = {"ca_file": str(pki.ca), "cert_file": str(tmp_path / "site.crt"), "key_file": str(pki.client_key)}
    got = problems(site(tmp_path, [], sync_section(key, tls)))
    assert got == [f"sync.tls.cert_file: file {str(tmp_path / 'site.crt')!r} does not exist (enrol the site, or add "
                   "a sync.enrol section)"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_any_bytes_as_a_certificate_give_one_named_problem(tmp_path, data):
    path = tmp_path / "any.pem"
    path.write_bytes(data)
    message = ""
    try:
        check_cert_file(path)
    except ValueError as exc:
        message = str(exc)
    assert str(path) in message or pem_kind(data) == "certificate"
