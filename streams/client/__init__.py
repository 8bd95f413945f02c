"""The dbopt SDK embedded in microservices: in-process literal stripping, non-blocking producer."""

from streams.client.events import UNPARSABLE_TEXT, InvalidEvent
from streams.client.monitor import monitor_query
from streams.client.pg import instrument
from streams.client.pool import PoolWatch, watch_pool
from streams.client.producer import EventProducer

__all__ = ["UNPARSABLE_TEXT", "EventProducer", "InvalidEvent", "PoolWatch", "instrument", "monitor_query", "watch_pool"]
