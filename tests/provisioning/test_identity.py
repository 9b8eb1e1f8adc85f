"""``provision init``: keys and CSR with the right modes and owner, a skeleton config check accepts,
a QR code and a work-order code that carry the site's key."""

from __future__ import annotations

import base64
import os
import pwd
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from PIL import Image

from agent.config import load_config
from kernel.errors import ConfigError
from provisioning import identity
from provisioning.centre.ca import ca_init
from sync.pki import fingerprint
from sync.signing import load_private_key, load_public_key
from tests.conftest import agent_argv, agent_env


def test_init_writes_an_identity_config_check_accepts(tmp_path):
    centre = ca_init(tmp_path / "centre")
    ident = identity.provision_init("bn-init-01", tmp_path / "site", name="Trạm Quế Võ", lat=21.15, lon=106.16,
                                    ca_file=centre.ca_cert, centre_key=centre.centre_pub, token="tok-123456789",
                                    store="var/store.db")
    keys = tmp_path / "site" / "keys"
    for name in ("site.key", "site-tls.key", "enrol.token"):
        assert (keys / name).stat().st_mode & 0o777 == 0o600, name
    assert keys.stat().st_mode & 0o777 == 0o700
    sk = load_private_key(ident.signing_key)
    assert load_public_key(ident.public_key) == sk.public_key()
    csr = x509.load_pem_x509_csr(ident.csr.read_bytes())
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string().startswith("O=kinhbac-edge,CN=bn-init-01")
    tls_key = serialization.load_pem_private_key(ident.tls_key.read_bytes(), None)
    assert csr.public_key() == tls_key.public_key()

    cfg = load_config(ident.config)  # as written: enrolment pending, config check accepts it
    assert cfg.site.name == "Trạm Quế Võ"
    assert cfg.sync is not None
    assert cfg.sync.enrol is not None

    # The work order: text code = site id + fingerprint; the QR carries the whole key.
    fp = fingerprint(sk.public_key())
    assert ident.code == f"bn-init-01 {fp}"
    fields = dict(part.split("=", 1) for part in ident.qr_text.split(";")[1:])
    raw = base64.urlsafe_b64decode(fields["key"] + "=")
    assert raw == sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert fields["fp"] == fp
    with Image.open(ident.qr_png) as img:
        assert img.size[0] == img.size[1] >= 100

    with pytest.raises(ConfigError, match="refusing to overwrite"):
        identity.provision_init("bn-init-01", tmp_path / "site", lat=21.0, lon=106.0)


def test_init_as_root_gives_the_files_to_the_service_user(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (the installer runs provision init as root)")
    ident = identity.provision_init("bn-init-02", tmp_path / "site", lat=21.0, lon=106.0,
                                    user="nobody")  # an account every Debian has
    nobody = pwd.getpwnam("nobody").pw_uid
    for p in (ident.signing_key, ident.tls_key, ident.csr, ident.config, ident.signing_key.parent):
        assert p.stat().st_uid == nobody, p


def test_cli_bad_site_id_is_one_line_exit_2(tmp_path):
    run = subprocess.run(agent_argv("provision", "init", "--site", "Bad Site!", "--lat", "21", "--lon", "106",
                                    "--dir", str(tmp_path / "s")), env=agent_env(), capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip() == "--site: 'Bad Site!' is not a valid site id (a-z, 0-9, . _ -; 63 at most)"


def test_commissioning_check_and_local_page_tell_where_enrolment_stands(tmp_path):
    from agent.commissioning.checks import FAIL, WARN, SiteState, check_certificate
    from agent.localpage.server import LocalPage

    ident = identity.provision_init("bn-init-03", tmp_path / "site", lat=21.0, lon=106.0, token="tok-123456789")
    (tmp_path / "site" / "keys" / "ca.pem").write_bytes(ca_init(tmp_path / "centre").ca_cert.read_bytes())
    (tmp_path / "site" / "keys" / "centre.pub").write_bytes((tmp_path / "centre" / "centre.pub").read_bytes())
    state = SiteState(load_config(ident.config), None, None, None)  # type: ignore[arg-type]
    result = check_certificate(state)
    assert result.status == WARN
    assert result.detail.render("en") == "The site is not enrolled yet; readings are buffered on site."
    (tmp_path / "site" / "keys" / "enrol.token").unlink()
    assert check_certificate(state).status == FAIL

    vi = identity.gettext_for("vi").gettext
    en = identity.gettext_for("en").gettext
    text = LocalPage._enrolment_text
    assert text(False, {"state": "refused", "last_refusal": "unknown token"}, en) == (
        "enrolment refused by the centre: unknown token")
    assert text(False, {"state": "refused", "last_refusal": "unknown token"}, vi) == (
        "trung tâm từ chối đăng ký: unknown token")
    assert text(False, {"state": "enrolling"}, en) == "enrolling (waiting for the centre's answer)"
    assert text(True, None, en) == "enrolled (mutual TLS)"
