"""The README's "Running a real site" path end to end, against a real Mosquitto with TLS.

Centre: ``centre ca init``, the broker's server certificate and the centre's client certificate
from that CA, a one-time token, the enrolment service and a receiver whose site registry starts
empty. Site: ``provision init``, ``config check`` (accepted as written), ``run``. The broker has
an mTLS listener (client certificate CN = MQTT user, ACL) and an enrolment listener (TLS without
a client certificate; the ACL opens only the enrolment topics to it), as docs/operations.md says.
Checked: the agent enrols by itself, ends on mTLS, the receiver stores its readings without a
restart; the token works once and a second use is refused and logged at the centre.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml

from agent.config import load_config
from hil.procs import agent_argv
from sync.enrol import Enroller
from sync.signing import Signer
from tests.brokers import Mosquitto
from tests.certs import TlsFiles
from tests.conftest import agent_env, free_port
from tests.sync.conftest import query

SITE = "bn-enrol-01"

ACL = """\
# Un-enrolled clients (enrolment listener, no certificate, no user): the enrolment topics only.
topic write kbe/enrol/+/request
topic read kbe/enrol/+/reply
# Enrolled sites: client certificate CN = site id = MQTT user.
pattern write kbe/%u/up/#
pattern write kbe/%u/status
pattern read kbe/%u/down/#
# The centre: receivers and the enrolment service.
user kbe-centre
topic read kbe/+/up/#
topic read kbe/+/status
topic write kbe/+/down/#
topic read kbe/enrol/+/request
topic write kbe/enrol/+/reply
"""


def cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(agent_argv(*args), cwd=cwd, env=agent_env(), capture_output=True, text=True, timeout=60)
    if check:
        assert run.returncode == 0, f"{args}: {run.stdout}\n{run.stderr}"
    return run


def wait_for(cond, timeout: float, what: str, logs: tuple[Path, ...] = ()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out: {what}\n{tails}")


def spawn(argv: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        return subprocess.Popen(argv, cwd=cwd, env=agent_env(), stdout=f, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_real_site_path_enrols_once_and_ends_on_mtls(tmp_path):
    centre, pki = tmp_path / "centre", tmp_path / "pki"
    cli("centre", "ca", "init", "--dir", str(centre), cwd=tmp_path)
    cli("centre", "ca", "issue", "--dir", str(centre), "--cn", "localhost", "--host", "127.0.0.1", "--host", "localhost",
        "--out", str(pki), cwd=tmp_path)
    cli("centre", "ca", "issue", "--dir", str(centre), "--cn", "kbe-centre", "--out", str(pki), cwd=tmp_path)
    token = cli("centre", "token", "new", "--dir", str(centre), "--site", SITE, "--ttl", "1h", cwd=tmp_path).stdout.strip()

    acl = tmp_path / "broker.acl"
    acl.write_text(ACL)
    tls = TlsFiles(centre / "ca.pem", pki / "localhost.pem", pki / "localhost.key", pki / "kbe-centre.pem",
                   pki / "kbe-centre.key")
    enrol_port = free_port()
    extra = [
        "use_identity_as_username true",  # the mTLS listener above: certificate CN = user
        f"acl_file {acl}",
        f"listener {enrol_port} 127.0.0.1",  # the enrolment listener: TLS, no client certificate
        f"cafile {tls.ca}", f"certfile {tls.server_cert}", f"keyfile {tls.server_key}",
        "tls_version tlsv1.2", "require_certificate false",
    ]
    sites = tmp_path / "sites.yaml"
    sites.write_text("sites: {}\n")
    centre_tls = ["--ca-file", str(tls.ca), "--cert-file", str(tls.client_cert), "--key-file", str(tls.client_key)]
    db = tmp_path / "centre.db"
    procs: list[subprocess.Popen[bytes]] = []
    with Mosquitto(tmp_path / "broker", tls=tls, require_certificate=True, extra_conf=extra) as broker:
        try:
            rx_log, svc_log, agent_log = tmp_path / "rx.log", tmp_path / "enrol.log", tmp_path / "agent.log"
            # The receiver signs acks with the centre's key: the one whose public half provision init gives the site.
            rx = spawn(agent_argv("receiver", "--broker", broker.url, "--db", f"sqlite:///{db}", "--sites", str(sites),
                                  "--signing-key", str(centre / "centre.key"), "--client-id", "kbe-centre",
                                  *centre_tls), rx_log, tmp_path)
            procs.append(rx)
            procs.append(spawn(agent_argv("centre", "enrol", "--dir", str(centre), "--broker", broker.url,
                                          "--sites", str(sites), "--client-id", "kbe-centre-enrol", *centre_tls),
                               svc_log, tmp_path))

            # The technician on site.
            site = tmp_path / "site"
            out = cli("provision", "init", "--site", SITE, "--name", "Trạm thử", "--lat", "21.15", "--lon", "106.16",
                      "--dir", str(site), "--ca", str(centre / "ca.pem"), "--centre-key", str(centre / "centre.pub"),
                      "--token", token, "--broker", broker.url, "--enrol-broker", f"mqtts://127.0.0.1:{enrol_port}",
                      "--store", "var/store.db", "--no-qr", "--lang", "en", cwd=tmp_path).stdout
            assert SITE in out
            assert (site / "workorder-qr.png").stat().st_size > 100
            config = site / "site.yaml"
            assert "ok (site bn-enrol-01" in cli("config", "check", str(config), cwd=tmp_path).stdout
            for f in ("site.key", "site-tls.key", "enrol.token"):
                assert (site / "keys" / f).stat().st_mode & 0o077 == 0, f
            # The devices the technician adds (a board sensor here), a free health port.
            doc = yaml.safe_load(config.read_text())
            doc["devices"] = [{"driver": "system", "name": "board", "period_s": 1}]
            health = free_port()
            doc["health"] = {"listen": f"127.0.0.1:{health}"}
            doc["sync"].update(reconnect_min_s=0.2, reconnect_max_s=2.0, batch={"max_age_s": 0.2})
            doc["sync"]["enrol"]["retry_s"] = 2
            config.write_text(yaml.safe_dump(doc, allow_unicode=True))
            assert cli("config", "check", str(config), cwd=tmp_path).returncode == 0

            # Buffer first: the broker's enrolment listener is up, the centre's service answers.
            agent = spawn(agent_argv("run", "--config", str(config)), agent_log, site)
            procs.append(agent)
            logs = (agent_log, svc_log, rx_log)
            wait_for(lambda: (site / "keys" / "site.crt").exists(), 60, "certificate installed", logs)
            assert not (site / "keys" / "enrol.token").exists(), "the used token stays on the device"

            def seqs() -> list[int]:
                rows = query(f"sqlite:///{db}", f"SELECT seq FROM readings WHERE site_id = '{SITE}' ORDER BY seq")
                return [int(r[0]) for r in rows]

            # What was acquired while enrolling was buffered and follows: every seq from 1, no gap.
            wait_for(lambda: len(seqs()) >= 3 and seqs() == list(range(1, len(seqs()) + 1)), 60,
                     "readings stored at the centre over mTLS, from seq 1 without a gap", logs)
            assert rx.poll() is None, "the receiver was not restarted"
            assert "site registry" in rx_log.read_text()
            assert SITE in rx_log.read_text()
            with urllib.request.urlopen(f"http://127.0.0.1:{health}/health", timeout=5) as resp:
                report = json.loads(resp.read())
            assert report["enrolment"]["state"] == "enrolled"
            assert report["sync"]["connected"] is True
            assert rx.poll() is None
            assert agent.poll() is None
            # The enrolled config, token gone and certificate present, still passes config check.
            assert cli("config", "check", str(config), cwd=tmp_path).returncode == 0

            # Second use of the same token, by another device claiming the site: refused, logged.
            other = tmp_path / "other"
            cli("provision", "init", "--site", SITE, "--lat", "21", "--lon", "106", "--dir", str(other), "--ca", str(centre / "ca.pem"),
                "--centre-key", str(centre / "centre.pub"), "--token", token, "--broker", broker.url,
                "--enrol-broker", f"mqtts://127.0.0.1:{enrol_port}", "--store", "var/store.db", "--no-qr",
                cwd=tmp_path)
            cfg = load_config(other / "site.yaml")
            assert cfg.sync is not None
            enroller = Enroller(cfg.sync, SITE, Signer.from_file(cfg.sync.signing_key_file))

            async def attempt() -> None:
                task = asyncio.create_task(enroller.run())
                deadline = time.monotonic() + 20
                while enroller.state != "refused" and time.monotonic() < deadline and not task.done():
                    await asyncio.sleep(0.1)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

            asyncio.run(attempt())
            assert enroller.state == "refused"
            assert "already used" in enroller.last_refusal
            assert not (other / "keys" / "site.crt").exists()
            wait_for(lambda: "REFUSED: token already used" in svc_log.read_text(), 10, "refusal logged", logs)
            assert len(yaml.safe_load(sites.read_text())["sites"][SITE]["public_keys"]) == 1
        finally:
            for p in reversed(procs):
                stop(p)
