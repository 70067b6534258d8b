#!/usr/bin/env python3
"""Redis bytes per idle SKU and per live hold through the real inventory Lua scripts, in the
shapes of `holdfast-load bench inventory`: SKUs set by set_stock.lua (outbox then deleted), then
one-line holds by reserve_single.lua (10 per SKU), then the same number of holds on one SKU. Records
go to the pooled layout, the record shard declared as res:{T}:pooled as the service does on
standalone Redis (keys::record_shard; T the shortest tag of the rid's cluster slot), with
res:{rid} declared as the legacy key; the sweeper's index is
the bucket's shard inv:expiries:<n> (keys::expiry_index).
usage: scripts/inventory_memory.py LUA_DIR PORT SKUS HOLDS HOT_HOLDS  (a running, empty redis-server
on PORT: it is FLUSHALLed)."""
import sys, subprocess, json, time
luadir, port = sys.argv[1], sys.argv[2]
skus, holds, hot = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def resp(*args):
    out = ['*%d\r\n' % len(args)]
    for a in args:
        a = str(a).encode()
        out.append('$%d\r\n' % len(a)); out.append(a.decode() + '\r\n')
    return ''.join(out)
def cli(*a):
    return subprocess.run(['redis-cli','-p',port]+list(a),capture_output=True,text=True).stdout.strip()
def pipe(cmds):
    subprocess.run(['redis-cli','-p',port,'--pipe'],input=''.join(cmds),capture_output=True,text=True,check=True)
def mem():
    return int([l for l in cli('info','memory').splitlines() if l.startswith('used_memory:')][0].split(':')[1])
def body(f):
    # The script as the services load it: the preludes its first line names, then the script
    # (lua/README.md; holdfast_platform::redis::prelude::assemble).
    src = open(f'{luadir}/{f}.lua').read()
    first = src.split('\n', 1)[0]
    names = first[len('--! prelude:'):].split(',') if first.startswith('--! prelude:') else []
    return ''.join(open(f'{luadir}/lib/{n.strip()}.lua').read() for n in names) + src
def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xffff if crc & 0x8000 else (crc << 1) & 0xffff
    return crc
def slot(key):
    o = key.find('{')
    if o >= 0:
        c = key.find('}', o + 1)
        if c > o + 1: key = key[o + 1:c]
    return crc16(key.encode()) % 16384
# The record shard of a rid as declared on standalone Redis: `res:{T}:pooled`, T the shortest tag
# of the rid's slot (keys::record_shard).
ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'
TAGS, n = {}, 0
while len(TAGS) < 16384:
    m, tag = n + 1, ''
    while m > 0:
        m -= 1; tag += ALPHABET[m % 62]; m //= 62
    TAGS.setdefault(slot(tag), tag); n += 1
def record(rid): return 'res:{%s}:pooled' % TAGS[slot('res:{%s}' % rid)]
# The sweeper's index shard of a bucket tag (keys::expiry_index: its slot mod 256).
def expiry_index(tag): return 'inv:expiries:%d' % (slot(tag) % 256)
sha = {}
for f in ['set_stock','reserve_single']:
    sha[f] = cli('script','load',body(f))
def keys(tag): return [f'inv:{{{tag}}}', f'inv:{{{tag}}}:holds', f'inv:{{{tag}}}:held', f'inv:{{{tag}}}:events']
cli('flushall')
m0 = mem()
cmds=[]
for i in range(skus):
    t=f'SKU-{i:08}'
    cmds.append(resp('evalsha',sha['set_stock'],4,*keys(t),1000,1,t,0,''))
    cmds.append(resp('del',f'inv:{{{t}}}:events'))
pipe(cmds)
m1 = mem()
per_sku=(m1-m0)/skus
def reserve(rid, t, stream_del=True):
    k=keys(t)
    return resp('evalsha',sha['reserve_single'],7,record(rid),k[0],k[1],k[2],k[3],expiry_index(t),f'res:{{{rid}}}',
      rid,1,3600000,t,0,'0123456789abcdef',json.dumps([[t,1,0]],separators=(',',':')),86400000,t,600000)
withholds = max(1, min(skus, (holds+9)//10))
cmds=[]
for i in range(holds):
    t=f'SKU-{i % withholds:08}'
    cmds.append(reserve(f'{i:032x}', t))
pipe(cmds)
pipe([resp('del',f'inv:{{SKU-{i:08}}}:events') for i in range(withholds)])
m2=mem()
per_hold=(m2-m1)/holds
res_share = None
# hot
pipe([resp('evalsha',sha['set_stock'],4,*keys('BENCH-HOT'),hot*2,1,'BENCH-HOT',0,''), resp('del','inv:{BENCH-HOT}:events')])
m3=mem()
cmds=[reserve(f'{(2**64-1-i):032x}','BENCH-HOT') for i in range(hot)]
pipe(cmds)
cli('del','inv:{BENCH-HOT}:events')
m4=mem()
enc = {k: cli('object','encoding',k) for k in ['inv:{BENCH-HOT}:holds','inv:{BENCH-HOT}:held','inv:{BENCH-HOT}:hx','inv:{BENCH-HOT}:h0']}
# Every record hash's encoding, and how many there are.
enc['records'] = json.loads(cli('eval', "local c = {} for _, k in ipairs(redis.call('KEYS', 'res:*')) do "
    "local e = redis.call('OBJECT', 'ENCODING', k) c[e] = (c[e] or 0) + 1 end return cjson.encode(c)", '0'))
print(json.dumps({'per_idle_sku':round(per_sku,1),'per_hold':round(per_hold,1),'per_hold_hot':round((m4-m3)/hot,1),'enc':enc, 'hot_fields': cli('hmget','inv:{BENCH-HOT}','hs','hn','reserved')}))
