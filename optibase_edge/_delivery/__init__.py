"""Delivery: the only part of optibase_edge that does network or disk I/O for events.

The request path hands events to :class:`Delivery`; from there on everything
happens in the background: the bounded queue and its accounting
(:mod:`.queue`), claims in the dedupe store (:mod:`.stores`,
:mod:`.redis_store`), packing into batches (:mod:`.batching`), the retry
policy (:mod:`.retry`), the transports (:mod:`.transports`) and the spool
(:mod:`.spool`).
"""
