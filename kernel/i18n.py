"""Technician-facing text in Vietnamese and English through gettext catalogues.

Catalogues live in ``kernel/locale/<lang>/LC_MESSAGES/kinhbac_edge.mo`` (compiled from the ``.po``
files next to them with Babel: ``make i18n``). Source strings are English; Vietnamese is the
default language on site. Mark strings for extraction with :func:`N_` where they are defined and
translate them where they are shown.
"""

from __future__ import annotations

import functools
import gettext
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOMAIN = "kinhbac_edge"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LANGUAGES = ("vi", "en")
DEFAULT_LANGUAGE = "vi"


def N_(message: str) -> str:
    """Mark ``message`` for extraction without translating it here."""
    return message


@functools.lru_cache(maxsize=8)
def gettext_for(lang: str | None) -> gettext.NullTranslations:
    """The translations for ``lang`` (``vi``, ``en``; None means the default, Vietnamese).

    An unknown language or a missing catalogue falls back to the English source strings.
    """
    code = (lang or DEFAULT_LANGUAGE).split("_")[0].split("-")[0].lower()
    try:
        return gettext.translation(DOMAIN, localedir=str(LOCALE_DIR), languages=[code])
    except OSError:
        return gettext.NullTranslations()


def pick_language(requested: str | None) -> str:
    """``requested`` if a catalogue exists for it, else the default."""
    code = (requested or "").split("_")[0].split("-")[0].lower()
    return code if code in LANGUAGES else DEFAULT_LANGUAGE


@dataclass(frozen=True)
class Message:
    """A technician-facing message: an English msgid (marked with :func:`N_`) and its parameters,
    rendered in a language only when shown."""

    msgid: str
    params: dict[str, Any] = field(default_factory=dict)

    def render(self, lang_or_gettext: str | Callable[[str], str] | None) -> str:
        """The message in a language (``vi``, ``en``) or through a gettext function."""
        fn = lang_or_gettext if callable(lang_or_gettext) else gettext_for(lang_or_gettext).gettext
        return fn(self.msgid).format(**self.params)
