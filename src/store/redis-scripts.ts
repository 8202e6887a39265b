/**
 * The Redis store's Lua scripts (schema 2). Every key name carries the one
 * hash tag `{ns}`, so every script may touch any key of the store (all in one
 * Cluster slot); KEYS[1] names one of them only so the script is routed to
 * that slot, and the rest are built from the prefix.
 *
 * Layout, under the prefix P = "{ns}:" (idc = compact id, o = sort key; see redis-codec.ts):
 *   P k:<idc>             hash: the record, one-letter fields
 *   P h:<hash[1..3]>      hash: hash[4..] → idc, the login path's lookup. A bucket per three leading
 *                         characters (262,144 of them) holds a few hashes in a listpack, far smaller
 *                         than a string key per hash; it stays a listpack to ~30 million keys
 *   P live, P revoked     zsets, score 0, member o..idc: every non-revoked / revoked key, by sort key
 *   P exp                 zset, score expiry ms, member idc: non-revoked keys that expire (the expired count)
 *   P n                   hash: k = keys, r = revoked (kept by every write)
 *   P seq                 counter behind the sort keys
 *   P al:<address>        zset, score expiry ms or +inf, member idc: the account's non-revoked keys
 *   P ar:<address>        zset, score 0, member o..idc: the account's revoked keys
 *   P ad:<address>        zset, score 0, member sha1(deviceId)[1..12]..idc: the account's non-revoked device keys
 *   P account:<address>   hash, JSON-encoded fields (as in schema 1); P alias:<name> → address
 *   P accounts            zset, score 0, member address; P upstream-accounts the same, for accounts with a route
 *   P value:<name>        string, a value with a lifetime (or a counter: addToCounter)
 *   P history:…, networks:…, webhook…   the activity (redis-activity.ts)
 *   P schema              "2"
 * Events: PUBLISH on P events, JSON with "key" (idc) or "address", and "origin".
 *
 * Every script's ARGV starts with the same five: P, now (ms), event channel,
 * origin (JSON), key limit per account ('' = none); its own arguments follow
 * from ARGV[6].
 */
export const HEADER_ARGS = 5;

const LIB = `
local P, NOW, CHANNEL, ORIGIN, LIMIT = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
local SORT_KEY = 20

local function devtag(d) return string.sub(redis.sha1hex(d), 1, 12) end

-- A key spec from ARGV[i] on (see keySpec in redis-codec.ts); returns it and the next index.
local function read_spec(i)
  local s = { idc = ARGV[i], hashc = ARGV[i + 1], created = tonumber(ARGV[i + 2]), expires = ARGV[i + 3],
    acct = ARGV[i + 4], device = ARGV[i + 5], revoked = ARGV[i + 6] == '1', fields = {} }
  local n = tonumber(ARGV[i + 7])
  for j = 1, n do s.fields[j] = ARGV[i + 7 + j] end
  s.active = (not s.revoked) and (s.expires == '' or tonumber(s.expires) > NOW)
  return s, i + 8 + n
end

local function hash_bucket(hashc) return P .. 'h:' .. string.sub(hashc, 1, 3), string.sub(hashc, 4) end

local function taken(s)
  local bucket, field = hash_bucket(s.hashc)
  return redis.call('EXISTS', P .. 'k:' .. s.idc) == 1 or redis.call('HEXISTS', bucket, field) == 1
end

-- The key limit: true when adding 'added' active keys would leave the account over it.
local function over_limit(acct, added)
  if LIMIT == nil or acct == '' or added <= 0 then return false end
  return redis.call('ZCOUNT', P .. 'al:' .. acct, '(' .. NOW, '+inf') + added > LIMIT
end

-- Whether the account's non-revoked key is active now.
local function is_active(acct, idc)
  local score = redis.call('ZSCORE', P .. 'al:' .. acct, idc)
  return score ~= false and tonumber(score) > NOW
end

-- Stores the record and every index and count of it; seq given when migrating.
local function insert(s, extra, seq)
  seq = seq or redis.call('INCR', P .. 'seq')
  local o = string.format('%011x%09x', s.created, seq)
  local kKey = P .. 'k:' .. s.idc
  redis.call('HSET', kKey, 'o', o, unpack(s.fields))
  if extra then redis.call('HSET', kKey, unpack(extra)) end
  local bucket, field = hash_bucket(s.hashc)
  redis.call('HSET', bucket, field, s.idc)
  local m = o .. s.idc
  redis.call('HINCRBY', P .. 'n', 'k', 1)
  if s.revoked then
    redis.call('HINCRBY', P .. 'n', 'r', 1)
    redis.call('ZADD', P .. 'revoked', 0, m)
    if s.acct ~= '' then redis.call('ZADD', P .. 'ar:' .. s.acct, 0, m) end
    return
  end
  redis.call('ZADD', P .. 'live', 0, m)
  if s.expires ~= '' then redis.call('ZADD', P .. 'exp', s.expires, s.idc) end
  if s.acct ~= '' then
    redis.call('ZADD', P .. 'al:' .. s.acct, s.expires == '' and '+inf' or s.expires, s.idc)
    if s.device ~= '' then redis.call('ZADD', P .. 'ad:' .. s.acct, 0, devtag(s.device) .. s.idc) end
  end
end

local function publish_revoked(idc, acct)
  redis.call('PUBLISH', CHANNEL, '{"type":"key-revoked","key":' .. cjson.encode(idc) .. ',"account":' .. (acct and cjson.encode(acct) or 'null') .. ',"origin":' .. ORIGIN .. '}')
end

-- Revokes a non-revoked key: moves it between the indexes and counts, and tells every instance. False when absent or revoked already.
local function revoke(idc, at)
  local kKey = P .. 'k:' .. idc
  local f = redis.call('HMGET', kKey, 'o', 'a', 'd', 'r')
  if not f[1] or f[4] then return false end
  redis.call('HSET', kKey, 'r', at)
  local m = f[1] .. idc
  redis.call('ZREM', P .. 'live', m)
  redis.call('ZADD', P .. 'revoked', 0, m)
  redis.call('ZREM', P .. 'exp', idc)
  redis.call('HINCRBY', P .. 'n', 'r', 1)
  if f[2] then
    redis.call('ZREM', P .. 'al:' .. f[2], idc)
    redis.call('ZADD', P .. 'ar:' .. f[2], 0, m)
    if f[3] then redis.call('ZREM', P .. 'ad:' .. f[2], devtag(f[3]) .. idc) end
  end
  publish_revoked(idc, f[2])
  return true
end

-- An account's non-revoked keys as sort-key members (o..idc), newest first, with their expiry scores; bounded by the key limit.
local function account_live_members(acct, min)
  local flat = redis.call('ZRANGE', P .. 'al:' .. acct, min or '-inf', '+inf', 'BYSCORE', 'WITHSCORES')
  local list, score = {}, {}
  for j = 1, #flat, 2 do
    local m = redis.call('HGET', P .. 'k:' .. flat[j], 'o') .. flat[j]
    list[#list + 1] = m
    score[m] = tonumber(flat[j + 1])
  end
  table.sort(list, function(x, y) return x > y end)
  return list, score
end

-- Appends {idc, HGETALL} for the first n sort-key members to out: how lists answer.
local function append_records(out, members, n)
  for i = 1, math.min(#members, n) do
    local idc = string.sub(members[i], SORT_KEY + 1)
    out[#out + 1] = idc
    out[#out + 1] = redis.call('HGETALL', P .. 'k:' .. idc)
  end
  return out
end

local function publish_account(addrJson)
  redis.call('PUBLISH', CHANNEL, '{"type":"account-changed","address":' .. addrJson .. ',"origin":' .. ORIGIN .. '}')
end

local function argv_from(first, last)
  local out = {}
  for i = first, last do out[#out + 1] = ARGV[i] end
  return out
end
`;

const SCRIPTS = {
  // KEYS: the hash's bucket, ARGV[6]: the rest of the hash. The login path's lookup in one round trip.
  // Returns {idc, HGETALL} or nil.
  kgFindByHash: `
local idc = redis.call('HGET', KEYS[1], ARGV[6])
if not idc then return false end
return {idc, redis.call('HGETALL', P .. 'k:' .. idc)}`,

  // ARGV[6..]: key spec.
  kgCreateKey: `
local s = read_spec(6)
if taken(s) then return 'CONFLICT' end
if s.active and over_limit(s.acct, 1) then return 'LIMIT' end
insert(s)
return 'OK'`,

  // ARGV[6]: idc, [7]: at. Returns {'OK', changed, HGETALL}.
  kgRevokeKey: `
local kKey = P .. 'k:' .. ARGV[6]
if redis.call('EXISTS', kKey) == 0 then return {'NOTFOUND'} end
local changed = revoke(ARGV[6], ARGV[7]) and 1 or 0
return {'OK', changed, redis.call('HGETALL', kKey)}`,

  // ARGV[6]: old idc, [7]: at, [8..]: the replacement's spec. Returns {'OK', old account or false}.
  kgRotateKey: `
local old = redis.call('HMGET', P .. 'k:' .. ARGV[6], 'o', 'a', 'r')
if not old[1] then return {'NOTFOUND'} end
if old[3] then return {'INACTIVE'} end
local s = read_spec(8)
if taken(s) then return {'CONFLICT'} end
-- Rotating an active key trades one for one; an expired one comes back to life, so it counts.
local freed = 0
if old[2] and old[2] == s.acct and is_active(old[2], ARGV[6]) then freed = 1 end
if s.active and over_limit(s.acct, 1 - freed) then return {'LIMIT'} end
revoke(ARGV[6], ARGV[7])
insert(s)
return {'OK', old[2]}`,

  // ARGV[6]: at, [7]: deviceId, [8..]: the new key's spec (without 'f').
  // Revokes the device's non-revoked keys (expired ones too) found through its index, newest first,
  // and links the newest from the new key. Returns {'OK', {{idc, HGETALL}...}}.
  kgReplaceDeviceKey: `
local s = read_spec(8)
if taken(s) then return {'CONFLICT'} end
local tag = devtag(ARGV[7])
local found = {}
for _, m in ipairs(redis.call('ZRANGE', P .. 'ad:' .. s.acct, '[' .. tag, '(' .. tag .. '\\255', 'BYLEX')) do
  local idc = string.sub(m, 13)
  local f = redis.call('HMGET', P .. 'k:' .. idc, 'd', 'o', 'r')
  if f[1] == ARGV[7] and not f[3] then found[#found + 1] = { idc = idc, o = f[2] } end
end
table.sort(found, function(x, y) return x.o > y.o end)
local freed = 0
for _, k in ipairs(found) do
  if is_active(s.acct, k.idc) then freed = freed + 1 end
end
if s.active and over_limit(s.acct, 1 - freed) then return {'LIMIT'} end
local revoked = {}
for _, k in ipairs(found) do
  revoke(k.idc, ARGV[6])
  revoked[#revoked + 1] = {k.idc, redis.call('HGETALL', P .. 'k:' .. k.idc)}
end
insert(s, found[1] and {'f', found[1].idc} or nil)
return {'OK', revoked}`,

  // KEYS: the records. ARGV[6..]: lastUsedAt, lastUsedIp, lastUsedProtocol per key ('' = none).
  // Only records that exist are updated.
  kgTouch: `
local n = 0
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local b = 5 + (i - 1) * 3
    redis.call('HSET', KEYS[i], 'u', ARGV[b + 1])
    if ARGV[b + 2] ~= '' then redis.call('HSET', KEYS[i], 'ui', ARGV[b + 2]) else redis.call('HDEL', KEYS[i], 'ui') end
    if ARGV[b + 3] ~= '' then redis.call('HSET', KEYS[i], 'up', ARGV[b + 3]) else redis.call('HDEL', KEYS[i], 'up') end
    n = n + 1
  end
end
return n`,

  // ARGV[6]: n account fields, [7..]: the account's fields (created when missing), then the key spec.
  kgImportKey: `
local nAcct = tonumber(ARGV[6])
local s = read_spec(7 + nAcct)
if taken(s) then return 'EXISTS' end
if s.active and over_limit(s.acct, 1) then return 'LIMIT' end
if s.acct ~= '' and redis.call('EXISTS', P .. 'account:' .. s.acct) == 0 then
  if redis.call('EXISTS', P .. 'alias:' .. s.acct) == 1 then return 'CONFLICT' end
  redis.call('HSET', P .. 'account:' .. s.acct, unpack(argv_from(7, 6 + nAcct)))
  redis.call('ZADD', P .. 'accounts', 0, s.acct)
end
insert(s)
return 'OK'`,

  // ARGV[6]: n keys, then per key: its schema-1 member, schema-1 hash, seq, and its spec.
  // Moves a batch of schema-1 keys to schema 2, each only while still listed in schema 1.
  kgMigrateKeys: `
local i = 7
local moved = 0
for _ = 1, tonumber(ARGV[6]) do
  local member, oldHash, seq = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local s, nexti = read_spec(i + 3)
  i = nexti
  if redis.call('ZSCORE', P .. 'keys', member) then
    if not taken(s) then
      insert(s, nil, seq)
      moved = moved + 1
    end
    redis.call('DEL', P .. 'key:' .. string.sub(member, 18), P .. 'hash:' .. oldHash)
    redis.call('ZREM', P .. 'keys', member)
    if s.acct ~= '' then redis.call('ZREM', P .. 'acct-keys:' .. s.acct, member) end
  end
end
return moved`,

  // Returns {keys, revoked, expired}, one consistent reading.
  kgCountKeys: `
local c = redis.call('HMGET', P .. 'n', 'k', 'r')
return {tonumber(c[1] or 0), tonumber(c[2] or 0), redis.call('ZCOUNT', P .. 'exp', '-inf', NOW)}`,

  // ARGV[6]: account ('' = every key), [7]: sort key to start below ('' = the newest), [8]: limit, [9]: budget,
  // [10]: state ('' | active | expired | revoked), [11]: name prefix, [12]: address prefix.
  // Walks the right index newest first, at most 'budget' members, and returns
  // {cursor member or false, idc, HGETALL, idc, HGETALL, ...} as one MessagePack string: a
  // thousand records as one reply rather than ~16,000 reply strings, which cost the server
  // most of a page's CPU to decode.
  kgListKeys: `
local acct, after, limit, budget, state, namePrefix, addrPrefix = ARGV[6], ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10], ARGV[11], ARGV[12]

-- Members below 'after', newest first, read 200 at a time.
local function lex(key)
  local max = after == '' and '+' or '(' .. after
  local buf, pos, done = {}, 1, false
  return function()
    if pos > #buf then
      if done then return nil end
      buf = redis.call('ZRANGE', key, max, '-', 'BYLEX', 'REV', 'LIMIT', 0, 200)
      pos, done = 1, #buf < 200
      if #buf == 0 then return nil end
      max = '(' .. buf[#buf]
    end
    pos = pos + 1
    return buf[pos - 1]
  end
end

-- An account's non-revoked keys (bounded by the key limit), sorted here; remembers each one's expiry.
local expiry = {}
local function account_live()
  local all
  all, expiry = account_live_members(acct)
  local pos = 0
  return function()
    repeat pos = pos + 1 until all[pos] == nil or after == '' or all[pos] < after
    return all[pos]
  end
end

local function merge(a, b)
  local x, y = a(), b()
  return function()
    local out
    if x and (not y or x > y) then out, x = x, a() else out, y = y, b() end
    return out
  end
end

local live, gone
if acct == '' then live, gone = function() return lex(P .. 'live') end, function() return lex(P .. 'revoked') end
else live, gone = account_live, function() return lex(P .. 'ar:' .. acct) end end
local nextm
if state == '' then nextm = merge(live(), gone())
elseif state == 'revoked' then nextm = gone()
else nextm = live() end

local function expired(m, idc)
  local e = expiry[m]
  if acct == '' then e = redis.call('ZSCORE', P .. 'exp', idc) end
  return e ~= nil and e ~= false and tonumber(e) <= NOW
end

local function matches(m)
  local idc = string.sub(m, SORT_KEY + 1)
  if (state == 'active' and expired(m, idc)) or (state == 'expired' and not expired(m, idc)) then return false end
  if namePrefix ~= '' or addrPrefix ~= '' then
    local f = redis.call('HMGET', P .. 'k:' .. idc, 'n', 'a')
    if namePrefix ~= '' and string.sub(f[1] or '', 1, #namePrefix) ~= namePrefix then return false end
    if addrPrefix ~= '' and string.sub(f[2] or '', 1, #addrPrefix) ~= addrPrefix then return false end
  end
  return true
end

local items, examined, last, more = {}, 0, nil, false
while true do
  local m = nextm()
  if not m then break end
  examined, last = examined + 1, m
  if matches(m) then
    if #items == limit then more = true break end
    items[#items + 1] = m
  end
  if examined >= budget then break end
end
local cursor = false
if more then cursor = items[#items] elseif examined >= budget then cursor = last end
return cmsgpack.pack(append_records({cursor}, items, limit))`,

  // ARGV[6]: account, [7]: at most this many. The account's active keys, newest first: {idc, HGETALL, ...}.
  kgActiveKeys: `
return append_records({}, account_live_members(ARGV[6], '(' .. NOW), tonumber(ARGV[7]))`,

  // KEYS: counter (a value)  ARGV[6]: amount, [7]: ttl ms ('' = none). A fixed window: the lifetime is set only when the counter starts.
  kgAddToCounter: `
local n = redis.call('INCRBY', KEYS[1], ARGV[6])
if ARGV[7] ~= '' and redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[7]) end
return n`,

  // KEYS: value  ARGV[6]: expected. Deletes only while the value is still the one the caller holds.
  kgDeleteValueIf: `
if redis.call('GET', KEYS[1]) == ARGV[6] then return redis.call('DEL', KEYS[1]) end
return 0`,

  // ARGV[6]: address, [7]: n aliases, [8..]: aliases, then the account's fields.
  // Returns {'CONFLICT', i}: 0 = the address, i = the i-th alias; or {'OK', HGETALL}.
  kgCreateAccount: `
local addr, nAlias = ARGV[6], tonumber(ARGV[7])
local acc = P .. 'account:' .. addr
if redis.call('EXISTS', acc) == 1 or redis.call('EXISTS', P .. 'alias:' .. addr) == 1 then return {'CONFLICT', 0} end
for i = 1, nAlias do
  local a = ARGV[7 + i]
  if redis.call('EXISTS', P .. 'alias:' .. a) == 1 or redis.call('EXISTS', P .. 'account:' .. a) == 1 then return {'CONFLICT', i} end
end
redis.call('HSET', acc, unpack(argv_from(8 + nAlias, #ARGV)))
redis.call('ZADD', P .. 'accounts', 0, addr)
if redis.call('HGET', acc, 'upstream') ~= 'null' then redis.call('ZADD', P .. 'upstream-accounts', 0, addr) end
for i = 1, nAlias do redis.call('SET', P .. 'alias:' .. ARGV[7 + i], addr) end
return {'OK', redis.call('HGETALL', acc)}`,

  // ARGV[6]: address, [7..]: fields of a bare account.
  kgEnsureAccount: `
local acc = P .. 'account:' .. ARGV[6]
if redis.call('EXISTS', acc) == 0 then
  if redis.call('EXISTS', P .. 'alias:' .. ARGV[6]) == 1 then return {'CONFLICT'} end
  redis.call('HSET', acc, unpack(argv_from(7, #ARGV)))
  redis.call('ZADD', P .. 'accounts', 0, ARGV[6])
end
return {'OK', redis.call('HGETALL', acc)}`,

  // ARGV[6]: address, [7]: expected aliases JSON ('' = aliases not patched), [8]: new aliases JSON,
  // [9]: n old aliases, [10]: n new aliases, then old aliases, new aliases, then field/value pairs.
  kgUpdateAccount: `
local addr, expected, newJson, nOld, nNew = ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10])
local acc = P .. 'account:' .. addr
if redis.call('EXISTS', acc) == 0 then return {'NOTFOUND'} end
local first = 11 + nOld + nNew
if expected ~= '' then
  if redis.call('HGET', acc, 'aliases') ~= expected then return {'RETRY'} end
  for i = 1, nNew do
    local a = ARGV[10 + nOld + i]
    local owner = redis.call('GET', P .. 'alias:' .. a)
    if (owner and owner ~= addr) or redis.call('EXISTS', P .. 'account:' .. a) == 1 then return {'CONFLICT', i} end
  end
  for i = 1, nOld do
    local k = P .. 'alias:' .. ARGV[10 + i]
    if redis.call('GET', k) == addr then redis.call('DEL', k) end
  end
  for i = 1, nNew do redis.call('SET', P .. 'alias:' .. ARGV[10 + nOld + i], addr) end
  redis.call('HSET', acc, 'aliases', newJson)
end
if first <= #ARGV then redis.call('HSET', acc, unpack(argv_from(first, #ARGV))) end
if redis.call('HGET', acc, 'upstream') ~= 'null' then redis.call('ZADD', P .. 'upstream-accounts', 0, addr)
else redis.call('ZREM', P .. 'upstream-accounts', addr) end
publish_account(redis.call('HGET', acc, 'address'))
return {'OK', redis.call('HGETALL', acc)}`,

  // ARGV[6]: address, [7]: at, [8]: expected aliases JSON, [9..]: the aliases.
  // Revokes the account's non-revoked keys (found through its index: bounded by the key limit).
  kgDeleteAccount: `
local addr = ARGV[6]
local acc = P .. 'account:' .. addr
if redis.call('EXISTS', acc) == 0 then return {'NOTFOUND'} end
if redis.call('HGET', acc, 'aliases') ~= ARGV[8] then return {'RETRY'} end
local revoked = {}
for _, idc in ipairs(redis.call('ZRANGE', P .. 'al:' .. addr, 0, -1)) do
  if revoke(idc, ARGV[7]) then revoked[#revoked + 1] = idc end
end
for i = 9, #ARGV do
  local k = P .. 'alias:' .. ARGV[i]
  if redis.call('GET', k) == addr then redis.call('DEL', k) end
end
local addrJson = redis.call('HGET', acc, 'address')
redis.call('DEL', acc)
redis.call('ZREM', P .. 'accounts', addr)
redis.call('ZREM', P .. 'upstream-accounts', addr)
publish_account(addrJson)
return {'OK', revoked}`,
} as const;

export type ScriptName = keyof typeof SCRIPTS;

/** Each script with the shared library in front, as ioredis defineCommand takes them. */
export const LUA_SCRIPTS: Record<ScriptName, string> = Object.fromEntries(Object.entries(SCRIPTS).map(([name, body]) => [name, LIB + body])) as Record<
  ScriptName,
  string
>;
