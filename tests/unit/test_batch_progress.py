"""A batch's pages done / total from its item-ended markers and the records of running items."""

from __future__ import annotations

from shared.jobs.batches import Batch, BatchItem, BatchSignal, Ended, progress
from shared.models import JobError, Progress

A, B, C, D = ("a" * 32, "b" * 32, "c" * 32, "d" * 32)


def _batch() -> Batch:
    refused = JobError(code="NOT_A_PDF", message="no")
    items = [BatchItem(index=i, job_id=j) for i, j in enumerate((A, B, C, D))]
    return Batch(batch_id="e" * 32, tenant="t", items=(*items, BatchItem(index=4, refused=refused)))


def test_ended_items_count_whole_running_ones_as_far_as_they_are() -> None:
    ends = {A: Ended("completed", 3), B: Ended("failed", 2)}
    live = {C: Progress(pages_done=1, pages_total=5), D: Progress()}  # D: queued, no count yet
    assert progress(_batch(), ends, live) == {
        "pages_done": 3 + 2 + 1,
        "pages_total": 3 + 2 + 5,
        "items_counted": 3,
    }


def test_a_marker_of_the_version_before_has_no_pages_and_is_not_counted() -> None:
    ends = {A: Ended("completed", None), B: Ended("completed", 4)}
    assert progress(_batch(), ends) == {"pages_done": 4, "pages_total": 4, "items_counted": 1}


def test_a_signal_of_the_version_before_parses_without_pages() -> None:
    old = '{"schema": "pdfrelay.batch-signal/1", "batch_id": "' + "e" * 32 + '"}'
    assert BatchSignal.model_validate_json(old).pages is None
