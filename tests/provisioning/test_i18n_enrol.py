"""Every technician-facing message of enrolment, provision init and the site-level config checks has
its Vietnamese translation, and the Vietnamese is what a technician sees."""

from __future__ import annotations

import subprocess
from pathlib import Path

from babel.messages.extract import extract_from_file

from kernel.i18n import gettext_for
from tests.conftest import agent_argv, agent_env

REPO = Path(__file__).resolve().parents[2]
MODULES = ["sync/pki.py", "sync/config.py", "agent/config.py", "sync/enrol.py", "provisioning/identity.py"]


def test_every_message_has_its_vietnamese():
    vi = gettext_for("vi")
    messages = {
        msg
        for module in MODULES
        for _line, msg, _comments, _ctx in extract_from_file("python", REPO / module, keywords={"tr": None, "N_": None})
    }
    assert len(messages) >= 35
    missing = sorted(m for m in messages if vi.gettext(m) == m)
    assert not missing, f"no Vietnamese for: {missing}"
    assert gettext_for("en").gettext("it is empty") == "it is empty"


def test_config_check_and_provision_init_speak_vietnamese(tmp_path):
    run = subprocess.run(agent_argv("provision", "init", "--site", "bn-vi-01", "--lat", "21", "--lon", "106",
                                    "--dir", str(tmp_path / "s"), "--no-qr", "--lang", "vi"),
                         env=agent_env(), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "Trạm bn-vi-01: đã ghi danh tính vào" in run.stdout
    assert "Mã phiếu công việc (trạm và dấu vân tay khóa): bn-vi-01 " in run.stdout
    (tmp_path / "s" / "keys" / "ca.pem").write_text("")
    run = subprocess.run(agent_argv("config", "check", str(tmp_path / "s" / "site.yaml")),
                         env=agent_env(KBE_LANG="vi"), capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "sync.tls.ca_file: tệp " in run.stderr
    assert "không phải là chứng chỉ: tệp rỗng" in run.stderr
