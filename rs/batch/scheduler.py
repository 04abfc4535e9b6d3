"""Connecting to the Dask scheduler a batch names (``--scheduler tcp://host:port``), or saying why not in one line.

Imports ``distributed`` only when called (no torch): ``run_batch`` checks the scheduler before it writes anything,
and ``rs.batch.cluster.run_dask`` connects through ``connect``, so an unreachable scheduler is the same
``SchedulerError`` wherever it is found. How long a connection is tried is Dask's setting
``distributed.comm.timeouts.connect`` (30 s by default; ``dask.config.set`` or the environment variable
``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from changewatch.rs.errors import SchedulerError

if TYPE_CHECKING:
    from distributed import Client

REMOTE_PREFIXES = ("tcp://", "tls://")  # a scheduler given by address; ``serial`` and ``local`` need none


def is_remote(scheduler: str) -> bool:
    """Whether ``scheduler`` is the address of an existing Dask scheduler (``tcp://…``, ``tls://…``)."""
    return scheduler.startswith(REMOTE_PREFIXES)


def connect(address: str) -> Client:
    """A Dask client of the scheduler at ``address`` (``tcp://host:port``); the caller closes it.

    Raises:
        SchedulerError: no scheduler answered within Dask's connect timeout (exit code 2), with the reason.
    """
    from distributed import Client

    try:
        return Client(address, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise SchedulerError(f"cannot reach the Dask scheduler {address}: {reason}; start it, or run with "
                             "--scheduler local (this machine) or serial") from exc


def check_scheduler(scheduler: str) -> None:
    """Raise SchedulerError unless ``scheduler`` is ``serial``, ``local`` or the address of a scheduler that answers.

    Connects and disconnects (``connect``); writes nothing.
    """
    if is_remote(scheduler):
        connect(scheduler).close()
