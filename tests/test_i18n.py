"""Every technician-facing message of the scan, the checks, the report and the page has its
Vietnamese translation, and the shipped .mo is compiled from the current .po."""

from __future__ import annotations

import gettext
import io
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from kernel.i18n import LOCALE_DIR, Message, gettext_for

REPO = Path(__file__).resolve().parent.parent


def source_messages() -> set[str]:
    with open(REPO / "babel.cfg", encoding="utf-8") as f:
        method_map, options_map = parse_mapping_cfg(f)
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(REPO), method_map, options_map, keywords={"_": None, "N_": None, "gettext": None}
    ):
        found.add(message if isinstance(message, str) else message[0])
    return found


def vietnamese():
    with open(LOCALE_DIR / "vi" / "LC_MESSAGES" / "kinhbac_edge.po", "rb") as f:
        return read_po(f)


def test_every_message_has_its_vietnamese_translation():
    messages = source_messages()
    assert len(messages) > 80  # scan, checks, report and page are all extracted
    catalog = vietnamese()
    missing = sorted(
        m for m in messages if not (catalog.get(m) and catalog.get(m).string and not catalog.get(m).fuzzy)
    )
    assert not missing, "run `make i18n` and translate:\n" + "\n".join(missing)


def test_translations_keep_their_placeholders():
    for msg in vietnamese():
        if msg.id and msg.string:
            names = lambda s: sorted(p.split("}")[0].split(":")[0] for p in s.split("{")[1:])  # noqa: E731
            assert names(msg.id) == names(msg.string), msg.id


def test_shipped_mo_matches_the_po():
    buf = io.BytesIO()
    write_mo(buf, vietnamese())
    buf.seek(0)
    fresh = gettext.GNUTranslations(buf)
    shipped = gettext_for("vi")
    for msg in vietnamese():
        if msg.id:
            assert shipped.gettext(msg.id) == fresh.gettext(msg.id), "run `make i18n` to recompile"


def test_languages_and_fallback():
    m = Message("Device {device}", {"device": "meter-1"})
    assert m.render("vi") == "Thiết bị meter-1"
    assert m.render("en") == "Device meter-1"
    assert m.render(None) == "Thiết bị meter-1"  # Vietnamese by default
    assert m.render("fr") == "Device meter-1"  # no catalogue: the English source
