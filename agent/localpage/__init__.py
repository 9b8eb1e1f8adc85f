"""The local status and commissioning page served by the running agent (``local_page`` section)."""
