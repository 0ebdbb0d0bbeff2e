"""Real-phone test harness: headless baresip, sipp, and a node launched as a subprocess.

Everything binds and sends to 127.0.0.1 only, unless given a network namespace and its
address (netns=, bind=/host=; see nsexec.py and tests/meshbed).
"""

from .ports import free_port

__all__ = ["free_port"]
