#!/usr/bin/env python3
"""Redis time per item of reserve_batch.lua, the script alone: batches of 64 one-unit Reserves
of fresh ids on one SKU, as the service's batcher sends them on standalone Redis (records pooled:
res:{T}:pooled and the legacy res:{rid} declared per item), read from `INFO commandstats`
(`usec` of EVALSHA / items). Modes: `sold_out` (the service's marker stands: every item is
refused and its refusal recorded) and `live` (every item is held; the outbox is emptied between
calls, as the relay would). Several LUA_DIRs are run in turn, ROUNDS times, for an A/B on one
redis-server.
usage: scripts/reserve_batch_cost.py PORT MODE CALLS ROUNDS LUA_DIR [LUA_DIR ...]
(a running redis-server on PORT that may be emptied: it is FLUSHALLed before each run)."""
import os
import re
import socket
import sys

BATCH = 64
SKU = 'BENCH-SOLDOUT'


def body(luadir, name):
    # As the services load it: the preludes its first line names, then the script
    # (lua/README.md; holdfast_platform::redis::prelude::assemble).
    src = open(os.path.join(luadir, name)).read()
    first = src.split('\n', 1)[0]
    out = ''
    if first.startswith('--! prelude:'):
        for lib in (n.strip() for n in first.split(':', 1)[1].split(',')):
            part = open(os.path.join(luadir, 'lib', lib + '.lua')).read()
            out += part if part.endswith('\n') else part + '\n'
    return out + src


class Redis:
    def __init__(self, port):
        self.sock = socket.create_connection(('127.0.0.1', port))
        self.file = self.sock.makefile('rb')

    def call(self, *args):
        out = [b'*%d\r\n' % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b'$%d\r\n%s\r\n' % (len(a), a))
        self.sock.sendall(b''.join(out))
        return self.read()

    def read(self):
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b'+':
            return rest.decode()
        if kind == b'-':
            raise RuntimeError(rest.decode())
        if kind == b':':
            return int(rest)
        if kind == b'$':
            n = int(rest)
            return None if n < 0 else self.file.read(n + 2)[:-2]
        n = int(rest)
        return None if n < 0 else [self.read() for _ in range(n)]


def run(redis, luadir, mode, calls):
    redis.call('FLUSHALL')
    sha = redis.call('SCRIPT', 'LOAD', body(luadir, 'reserve_batch.lua'))
    inv = 'inv:{%s}' % SKU
    if mode == 'live':
        redis.call('HSET', inv, 'on_hand', 10**9, 'reserved', 0, 'sold', 0)
    else:
        redis.call('HSET', inv, 'on_hand', 10, 'reserved', 10, 'sold', 0)
    serial = [0]

    def batch():
        keys = [inv, inv + ':holds', inv + ':held', inv + ':events', 'inv:expiries:0']
        records, legacy = [], []
        argv = [SKU, 0, SKU, 86_400_000, 600_000, BATCH, mode]
        for _ in range(BATCH):
            serial[0] += 1
            rid = 'stream-%d' % serial[0]
            records.append('res:{%d}:pooled' % (serial[0] % 16384))
            legacy.append('res:{%s}' % rid)
            fingerprint = '%016x' % (serial[0] * 2654435761 % (1 << 64))
            argv += [rid, 1, 600_000, fingerprint, '[["%s",1,0]]' % SKU]
        argv.append('empty')
        reply = redis.call('EVALSHA', sha, len(keys) + 2 * BATCH, *keys, *records, *legacy, *argv)
        if mode == 'live':
            redis.call('DEL', inv + ':events')
        return reply

    for _ in range(20):  # the pool's first generations and shards
        batch()
    redis.call('CONFIG', 'RESETSTAT')
    for _ in range(calls):
        reply = batch()
    want = b'reserved' if mode == 'live' else b'rejected'
    if reply[0][0] != want:
        raise RuntimeError('unexpected answer %r' % (reply[0],))
    stats = redis.call('INFO', 'commandstats').decode()
    m = re.search(r'cmdstat_evalsha:calls=(\d+),usec=(\d+)', stats)
    return int(m.group(2)) / (int(m.group(1)) * BATCH)


def main():
    port, mode, calls, rounds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    dirs = sys.argv[5:]
    if mode not in ('live', 'sold_out') or not dirs:
        sys.exit(__doc__)
    redis = Redis(port)
    figures = {d: [] for d in dirs}
    for _ in range(rounds):
        for d in dirs:
            figures[d].append(run(redis, d, mode, calls))
    for d in dirs:
        runs = sorted(figures[d])
        print('%s %s: %.1f us per item (median of %d: %s)' % (
            mode, d, runs[len(runs) // 2], len(runs), ', '.join('%.1f' % v for v in figures[d])))


if __name__ == '__main__':
    main()
