"""How ``make test`` hands files to its xdist workers: the files that mostly wait go down
one lane.

``make test`` runs 4 xdist workers on 2 cores, file by file (``--dist loadfile``). Some
files spend most of their time waiting on purpose: webhook backoffs, a slow worker's
backlog, client retries, fetch deadlines. Measured on this project's 2-core machine, each
of ``WAITING`` uses under a tenth of its wall time in CPU, its own and its servers'. Taken
in the plain order they bunch up: at the end of a run several workers wait at once while
cores stand idle. ``WaitLaneScheduling`` keeps at most one worker in a waiting file while
other files are left, so their waits overlap the other workers' CPU work; the other files
keep the order ``tests/conftest.py`` gives them (longest first).

A file listed here that no longer waits only costs a little packing; a new file that
waits for tens of seconds belongs in ``WAITING`` (CONTRIBUTING.md, "Tests").
"""

from __future__ import annotations

from xdist.scheduler import LoadFileScheduling
from xdist.workermanage import WorkerController

WAITING = frozenset(
    {
        "tests/integration/api/test_fair_share.py",  # a slow worker's 12-job backlog
        "tests/integration/api/test_webhooks.py",  # past each retry's backoff
        "tests/integration/api/test_limits.py",  # deadlines and a running job's cancel
        "tests/integration/api/test_usage.py",  # jobs of a known length
        "tests/integration/api/test_live_previews.py",  # previews of running jobs
        "tests/integration/api/test_openapi_and_eta.py",  # measured durations
        "tests/integration/test_worker_outage.py",  # an unreachable API
        "tests/unit/test_client_retries.py",  # backoffs and Retry-After
        "tests/unit/test_client_wait.py",  # waits and their timeouts
        "tests/unit/test_fetch.py",  # servers that trickle and deadlines
        "tests/unit/test_webhook_rules.py",  # a receiver cut off at its deadline
    }
)


class WaitLaneScheduling(LoadFileScheduling):
    """``--dist loadfile`` with one lane for ``WAITING``: a worker asking for its next file
    gets the first waiting file when no other worker has one pending, else the first
    other file; when one kind runs out, the other kind goes to every worker."""

    def _assign_work_unit(self, node: WorkerController) -> None:
        waiting = [scope for scope in self.workqueue if scope in WAITING]
        others = [scope for scope in self.workqueue if scope not in WAITING]
        lane_taken = any(
            scope in WAITING and not all(unit.values())
            for holder, units in self.assigned_work.items()
            if holder is not node
            for scope, unit in units.items()
        )
        if waiting and (not lane_taken or not others):
            self.workqueue.move_to_end(waiting[0], last=False)
        elif others:
            self.workqueue.move_to_end(others[0], last=False)
        super()._assign_work_unit(node)
