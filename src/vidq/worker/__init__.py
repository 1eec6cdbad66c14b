"""Workers: claim a job, run its engine in a child process, upload, complete (fenced)."""

from vidq.worker.runner import Worker, WorkerOptions

__all__ = ["Worker", "WorkerOptions"]
