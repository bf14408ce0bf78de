"""Child process of the full-sync benchmark: peak memory of one full sync, measured alone.

Prints one JSON line: seconds, peak RSS growth and tracemalloc peak during the sync.
"""

import json
import resource
import sys
import time
import tracemalloc

from fr_numpy import NumpyMatcher

from fr_core import DatabaseManager, SyncManager
from fr_core.testing.syncsource import PageStream

path, count, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
db = DatabaseManager(path)
db.initialize()
matcher = NumpyMatcher()
source = PageStream(count, dim, page_size=1000)


def status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


# Reset the peak-RSS mark (Linux) so the peak below is the sync's own.
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    exact = True
except OSError:
    exact = False
rss_before = (
    status_kb("VmRSS") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
)
trace = "--trace" in sys.argv
if trace:
    tracemalloc.start()
t0 = time.perf_counter()
result = SyncManager(db, source, matcher=matcher, page_size=1000).sync_now()
seconds = time.perf_counter() - t0
traced = tracemalloc.get_traced_memory()[1] if trace else None
rss_after = (
    status_kb("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
)
assert result.ok, result.error
assert matcher.size("SFace") == count and db.count_enrollments() == {"SFace": count}
print(
    json.dumps(
        {
            "seconds": seconds,
            "rss_growth": rss_after - rss_before,
            "exact": exact,
            "traced_peak": traced,
            "raw_bytes": count * dim * 4,
        }
    )
)
