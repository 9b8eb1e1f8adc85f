"""A local HTTP server that answers the balena API v7 calls ``edge-agent fleet`` and the agent's
health reporter make, the way the real API (open-balena-api on pinejs) answers them.

This is a fake, because the real balena API cannot run here (no internet; open-balena-api needs its
own PostgreSQL model, VPN and registry). It answers as the real API does, for the subset used:

* resources and fields as in the balena API reference (docs.balena.io/reference/api/resources/:
  ``device`` with ``uuid``, ``device_name``, ``is_online``, ``last_connectivity_event``,
  ``belongs_to__application``, ``is_running__release``, ``is_pinned_on__release``; ``release`` with
  ``commit``, ``status``, ``belongs_to__application``; ``application`` with ``slug``,
  ``should_be_running__release``, ``should_track_latest_release``; ``device_tag`` with ``device``,
  ``tag_key``, ``value``; ``device_environment_variable`` and ``application_environment_variable``
  with ``device``/``application``, ``name``, ``value``);
* OData as pinejs serves it: ``GET /v7/<resource>`` and ``/v7/<resource>(<id>)`` answer
  ``{"d": [...]}``; an unexpanded navigation is ``{"__id": n}`` (or null), an expanded one a list of
  0 or 1 objects; ``$select``, ``$expand=nav($select=...)``, ``$filter`` with ``eq``, ``in (...)``,
  ``and``, ``or``, ``not`` and ``nav/any(a:a/...)``, ``$orderby``, ``$top`` (the query shapes
  balena-sdk-python 17 builds through pine_client, e.g. ``device.pin_to_release``:
  ``PATCH /v7/device?$filter=id in (1, 2)`` with body ``{"is_pinned_on__release": <release id>}``);
* ``POST`` answers 201 with the created object; a duplicate natural key (``device``+``tag_key``,
  ``device``/``application``+``name``) answers 409 "Unique key constraint violated" as pinejs does,
  which is how pine_client's ``upsert`` falls back to ``PATCH``; ``PATCH``/``DELETE`` answer 200 "OK";
* a request without ``Authorization: Bearer <key>`` answers 401 "Unauthorized".

Every request is recorded (method, path, decoded query, JSON body) so tests can check that what the
fleet tools send matches the balena API.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

# (resource, field) -> resource the navigation points to
NAV: dict[tuple[str, str], str] = {
    ("device", "belongs_to__application"): "application",
    ("device", "is_running__release"): "release",
    ("device", "is_pinned_on__release"): "release",
    ("release", "belongs_to__application"): "application",
    ("application", "should_be_running__release"): "release",
    ("device_tag", "device"): "device",
    ("device_environment_variable", "device"): "device",
    ("application_environment_variable", "application"): "application",
}
UNIQUE: dict[str, tuple[str, str]] = {
    "device_tag": ("device", "tag_key"),
    "device_environment_variable": ("device", "name"),
    "application_environment_variable": ("application", "name"),
}


@dataclass
class Request:
    """One recorded API call."""

    method: str
    path: str
    query: dict[str, str]
    body: Any


# -- a small OData $filter parser (the subset pine_client emits) --------------------------------

_TOKEN = re.compile(r"\s*(?:(\()|(\))|(,)|('(?:[^']|'')*')|(-?\d+(?:\.\d+)?)|([A-Za-z_][\w/]*(?:\([a-z]:)?))")


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise ValueError(f"cannot parse $filter at {text[pos:]!r}")
        out.append(m.group(0).strip())
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.t = _tokens(text)
        self.i = 0

    def peek(self) -> str | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self, expect: str | None = None) -> str:
        tok = self.t[self.i]
        if expect is not None and tok != expect:
            raise ValueError(f"expected {expect!r}, got {tok!r}")
        self.i += 1
        return tok

    def expr(self) -> Any:
        left = self.conj()
        while self.peek() == "or":
            self.take()
            left = ("or", left, self.conj())
        return left

    def conj(self) -> Any:
        left = self.term()
        while self.peek() == "and":
            self.take()
            left = ("and", left, self.term())
        return left

    def value(self) -> Any:
        tok = self.take()
        if tok.startswith("'"):
            return tok[1:-1].replace("''", "'")
        if tok == "null":
            return None
        if tok in ("true", "false"):
            return tok == "true"
        return float(tok) if "." in tok else int(tok)

    def term(self) -> Any:
        tok = self.peek()
        if tok == "(":
            self.take()
            inner = self.expr()
            self.take(")")
            return inner
        if tok == "not":
            self.take()
            return ("not", self.term())
        path = self.take()
        any_match = re.fullmatch(r"(.+)/any\(([a-z]):", path)
        if any_match:
            inner = self.expr()
            self.take(")")
            return ("any", any_match.group(1), any_match.group(2), inner)
        op = self.take()
        if op == "in":
            self.take("(")
            values = [self.value()]
            while self.peek() == ",":
                self.take()
                values.append(self.value())
            self.take(")")
            return ("in", path, values)
        if op in ("eq", "ne"):
            return (op, path, self.value())
        raise ValueError(f"unsupported operator {op!r}")


def parse_filter(text: str) -> Any:
    """Parse an OData ``$filter`` into a small tree."""
    p = _Parser(text)
    tree = p.expr()
    if p.peek() is not None:
        raise ValueError(f"trailing tokens in $filter: {p.t[p.i :]}")
    return tree


def _split_top(text: str, sep: str = ",") -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == sep and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class FakeBalena:
    """The in-memory model and the HTTP server around it."""

    api_key: str = "operator-key"
    device_keys: dict[str, str] = field(default_factory=dict)  # device api key -> uuid
    requests: list[Request] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Fault injection: the next N GETs of this resource answer 503, as the API does when overloaded.
    fail_gets: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("application", "release", "device", *UNIQUE):
            self.tables.setdefault(name, [])
        self.lock = threading.RLock()
        self._next_id = 1000
        self._server: ThreadingHTTPServer | None = None

    # -- model ------------------------------------------------------------------------------------

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def add(self, resource: str, **fields: Any) -> dict[str, Any]:
        """Insert a row; navigation fields take an id (or None)."""
        with self.lock:
            row: dict[str, Any] = {"id": fields.pop("id", None) or self.new_id()}
            for key, value in fields.items():
                row[key] = {"__id": value} if (resource, key) in NAV and value is not None else value
            row.setdefault("created_at", _now_iso())
            self.tables[resource].append(row)
            return row

    def row(self, resource: str, **match: Any) -> dict[str, Any] | None:
        """The first row matching plain field values (navigation compared by id)."""
        with self.lock:
            for row in self.tables[resource]:
                if all(_plain(row.get(k)) == v for k, v in match.items()):
                    return row
            return None

    def tag(self, uuid: str, key: str) -> str | None:
        """A device tag's value."""
        dev = self.row("device", uuid=uuid)
        assert dev is not None
        tag = self.row("device_tag", device=dev["id"], tag_key=key)
        return None if tag is None else tag["value"]

    # -- query evaluation -------------------------------------------------------------------------

    def _get(self, resource: str, row_id: Any) -> dict[str, Any] | None:
        return next((r for r in self.tables[resource] if r["id"] == row_id), None)

    def _resolve(
        self, resource: str, row: dict[str, Any], path: str, env: dict[str, tuple[str, dict]]
    ) -> Any:
        parts = path.split("/")
        if parts[0] in env:
            resource, row = env[parts[0]]
            parts = parts[1:]
        for j, part in enumerate(parts):
            value = row.get(part)
            target = NAV.get((resource, part))
            if target is None:
                return value
            if j == len(parts) - 1:
                return _plain(value)
            if value is None:
                return None
            nxt = self._get(target, value["__id"])
            if nxt is None:
                return None
            resource, row = target, nxt
        return None

    def _match(self, resource: str, row: dict[str, Any], tree: Any, env: dict[str, tuple[str, dict]]) -> bool:
        op = tree[0]
        if op == "and":
            return self._match(resource, row, tree[1], env) and self._match(resource, row, tree[2], env)
        if op == "or":
            return self._match(resource, row, tree[1], env) or self._match(resource, row, tree[2], env)
        if op == "not":
            return not self._match(resource, row, tree[1], env)
        if op == "any":
            _, nav, alias, inner = tree
            target = NAV.get((resource, nav))
            if target is not None:  # to-one navigation
                ref = row.get(nav)
                other = self._get(target, ref["__id"]) if ref else None
                return other is not None and self._match(
                    resource, row, inner, {**env, alias: (target, other)}
                )
            # reverse navigation: rows of a resource pointing back here
            for (res, fld), tgt in NAV.items():
                if tgt == resource and res == nav:
                    return any(
                        self._match(resource, row, inner, {**env, alias: (res, other)})
                        for other in self.tables[res]
                        if _plain(other.get(fld)) == row["id"]
                    )
            raise ValueError(f"unknown navigation {resource}/{nav}")
        value = self._resolve(resource, row, tree[1], env)
        if op == "eq":
            return bool(value == tree[2])
        if op == "ne":
            return bool(value != tree[2])
        if op == "in":
            return value in tree[2]
        raise ValueError(op)

    def _render(
        self, resource: str, row: dict[str, Any], select: list[str] | None, expand: str | None
    ) -> dict:
        out: dict[str, Any] = {}
        keys = select if select else [k for k in row if not k.startswith("_")]
        for key in keys:
            if key in row or (resource, key) in NAV:
                out[key] = row.get(key)
        if expand:
            for item in _split_top(expand):
                m = re.fullmatch(r"(\w+)(?:\((.*)\))?", item.strip())
                assert m, item
                nav, opts = m.group(1), dict(_split_opts(m.group(2) or ""))
                target = NAV.get((resource, nav))
                if target is not None:
                    ref = row.get(nav)
                    linked = [self._get(target, ref["__id"])] if ref else []
                else:  # reverse navigation
                    back = next(f for (r, f), t in NAV.items() if r == nav and t == resource)
                    target = nav
                    linked = [o for o in self.tables[nav] if _plain(o.get(back)) == row["id"]]
                    if "$filter" in opts:
                        tree = parse_filter(opts["$filter"])
                        linked = [o for o in linked if self._match(nav, o, tree, {})]
                sub_select = opts["$select"].split(",") if "$select" in opts else None
                out[nav] = [
                    self._render(target, o, sub_select, opts.get("$expand")) for o in linked if o is not None
                ]
        out["__metadata"] = {"uri": f"/resin/{resource}(@id)?@id={row['id']}"}
        return out

    def query(self, resource: str, row_id: int | None, q: dict[str, str]) -> list[dict[str, Any]]:
        """Rows of a GET, rendered."""
        rows = list(self.tables[resource])
        if row_id is not None:
            rows = [r for r in rows if r["id"] == row_id]
        if "$filter" in q:
            tree = parse_filter(q["$filter"])
            rows = [r for r in rows if self._match(resource, r, tree, {})]
        if "$orderby" in q:
            for part in reversed(q["$orderby"].split(",")):
                key, _, direction = part.strip().partition(" ")
                rows.sort(key=lambda r, k=key: str(_plain(r.get(k)) or ""), reverse=direction == "desc")
        if "$top" in q:
            rows = rows[: int(q["$top"])]
        select = q["$select"].split(",") if "$select" in q else None
        return [self._render(resource, r, select, q.get("$expand")) for r in rows]

    def write(
        self, method: str, resource: str, row_id: int | None, q: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        """POST, PATCH or DELETE; (status, response body)."""
        if method == "POST":
            key = UNIQUE.get(resource)
            if key and self.row(resource, **{k: body.get(k) for k in key}) is not None:
                return 409, "Unique key constraint violated"
            row = self.add(resource, **body)
            return 201, self._render(resource, row, None, None)
        rows = self.tables[resource]
        targets = [r for r in rows if row_id is None or r["id"] == row_id]
        if "$filter" in q:
            tree = parse_filter(q["$filter"])
            targets = [r for r in targets if self._match(resource, r, tree, {})]
        if method == "PATCH":
            for r in targets:
                for k, v in body.items():
                    r[k] = {"__id": v} if (resource, k) in NAV and v is not None else v
        else:
            ids = {id(r) for r in targets}
            self.tables[resource] = [r for r in rows if id(r) not in ids]
        return 200, "OK"

    # -- HTTP -------------------------------------------------------------------------------------

    def start(self) -> str:
        """Serve on a free loopback port; returns the API endpoint URL."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, payload: Any) -> None:
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                self.send_response(status)
                ctype = "text/plain" if isinstance(payload, str) else "application/json"
                self.send_header("Content-Type", f"{ctype}; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                split = urlsplit(self.path)
                query = dict(parse_qsl(split.query, keep_blank_values=True))
                path = unquote(split.path)
                with fake.lock:
                    fake.requests.append(Request(self.command, path, query, body))
                auth = self.headers.get("Authorization", "")
                token = auth.removeprefix("Bearer ")
                if token != fake.api_key and token not in fake.device_keys:
                    self._send(401, "Unauthorized")
                    return
                m = re.fullmatch(r"/v7/(\w+)(?:\((\d+)\))?", path)
                if not m or m.group(1) not in fake.tables:
                    self._send(404, "Not Found")
                    return
                resource, row_id = m.group(1), int(m.group(2)) if m.group(2) else None
                with fake.lock:
                    if self.command == "GET" and fake.fail_gets.get(resource, 0) > 0:
                        fake.fail_gets[resource] -= 1
                        self._send(503, "Service Unavailable")
                        return
                try:
                    with fake.lock:
                        if self.command == "GET":
                            self._send(200, {"d": fake.query(resource, row_id, query)})
                        else:
                            status, payload = fake.write(self.command, resource, row_id, query, body or {})
                            self._send(status, payload)
                except ValueError as exc:
                    self._send(400, str(exc))

            do_GET = do_POST = do_PATCH = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-balena").start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def write_balena_cfg(self, directory: Path, endpoint: str) -> Path:
        """A balena-sdk ``balena.cfg`` pointing ``api_endpoint`` at this server (token from env)."""
        directory.mkdir(parents=True, exist_ok=True)
        lines = {
            "balena_host": "balena-cloud.com",
            "api_version": "v7",
            "device_actions_endpoint_version": "v1",
            "image_cache_time": "604800000",
            "token_refresh_interval": "3600000",
            "timeout": "30000",
            "request_limit_interval": "60",
            "retry_rate_limited_request": "false",
            "builder_url": endpoint,
            "api_endpoint": endpoint,
            "pine_endpoint": endpoint + "v7/",
            "data_directory": str(directory),
            "cache_directory": str(directory / "cache"),
        }
        path = directory / "balena.cfg"
        path.write_text("[Settings]\n" + "".join(f"{k} = {v}\n" for k, v in lines.items()))
        return path

    def writes(self) -> list[Request]:
        """Recorded requests other than GET."""
        with self.lock:
            return [r for r in self.requests if r.method != "GET"]


def _plain(value: Any) -> Any:
    return value["__id"] if isinstance(value, dict) and "__id" in value else value


def _split_opts(text: str) -> list[tuple[str, str]]:
    out = []
    for part in _split_top(text, "&") if "&" in text else _split_top(text, ";"):
        key, _, value = part.partition("=")
        if key:
            out.append((key.strip(), value))
    return out
