#!/usr/bin/env python3
"""Interoperability check with clients nobody here wrote: confluent-kafka (its own
librdkafka) and fastavro, given only schemas/driftline.requests.avsc.

It reads the PredictionRequests the Rust side produced to --read-topic and prints them as
JSON lines, then produces one PredictionRequest of its own to --write-topic, framed in Avro
single-object encoding (C3 01, the schema's CRC-64-AVRO fingerprint little-endian, body).
"""
import argparse
import io
import json
import struct
import sys

import fastavro
from confluent_kafka import Consumer, Producer, TopicPartition
from fastavro.schema import to_parsing_canonical_form

EMPTY = 0xC15D213AA4D7A795  # the spec's CRC-64-AVRO seed


def rabin_fingerprint(data: bytes) -> int:
    """The 64-bit Rabin fingerprint, as the Avro specification gives it."""
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY & -(fp & 1))
        table.append(fp)
    fp = EMPTY
    for b in data:
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    return fp


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--schema", required=True)
    ap.add_argument("--read-topic", required=True)
    ap.add_argument("--expect", type=int, default=1)
    ap.add_argument("--write-topic", required=True)
    args = ap.parse_args()

    with open(args.schema) as f:
        raw = json.load(f)
    schema = fastavro.parse_schema(raw)
    canonical = to_parsing_canonical_form(raw)
    header = b"\xc3\x01" + struct.pack("<Q", rabin_fingerprint(canonical.encode()))

    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "interop-py",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(args.read_topic, 0, 0)])
    seen = 0
    while seen < args.expect:
        msg = consumer.poll(30)
        if msg is None:
            print(f"timed out after {seen} messages", file=sys.stderr)
            return 1
        if msg.error():
            print(f"consume error: {msg.error()}", file=sys.stderr)
            return 1
        value = msg.value()
        if value[:10] != header:
            print(f"unexpected header {value[:10].hex()} (want {header.hex()})", file=sys.stderr)
            return 1
        record = fastavro.schemaless_reader(io.BytesIO(value[10:]), schema)
        record["event_time"] = int(record["event_time"].timestamp() * 1000)
        print(json.dumps(record, sort_keys=True))
        seen += 1
    consumer.close()

    record = {
        "request_id": "from-python-1",
        "model": "flights",
        "event_time": 1357016400000,
        "features": {"dep_delay": 12.5, "carrier": "B6", "wind_gust": None},
    }
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schema, record)
    # Keyed by model, and placed as the Java client and driftline place keys (murmur2), so
    # the request shares a partition number with the model's other events.
    producer = Producer({"bootstrap.servers": args.bootstrap, "partitioner": "murmur2_random"})
    producer.produce(args.write_topic, key=record["model"], value=header + body.getvalue())
    if producer.flush(30) != 0:
        print("produce did not complete", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
