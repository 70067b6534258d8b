#!/usr/bin/env python3
"""A consumer group member that joins, reads, and then never leaves: killed by the test.

Uses PyPI confluent-kafka (no holdfast code). Joins GROUP on TOPIC, prints `assigned` once it
holds partitions and has read a record, then keeps polling (and heartbeating) until it is
killed. A SIGKILL leaves its member in the group until its session times out, as a crashed
process's consumer does.

    kafka_group_member.py BOOTSTRAP TOPIC GROUP [TIMEOUT_SECONDS]
"""

import sys
import time

from confluent_kafka import Consumer


def main() -> int:
    bootstrap, topic, group = sys.argv[1], sys.argv[2], sys.argv[3]
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            # Short, so the test waits 10 s for the dead member's session, not 45.
            "session.timeout.ms": 10000,
        }
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        message = consumer.poll(0.2)
        if not announced and message is not None and message.error() is None:
            print("assigned", flush=True)
            announced = True
        if not announced and time.monotonic() > deadline:
            print("no record within the deadline", file=sys.stderr, flush=True)
            return 1


if __name__ == "__main__":
    sys.exit(main())
