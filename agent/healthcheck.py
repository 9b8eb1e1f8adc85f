"""Container HEALTHCHECK: ask the running agent's ``/health`` (the port its site config names).

``python -m agent.healthcheck [CONFIG]`` (default ``$KBE_CONFIG``) exits 0 when the agent answers
``ok``, 1 otherwise, and prints one line either way. It reads only ``health.listen`` from the YAML
(no full config validation): it runs every 30 s on a small board.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import yaml

DEFAULT_LISTEN = "127.0.0.1:9108"


def probe_url(config_file: Path) -> str | None:
    """The /health URL from the config's ``health.listen``; None when the endpoint is disabled."""
    raw = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
    health = raw.get("health") if isinstance(raw, dict) else None
    listen = health.get("listen", DEFAULT_LISTEN) if isinstance(health, dict) else DEFAULT_LISTEN
    if listen is None:
        return None
    host, _, port = str(listen).rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}/health" if ":" in host else f"http://{host}:{port}/health"


def check(config_file: Path, timeout_s: float = 5.0) -> tuple[bool, str]:
    """(healthy, one line saying why)."""
    try:
        url = probe_url(config_file)
    except (OSError, yaml.YAMLError) as exc:
        return False, f"cannot read {config_file}: {exc}"
    if url is None:
        return True, "health endpoint disabled in the site config (health.listen: null); nothing to probe"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - loopback URL from config
            report = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            report = json.loads(exc.read())
        except ValueError:
            return False, f"{url}: HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"{url}: {exc}"
    if report.get("ok"):
        return True, f"{url}: ok"
    bad = [n for n, t in (report.get("tasks") or {}).items() if t.get("state") == "cooling-down"]
    return False, f"{url}: not ok" + (f" ({', '.join(bad)} cooling down)" if bad else "")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    config = Path(args[0]) if args else Path(os.environ.get("KBE_CONFIG", "/data/site.yaml"))
    healthy, line = check(config)
    print(line)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
