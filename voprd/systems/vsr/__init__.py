"""The builtin system: a Viewstamped Replication KV store (replica, client, messages, state machine,
planted bugs) and its harness for the engine (`voprd.systems.vsr.system`). `VSR` is the instance
the `builtin` target runs."""

from voprd.systems.vsr.system import VsrSystem

VSR = VsrSystem()

__all__ = ["VSR", "VsrSystem"]
