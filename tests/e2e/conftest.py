"""End-to-end tests reuse the sync fixtures (site keys, receiver processes)."""

from tests.sync.conftest import receivers, site_keys  # noqa: F401 - fixtures
