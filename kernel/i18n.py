"""Technician-facing text in Vietnamese and English: gettext catalogues shipped in ``kernel/locale``.

``gettext_for("vi")`` loads ``kernel/locale/vi/LC_MESSAGES/kinhbac_edge.mo``; an unknown language
or a missing catalogue falls back to the English source text. ``N_`` marks a message for
extraction without translating it where it is defined.
"""

from __future__ import annotations

import gettext
from pathlib import Path

DOMAIN = "kinhbac_edge"
LOCALE_DIR = Path(__file__).with_name("locale")


def gettext_for(lang: str | None) -> gettext.NullTranslations:
    """The translations of ``lang`` (``"vi"``, ``"en"``); None or unknown gives the English text."""
    if not lang:
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, localedir=str(LOCALE_DIR), languages=[lang], fallback=True)


def N_(message: str) -> str:
    """Mark ``message`` for extraction; returns it unchanged."""
    return message


LANG_ENV = "KBE_LANG"


def env_lang() -> str | None:
    """The technician's language from ``KBE_LANG`` (``vi`` or ``en``); None when unset."""
    import os

    return os.environ.get(LANG_ENV) or None


def tr(message: str, lang: str | None = None) -> str:
    """``message`` translated into ``lang`` (default: :func:`env_lang`)."""
    return gettext_for(lang if lang is not None else env_lang()).gettext(message)
