// Checks Vigil's ECS encoding of alert events against the ECS field
// definitions of the npm package @elastic/ecs (EcsFlat: every field's
// name, type and allowed values), not against Vigil's own code. Run by
// tests/integration/siem.rs.
//
//   node check_ecs.js ECS_MODULE_DIR events.ecs [alerts|security]
//
// `security` checks security events (`vigil export --dataset
// security_events`): event.kind `event` and the authentication fields
// instead of an alert's rule.
//
// Every leaf of every document must be an ECS field of a compatible type
// (or under `labels.*`, or the custom `vigil.*` field set); fields with
// allowed values (event.kind, event.category, event.type) must use them;
// the required core fields must be present. Exits non-zero on the first
// problem.

const fs = require("fs");
const { EcsFlat, EcsVersion } = require(process.argv[2]);

const lines = fs.readFileSync(process.argv[3], "utf8").split("\n").filter((l) => l !== "");

function fail(i, msg) {
  console.error(`FAIL ecs event ${i}: ${msg}`);
  process.exit(1);
}

// Leaves of a nested document as [dotted name, value]; arrays are leaves.
function flatten(obj, prefix, out) {
  for (const [k, v] of Object.entries(obj)) {
    const name = prefix ? `${prefix}.${k}` : k;
    if (v !== null && typeof v === "object" && !Array.isArray(v)) {
      flatten(v, name, out);
    } else {
      out.push([name, v]);
    }
  }
  return out;
}

function typeOk(type, v) {
  switch (type) {
    case "keyword":
    case "constant_keyword":
    case "wildcard":
    case "match_only_text":
    case "text":
    case "ip":
      return typeof v === "string";
    case "date":
      return typeof v === "string" && !Number.isNaN(Date.parse(v));
    case "long":
    case "integer":
    case "short":
    case "byte":
      return Number.isInteger(v);
    case "float":
    case "double":
    case "scaled_float":
      return typeof v === "number";
    case "boolean":
      return typeof v === "boolean";
    default:
      return false;
  }
}

const mode = process.argv[4] || "alerts";
const common = ["@timestamp", "event.kind", "event.category", "event.type", "ecs.version", "host.name", "organization.id", "message"];
const required = mode === "security"
  ? common.concat(["event.action", "event.outcome", "event.dataset"])
  : common.concat(["rule.name"]);
const kind = mode === "security" ? "event" : "alert";

lines.forEach((line, i) => {
  const doc = JSON.parse(line);
  const leaves = flatten(doc, "", []);
  const names = new Set(leaves.map(([n]) => n));
  for (const r of required) {
    if (!names.has(r)) fail(i, `missing ${r}`);
  }
  for (const [name, value] of leaves) {
    if (name.startsWith("vigil.")) continue; // the custom field set
    if (name.startsWith("labels.")) {
      if (typeof value !== "string") fail(i, `${name} is not a keyword`);
      if (name.split(".").length !== 2) fail(i, `${name}: label names must not contain dots`);
      continue;
    }
    const def = EcsFlat[name];
    if (!def) fail(i, `${name} is not an ECS field`);
    const values = Array.isArray(value) ? value : [value];
    if (Array.isArray(value) && def.normalize && !def.normalize.includes("array")) {
      fail(i, `${name} is not an array field`);
    }
    for (const v of values) {
      if (!typeOk(def.type, v)) fail(i, `${name}: ${JSON.stringify(v)} is not of ECS type ${def.type}`);
      if (def.allowed_values && !def.allowed_values.some((a) => a.name === v)) {
        fail(i, `${name}: ${JSON.stringify(v)} is not an allowed value`);
      }
    }
  }
  if (doc.event.kind !== kind) fail(i, `event.kind is not ${kind}`);
});
console.log(`ecs (${mode}): ${lines.length} documents use only ECS ${EcsVersion} fields (plus labels.* and vigil.*)`);
