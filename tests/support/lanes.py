"""How ``make test`` hands files to its xdist workers: two kinds of file go down a lane each.

``make test`` runs 5 xdist workers on 2 cores, file by file (``--dist loadfile``), and two
kinds of file are worth keeping on one worker at a time:

- ``WAITING``: files that spend most of their time waiting on purpose (webhook backoffs, a
  slow worker's backlog, client retries, fetch deadlines). Measured on this project's
  2-core machine, each uses under a tenth of its wall time in CPU, its own and its
  servers'. In the plain order they bunch up at the end of a run, several workers waiting
  at once while cores stand idle; down one lane their waits overlap the other workers'
  CPU work.
- ``TORCH``: files whose tests import torch, diffusers and transformers in the test's own
  process (about 5 CPU-s and 400 MB a process). Down one lane, one worker pays for them.

A worker asking for its next file goes on with its lane while that lane has files; else
it takes a lane no other worker holds; else the first file in no lane; else whatever is
left. The files in no lane keep the order ``tests/conftest.py`` gives them (longest
first). A file listed here that no longer waits or imports torch only costs a little
packing; a new file that does belongs here (CONTRIBUTING.md, "Tests").
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

TORCH = frozenset(
    {
        "tests/integration/test_wan_engine.py",
        "tests/integration/test_ltx2_engine.py",
        "tests/integration/test_bench_wan.py",  # the GPU benchmarks, run in the process
        "tests/integration/test_bench_ltx2.py",
        "tests/integration/api/test_wan.py",
        "tests/integration/api/test_ltx2_api.py",
        "tests/integration/test_worker.py",
        "tests/unit/test_previews.py",
        "tests/unit/test_engine_registry.py",
        "tests/unit/test_wan_sizing.py",
    }
)
LANES = {"torch": TORCH, "waiting": WAITING}


def choose(queue: list[str], mine: set[str], others: set[str]) -> str:
    """The next file for a worker: ``queue`` the files left in order, ``mine`` the files
    this worker has pending, ``others`` those the other workers have pending."""
    lanes = list(LANES.values())
    choices = (
        [s for files in lanes if mine & files for s in queue if s in files]
        + [s for files in lanes if not others & files for s in queue if s in files]
        + [s for s in queue if not any(s in files for files in lanes)]
        + queue
    )
    return choices[0]


class LaneScheduling(LoadFileScheduling):
    """``--dist loadfile`` with a lane for each of ``LANES`` (see ``choose``)."""

    def _assign_work_unit(self, node: WorkerController) -> None:
        mine: set[str] = set()
        others: set[str] = set()
        for holder, units in self.assigned_work.items():
            pending = {scope for scope, unit in units.items() if not all(unit.values())}
            (mine if holder is node else others).update(pending)
        self.workqueue.move_to_end(choose(list(self.workqueue), mine, others), last=False)
        super()._assign_work_unit(node)
