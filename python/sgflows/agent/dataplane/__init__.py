"""What the agent programs: the abstract API (:mod:`.api`), the Open vSwitch backend
(:mod:`.ovs`, with its OVSDB watcher :mod:`.ovsdb` and its model join :mod:`.session`), and the
reference backends for tests and dry runs (:mod:`.reference`)."""

from .api import Dataplane, DataplaneError, LocalPortsListener, counts_of
from .reference import FileDataplane, NullDataplane

__all__ = [
    "Dataplane",
    "DataplaneError",
    "FileDataplane",
    "LocalPortsListener",
    "NullDataplane",
    "counts_of",
]
