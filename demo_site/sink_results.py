"""The sink's experiment results: :func:`optibase_edge.experiment_results` over the stored calls.

The one place the sink computes results; the dashboard, its results fragment
and ``GET /api/results`` all show what :meth:`StoredResults.compute` returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from demo_site.call_store import CallStore
from optibase_edge import Conversion, Test, experiment_results
from optibase_edge._results import Results


@dataclass(frozen=True, slots=True)
class StoredResults:
    """Results of the calls in *store*, named and ordered by a site's configuration.

    *tests* and *conversions* are what the site runs (``settings.tests`` and
    ``settings.conversions``): they give names, each test's control and weights,
    and the order; without them, ids are shown and controls guessed (see
    :func:`optibase_edge.experiment_results`).
    """

    store: CallStore
    tests: Sequence[Test] = ()
    conversions: Sequence[Conversion] = ()

    def compute(self) -> Results:
        """The results now. Blocking (SQLite, then the statistics): run it in a worker thread."""
        return experiment_results(
            self.store.result_messages(), tests=self.tests, conversions=self.conversions
        )
