"""Enrolment, central to device: the sync page format (``syncpage``), the ``SyncManager``
that pulls changes into local storage, and the central side's enrolment kit (``kit``), which
turns photos into sync-ready records with the devices' own models.

The kit's API is re-exported here, so ``from fr_core.enrolment import EnrolmentKit`` works.
"""

from fr_core.enrolment.kit import (
    CheckResult,
    EnrolmentKit,
    EnrolmentRecord,
    EnrolmentRefused,
    check_records,
    read_records,
    write_records,
)

__all__ = [
    "CheckResult",
    "EnrolmentKit",
    "EnrolmentRecord",
    "EnrolmentRefused",
    "check_records",
    "read_records",
    "write_records",
]
