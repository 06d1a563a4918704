"""The reference consumer of the native feed: decode and validate messages, pretty-print them,
and materialise twins, readings and events into SQLite (``twinedge feed tail|sink``)."""

from gateway.feed.decode import FeedMessage, TopicInfo, decode, parse_topic
from gateway.feed.store import RebirthRequest, SinkCounters, TwinStore

__all__ = [
    "FeedMessage",
    "RebirthRequest",
    "SinkCounters",
    "TopicInfo",
    "TwinStore",
    "decode",
    "parse_topic",
]
