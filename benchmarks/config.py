"""How much each section measures: the full run's sizes, and the shrunken ``--quick`` ones."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Config:
    """Sizes and rounds per section (fields prefixed mw_, http_, ev_, assign_, ...).

    ``rounds`` serves the middleware, assignment, screening and rewrite sections.
    """

    quick: bool = False
    rounds: int = 7
    # 1. middleware
    mw_requests: int = 3000
    mw_new_requests: int = 2000
    # 2. http
    http_duration: float = 4.0
    http_connections: int = 32
    http_threads: int = 2
    http_rounds: int = 5
    http_warmup: bool = True
    http_workers: int = 1  # uvicorn --workers; why not 2: the bench_http docstring
    # More tokens than the wrapped server is sent in the whole section, so none comes back.
    http_cold_pool: int = 200_000
    # 3. events
    ev_emit_calls: int = 5000
    ev_deliver_events: int = 10_000
    ev_rounds: int = 5
    # 4. assignment
    assign_calls: int = 20_000
    # 5. memory
    mem_entries: int = 1_000_000
    mem_rounds: int = 5
    # 6. faults
    fault_duration: float = 3.0
    fault_rounds: int = 5
    fault_mixes: tuple[str, ...] = ("mixed", "all_new")
    # 7. screening: how many times the real browsers are screened per round
    screen_repeat: int = 20
    # 8. results: lines of the events file given to optibase-edge report
    results_lines: int = 1_000_000
    # 9. rewrite: pages each candidate rewrites per round
    rewrite_pages: int = 40
    # 10. edge: rounds of the three wrk runs (each http_duration long)
    edge_rounds: int = 5

    @classmethod
    def make(cls, quick: bool) -> Config:
        """The full run's configuration, or with *quick* the smoke run's (under a minute)."""
        if not quick:
            return cls()
        return cls(
            quick=True,
            rounds=5,
            mw_requests=300,
            mw_new_requests=300,
            http_duration=1.0,
            http_rounds=5,
            http_warmup=False,
            http_cold_pool=50_000,
            ev_emit_calls=1000,
            ev_deliver_events=1000,
            ev_rounds=5,
            assign_calls=3000,
            mem_entries=50_000,
            mem_rounds=5,
            fault_duration=1.0,
            fault_rounds=5,
            fault_mixes=("mixed",),
            screen_repeat=3,
            results_lines=50_000,
            rewrite_pages=5,
            edge_rounds=3,
        )
