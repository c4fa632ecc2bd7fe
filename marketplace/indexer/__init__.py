"""The chain indexer: escrow and registry events into the marketplace's tables, once, in order, reorg-safe;
the database can be rebuilt from the chain alone."""

from marketplace.indexer.apply import apply_event, ingest, store_event
from marketplace.indexer.events import DecodedEvent, EventDecoder
from marketplace.indexer.indexer import Indexer, IndexReport, rebuild
from marketplace.indexer.tables import JOBS_METADATA

__all__ = [
    "JOBS_METADATA", "DecodedEvent", "EventDecoder", "IndexReport", "Indexer", "apply_event", "ingest",
    "rebuild", "store_event",
]
