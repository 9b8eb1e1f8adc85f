"""The centre's side of enrolment, in process: tokens (unknown, used, expired, other site refused and
logged), CSR signing, key registration, signed answers; and the agent refusing a doubtful answer."""

from __future__ import annotations

import logging

import pytest
import yaml
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import load_config
from kernel.errors import ConfigError, SignatureError, SyncError
from provisioning import identity
from provisioning.centre.ca import CentreFiles, ca_init, issue
from provisioning.centre.service import EnrolService
from provisioning.centre.tokens import TokenBook, parse_ttl
from sync.enrol import Enroller, EnrolReply, EnrolRequest, open_reply, open_request, pack_signed
from sync.signing import Signer, SiteRegistry, load_public_key
from sync.wire import WireError

SITE = "bn-centre-01"


@pytest.fixture
def centre(tmp_path):
    return ca_init(tmp_path / "centre")


def site_request(tmp_path, centre: CentreFiles, token: str, site: str = SITE, name: str = "site") -> tuple[bytes, Enroller]:
    ident = identity.provision_init(site, tmp_path / name, lat=21.0, lon=106.0, ca_file=centre.ca_cert,
                                    centre_key=centre.centre_pub, token=token, broker="mqtts://127.0.0.1:1",
                                    enrol_broker="mqtts://127.0.0.1:2", store="var/store.db")
    cfg = load_config(ident.config)
    assert cfg.sync is not None
    enroller = Enroller(cfg.sync, site, Signer.from_file(ident.signing_key))
    return enroller._request(), enroller


def test_tokens_refuse_unknown_used_expired_and_other_site(tmp_path):
    book = TokenBook(tmp_path / "tokens.json")
    tok = book.new(SITE, 60, now=1000.0)
    assert tok not in (tmp_path / "tokens.json").read_text(), "only the hash is stored"
    assert (tmp_path / "tokens.json").stat().st_mode & 0o777 == 0o600
    assert book.check("nope-nope-nope", SITE, "k1", now=1001).reason == "unknown token"
    assert book.check(tok, "bn-other", "k1", now=1001).reason == f"token is for another site ({SITE})"
    assert book.check(tok, SITE, "k1", now=1060).reason.startswith("token expired at")
    assert book.use(tok, SITE, "k1", "CERT", now=1001).ok
    assert book.use(tok, SITE, "k2", "CERT2", now=1002).reason.startswith("token already used at")
    again = book.check(tok, SITE, "k1", now=1003)  # the same key asking again: its answer was lost
    assert again.ok
    assert again.certificate == "CERT"


@given(st.text(max_size=12))
@settings(max_examples=200, deadline=None)
def test_ttl_parser_gives_seconds_or_one_named_problem(text):
    try:
        seconds, problem = parse_ttl(text), ""
    except ConfigError as exc:
        seconds, problem = 0.0, exc.problems[0]
    assert seconds > 0 or problem.startswith(repr(text))


def test_service_signs_registers_answers_and_refuses_a_second_use(tmp_path, centre, caplog):
    sites = tmp_path / "rx" / "sites.yaml"
    sites.parent.mkdir()
    service = EnrolService(centre, sites)
    token = TokenBook(centre.tokens).new(SITE, 3600)
    frame, enroller = site_request(tmp_path, centre, token)
    centre_key = load_public_key(centre.centre_pub)

    reply = open_reply(service.handle(f"kbe/enrol/{SITE}/request", frame), [centre_key])
    assert reply.status == "ok"
    cert = x509.load_pem_x509_certificate(reply.certificate.encode())
    assert cert.subject.rfc4514_string() == f"CN={SITE}"
    registry = SiteRegistry.load(sites)
    assert registry.keys_for(SITE) == [enroller.signer.public_key()]
    assert enroller._accept(service.handle(f"kbe/enrol/{SITE}/request", frame), [centre_key])  # repeated: same cert
    assert enroller.cert_file.read_text() == reply.certificate
    assert not enroller.enrol.token_file.exists()

    other_frame, other = site_request(tmp_path, centre, token, name="thief")
    with caplog.at_level(logging.WARNING, logger="kbe.enrol.centre"):
        refused = open_reply(service.handle(f"kbe/enrol/{SITE}/request", other_frame), [centre_key])
        unknown = open_reply(service.handle(f"kbe/enrol/{SITE}/request",
                                            site_request(tmp_path, centre, "made-up-token", name="x")[0]), [centre_key])
    assert refused.status == "refused"
    assert refused.reason.startswith("token already used")
    assert unknown.reason == "unknown token"
    assert f"enrolment of site {SITE} REFUSED: token already used" in caplog.text
    assert f"enrolment of site {SITE} REFUSED: unknown token" in caplog.text
    assert not other._accept(service.handle(f"kbe/enrol/{SITE}/request", other_frame), [centre_key])
    assert other.state == "refused"
    assert not other.cert_file.exists()
    assert len(yaml.safe_load(sites.read_text())["sites"][SITE]["public_keys"]) == 1
    assert service.counters["refused"] == 3


def test_a_request_on_another_sites_topic_or_badly_signed_is_refused(tmp_path, centre):
    service = EnrolService(centre, tmp_path / "sites.yaml")
    token = TokenBook(centre.tokens).new(SITE, 3600)
    frame, _ = site_request(tmp_path, centre, token)
    reply = open_reply(service.handle("kbe/enrol/bn-victim/request", frame), [load_public_key(centre.centre_pub)])
    assert reply.reason == f"request for {SITE!r} on the topic of 'bn-victim'"
    tampered = frame.replace(b"kinhbac", b"kinhbaX") if b"kinhbac" in frame else frame[:-3] + b"xyz"
    assert service.handle(f"kbe/enrol/{SITE}/request", tampered) is None
    assert service.counters["malformed"] == 1


def test_agent_refuses_answers_not_from_the_centre_or_for_another_key(tmp_path, centre):
    token = TokenBook(centre.tokens).new(SITE, 3600)
    _, enroller = site_request(tmp_path, centre, token)
    enroller._request()
    centre_key = load_public_key(centre.centre_pub)
    # A certificate from the right CA but for another key.
    cert_path, _ = issue(centre, SITE, tmp_path / "other")
    wrong = EnrolReply(site_id=SITE, nonce=enroller._nonce, status="ok", certificate=cert_path.read_text())
    with pytest.raises(SyncError, match="not for this site's TLS key"):
        enroller._install(wrong.certificate.encode())
    # Signed by someone else than the centre: ignored.
    rogue = ca_init(tmp_path / "rogue")
    forged = pack_signed(wrong, Signer.from_file(rogue.centre_key))
    with pytest.raises(SignatureError):
        open_reply(forged, [centre_key])
    assert not enroller._accept(forged, [centre_key])
    assert not enroller.cert_file.exists()


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_enrolment_frames_from_any_bytes_fail_cleanly(data):
    for opener in (open_request, lambda d: open_reply(d, [])):
        try:
            opener(data)
        except (WireError, SignatureError):
            pass


def test_request_model_refuses_a_bad_site_id():
    with pytest.raises(ValueError, match="site_id"):
        EnrolRequest(site_id="Bad/Site", nonce="12345678", token="12345678", public_key="", csr="")


def test_a_csr_with_a_weak_key_is_refused(tmp_path, centre):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    from provisioning.centre.ca import sign_site_csr

    key = rsa.generate_private_key(65537, 1024)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SITE)])).sign(key, hashes.SHA256()))
    with pytest.raises(SignatureError, match="RSA 1024 bits is too small"):
        sign_site_csr(centre, csr, SITE)


def test_a_registry_write_that_fails_after_the_token_is_spent_is_done_by_the_next_request(tmp_path, centre, monkeypatch):
    from provisioning.centre import service as service_mod

    sites = tmp_path / "sites.yaml"
    service = EnrolService(centre, sites)
    token = TokenBook(centre.tokens).new(SITE, 3600)
    frame, enroller = site_request(tmp_path, centre, token)
    real = service_mod.register_site_key
    calls = []

    def failing_once(*args):
        calls.append(args)
        if len(calls) == 1:
            raise OSError("disk full")
        return real(*args)

    monkeypatch.setattr(service_mod, "register_site_key", failing_once)
    with pytest.raises(OSError):
        service.handle(f"kbe/enrol/{SITE}/request", frame)  # no answer: the site asks again
    assert not sites.exists()
    again = open_reply(service.handle(f"kbe/enrol/{SITE}/request", enroller._request()),
                       [load_public_key(centre.centre_pub)])
    assert again.status == "ok"
    assert SiteRegistry.load(sites).keys_for(SITE) == [enroller.signer.public_key()]
    assert service.counters["repeated"] == 1
