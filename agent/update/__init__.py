"""Signed updates on the device: stage, switch atomically, watch health, commit or roll back.

See docs/wire-protocol.md (the ``update`` command) and docs/operations.md (the operator's view).
"""
