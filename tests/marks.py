"""What a test needs, said once: markers to put in a test module's `pytestmark` or on a test.

Under CI=true nothing these mark may be skipped (tests/conftest.py): the reasons say what
to install. `BED`: real nodes in network namespaces (root, iproute2) driven by sipp.
"""

from __future__ import annotations

import pytest
from meshbed import netns_available
from phones.baresip import baresip_binary
from phones.sipp import sipp_binary

NETNS_REASON = netns_available()
NEEDS_NETNS = pytest.mark.skipif(NETNS_REASON is not None, reason=f"meshbed: {NETNS_REASON}")
NEEDS_SIPP = pytest.mark.skipif(
    sipp_binary() is None,
    reason="sipp not installed (apt-get install sip-tester; `make test` does)")
NEEDS_BARESIP = pytest.mark.skipif(
    baresip_binary() is None,
    reason="baresip not installed (apt-get install baresip-core; `make test` does)")
BED = [pytest.mark.netns, pytest.mark.phones, NEEDS_NETNS, NEEDS_SIPP]
