"""A SQLite COMMIT run on a thread of its own while its caller goes on with other work.

The log follower's COMMIT of a 100,000-line batch writes some 5,000 WAL frames and flushes
them (synchronous=FULL): 35-80 ms over bench/maillog_bench.py, all of it inside one SQLite
call that lets go of the GIL. Meanwhile the follower can read and parse the next batch,
which touches no store; it waits for the commit (:func:`commit_behind`'s waiter) before
its next use of the store, and redoes the batch if the commit failed. What is durable is
unchanged: a batch counts as stored only once its COMMIT returned, as before.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable


def commit_behind(
    conn: sqlite3.Connection,
    finish: Callable[[], None],
    failure: Callable[[BaseException], BaseException],
) -> Callable[[], None]:
    """COMMIT the transaction open on ``conn`` on a new thread, then call ``finish`` there
    (it releases what kept other users off ``conn``). Returns a function that waits for the
    commit and raises ``failure(error)`` if it failed (the transaction is then rolled back)."""
    errors: list[BaseException] = []

    def commit() -> None:
        try:
            conn.execute("COMMIT")
        except BaseException as exc:  # handed to the waiter, which raises it
            errors.append(exc)
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the connection is unusable: its next use reports that
        finally:
            finish()

    thread = threading.Thread(target=commit, name="sqlite-commit")
    thread.start()

    def wait() -> None:
        thread.join()
        if errors:
            raised = failure(errors[0])
            if raised is errors[0]:
                raise raised
            raise raised from errors[0]

    return wait
