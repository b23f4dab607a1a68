"""``cnnclf report``: a run's, a sweep's or several runs' write-up, from the files they wrote, in Markdown and HTML."""

from cnnclf.report.command import main, report

__all__ = ["main", "report"]
