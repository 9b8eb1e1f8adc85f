"""The one error hierarchy of kinhbac-edge.

Every error the agent raises on purpose derives from :class:`AgentError`. Where a builtin fits,
the class inherits it too, so callers that catch ``ValueError`` or ``TimeoutError`` keep working.
The CLI prints ``edge-agent: error: <message>`` for these and exits with :attr:`AgentError.exit_code`.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base class of every error kinhbac-edge raises on purpose."""

    exit_code = 1


class ConfigError(AgentError, ValueError):
    """A configuration, profile, rig or manifest file is invalid.

    ``problems`` holds one ``"path: message"`` line per problem found.
    """

    exit_code = 2

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        first = problems[0] if problems else "invalid"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{source}: {first}{more}")


class StoreError(AgentError):
    """The local reading buffer cannot do what was asked."""


class StoreCorrupt(StoreError):
    """The SQLite buffer file failed its integrity check."""


class DeviceError(AgentError):
    """A field device did not answer as expected."""


class DeviceTimeout(DeviceError, TimeoutError):
    """A field device did not answer in time."""


class FrameError(DeviceError, ValueError):
    """A frame from a device was malformed (bad CRC, checksum, length or framing)."""


class DeviceRefused(DeviceError):
    """A device answered with a protocol exception (for example Modbus illegal data address)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class WriteRefused(DeviceError, PermissionError):
    """A write was refused before reaching the device (not writable, out of range)."""


class TransportError(AgentError, ConnectionError):
    """A transport (serial port, TCP socket, pty) failed or is closed."""


class TransportClosed(TransportError):
    """Operation on a transport that is closed."""


class SyncError(AgentError):
    """Talking to the central platform failed."""


class SignatureError(SyncError):
    """A signature is missing, malformed or does not verify."""


class SafetyViolation(AgentError):
    """A control command would leave the safety envelope; it was refused."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule


class ModelError(AgentError):
    """A model file or manifest is refused (hash, shapes, corrupt file)."""


class HilFailure(AgentError):
    """A hardware-in-the-loop rig expectation failed."""


class FleetError(AgentError):
    """A fleet operation (balena rollout, promote, rollback) cannot proceed."""


class RolloutFailed(FleetError):
    """A rollout wave missed its health gate; it was stopped and rolled back."""
