"""Child process for the migration crash test: opens (and so migrates) one database with one
key file, saying when it starts and when it is done."""

import sys
import time

from fr_core import DatabaseManager

path, key_file = sys.argv[1], sys.argv[2]
if sys.argv[3:] == ["hang"]:  # die (be killed) after the commit, before the WAL truncation
    from fr_sqlite.database import Database

    def hang(self):
        sys.stdout.write("committed\n")
        sys.stdout.flush()
        time.sleep(3600)

    Database._shred_wal = hang
db = DatabaseManager(
    path, storage_options={"key": {"provider": "file", "options": {"path": key_file}}}
)
sys.stdout.write("start\n")
sys.stdout.flush()
t0 = time.monotonic()
db.initialize()
sys.stdout.write(f"done {time.monotonic() - t0:.3f}\n")
sys.stdout.flush()
db.close()
