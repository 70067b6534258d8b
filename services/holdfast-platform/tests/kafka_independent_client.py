#!/usr/bin/env python3
"""An independent Kafka client reading holdfast events: proof that they are plain Kafka.

Uses PyPI confluent-kafka (its own librdkafka build, no holdfast code). Joins a consumer
group, reads COUNT records from TOPIC and prints one JSON object per record (key, partition,
offset, every header decoded as UTF-8, payload as hex), then commits and leaves the group.
Exits 1 if fewer than COUNT records arrive before the deadline.

    kafka_independent_client.py BOOTSTRAP TOPIC GROUP COUNT [TIMEOUT_SECONDS]
"""

import json
import sys
import time

from confluent_kafka import Consumer, KafkaException


def main() -> int:
    bootstrap, topic, group, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 30.0
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout
    read = 0
    try:
        while read < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                raise KafkaException(message.error())
            headers = {key: value.decode("utf-8") for key, value in (message.headers() or [])}
            record = {
                "topic": message.topic(),
                "partition": message.partition(),
                "offset": message.offset(),
                "key": message.key().decode("utf-8") if message.key() is not None else None,
                "headers": headers,
                "payload_hex": (message.value() or b"").hex(),
            }
            print(json.dumps(record, sort_keys=True), flush=True)
            consumer.commit(message=message, asynchronous=False)
            read += 1
    finally:
        consumer.close()
    print(f"read {read} of {count}", file=sys.stderr)
    return 0 if read == count else 1


if __name__ == "__main__":
    sys.exit(main())
