"""Child process for the crash test: appends events forever, printing each id once committed."""

import sys

from fr_core import DatabaseManager

path, prefix = sys.argv[1], sys.argv[2]
db = DatabaseManager(path)
db.initialize()
i = 0
while True:
    batch = [
        {
            "event_id": f"{prefix}-{i + k}",
            "event_type": "facial_id",
            "n": i + k,
            "image": "/9j/" + "A" * 400,
        }
        for k in range(1 + i % 3)
    ]
    if len(batch) == 1:
        db.outbox_append(batch[0])
    else:
        db.outbox_append_many(batch)
    for e in batch:
        sys.stdout.write(e["event_id"] + "\n")
    sys.stdout.flush()
    i += len(batch)
