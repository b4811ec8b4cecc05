"""Reading, the second stage: a planned span of a shard into parsed records. `spans` (read a span's bytes,
retrying), `seek` (where a sample starts, from the shard's index), `records` (a sample parsed into a `Record`,
its caption chosen), and `indexed` (random access to shards through wids' index, a map-style alternative).
Imports only the plan stage before it."""
