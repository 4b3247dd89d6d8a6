// Decodes Sparkplug B payloads with Eclipse Tahu's JavaScript codec (npm sparkplug-payload), not the gateway's
// code: node sparkplug_decode.js < messages.jsonl
//
// Input: one JSON object per line, {"topic": "spBv1.0/...", "payload": "<base64>"}, in the order a host
// received them. Output: one JSON object per line, {"topic": ..., "payload": <decodePayload's result>}, with
// 64-bit integers (protobufjs Longs) as decimal strings.
//
// Like a host application, it keeps each edge node's births: DDATA metrics carry only an alias (no name, no
// datatype, as the specification wants), and sparkplug-payload decodes a value only with its datatype, so
// each DDATA metric is given the datatype its birth declared (and, for reading, its name) before Tahu's
// decodePayload runs. Two gaps of sparkplug-payload 1.0.3 are filled per the specification from the
// protobuf message it decoded: array datatypes (it has no decoder for them) are unpacked from their
// little-endian bytes, UInt32 values sent in int_value (it reads only long_value) are taken from there, and
// Int64 values are read as signed (see below).
const readline = require("readline");
const Long = require("long");
const sparkplug = require("sparkplug-payload").get("spBv1.0");
const { Payload } = require("sparkplug-payload/lib/sparkplugPayloadProto").org.eclipse.tahu.protobuf;

const ARRAYS = {
  22: ["Int8Array", 1, (b, o) => b.readInt8(o)],
  23: ["Int16Array", 2, (b, o) => b.readInt16LE(o)],
  24: ["Int32Array", 4, (b, o) => b.readInt32LE(o)],
  25: ["Int64Array", 8, (b, o) => b.readBigInt64LE(o).toString()],
  26: ["UInt8Array", 1, (b, o) => b.readUInt8(o)],
  27: ["UInt16Array", 2, (b, o) => b.readUInt16LE(o)],
  28: ["UInt32Array", 4, (b, o) => b.readUInt32LE(o)],
  29: ["UInt64Array", 8, (b, o) => b.readBigUInt64LE(o).toString()],
  30: ["FloatArray", 4, (b, o) => b.readFloatLE(o)],
  31: ["DoubleArray", 8, (b, o) => b.readDoubleLE(o)],
  32: ["BooleanArray"],
  33: ["StringArray"],
  34: ["DateTimeArray", 8, (b, o) => b.readBigInt64LE(o).toString()],
};

function unpack(datatype, bytes) {
  const b = Buffer.from(bytes);
  const [name, size, read] = ARRAYS[datatype];
  if (name === "BooleanArray") {
    const n = b.readUInt32LE(0);
    return Array.from({ length: n }, (_, i) => ((b[4 + (i >> 3)] >> (7 - (i & 7))) & 1) === 1);
  }
  if (name === "StringArray") return b.toString("utf8").split("\0").slice(0, -1);
  return Array.from({ length: b.length / size }, (_, i) => read(b, i * size));
}

function plain(value) {
  if (Long.isLong(value)) return value.toString();
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Uint8Array) return Array.from(value);
  if (Array.isArray(value)) return value.map(plain);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  }
  return value;
}

const births = new Map(); // "group/node" -> Map(alias -> {name, datatype})

function decode(topic, raw) {
  const [, group, kind, node] = topic.split("/");
  const key = `${group}/${node}`;
  const proto = Payload.decode(raw);
  if (kind === "NBIRTH") births.set(key, new Map());
  const known = births.get(key) || new Map();
  const names = [];
  for (const m of proto.metrics) {
    const alias = m.alias !== undefined && m.alias !== null ? Long.fromValue(m.alias).toString() : null;
    if (kind.endsWith("BIRTH")) {
      if (alias !== null) known.set(alias, { name: m.name, datatype: m.datatype });
      names.push(m.name);
    } else {
      const def = alias !== null ? known.get(alias) : undefined;
      if (def && !m.datatype) m.datatype = def.datatype;
      names.push(m.name || (def ? def.name : null));
    }
  }
  const payload = sparkplug.decodePayload(Payload.encode(proto).finish());
  (payload.metrics || []).forEach((metric, i) => {
    const p = proto.metrics[i];
    if (!metric.name && names[i]) metric.name = names[i];
    if (p.datatype in ARRAYS) {
      metric.type = ARRAYS[p.datatype][0];
      metric.value = p.isNull ? null : unpack(p.datatype, p.bytesValue);
    }
    if (metric.type === "UInt32" && metric.value == null && p.intValue != null) metric.value = p.intValue;
    // its `instanceof Long` test fails when npm installs a second copy of long for it: signed by hand then
    if (metric.type === "Int64" && Long.isLong(metric.value)) metric.value = Long.fromValue(metric.value).toSigned();
    for (const [k, prop] of Object.entries(metric.properties || {})) {
      if (prop.type === "UInt32" && prop.value == null) {
        prop.value = p.properties.values[p.properties.keys.indexOf(k)].intValue;
      }
    }
  });
  return payload;
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  const { topic, payload } = JSON.parse(line);
  let out;
  try {
    out = topic.includes("/STATE/") ? { topic } : { topic, payload: plain(decode(topic, Buffer.from(payload, "base64"))) };
  } catch (err) {
    out = { topic, error: String(err && err.stack || err) };
  }
  process.stdout.write(JSON.stringify(out) + "\n");
});
