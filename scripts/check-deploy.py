#!/usr/bin/env python3
"""Offline checks of Vigil's deployment files (no cluster, no Docker).

  scripts/check-deploy.py            # run every check (scripts/test.sh does)
  scripts/check-deploy.py --write    # also rewrite deploy/queried-metrics.txt
  scripts/check-deploy.py --render deploy/overlays/production   # print YAML

1. Renders the Kustomize trees (deploy/base, deploy/overlays/production
   with the KEDA component and with the HPA component instead) with the
   small renderer below, which implements exactly the Kustomize features
   deploy/ uses and refuses any other field. When `kubectl` is on PATH the
   same trees are also rendered by `kubectl kustomize` and must be equal
   (VIGIL_CHECK_KUBECTL=0 skips that).
2. Validates every rendered object: built-in kinds against the Kubernetes
   OpenAPI schemas shipped by the `kubernetes-validate` package (strict:
   unknown fields fail), the KEDA and Prometheus Operator kinds against the
   CRD schemas vendored in deploy/schemas/ (also strict: a field the CRD
   does not declare fails, as with server-side field validation).
3. docker-compose.yml parses, validates against the Compose
   Specification's JSON schema (vendored in deploy/schemas/), and every
   file or directory it names exists.
4. Every COPY source of the Dockerfile exists and is not excluded by
   .dockerignore; every --from names an earlier stage.
5. deploy/prometheus/vigil-rules.yml (docker-compose's Prometheus) holds
   the PrometheusRule's groups (rewritten by --write).
6. Lists every metric name queried by the PrometheusRule and the Grafana
   dashboard into deploy/queried-metrics.txt (must be up to date); the
   integration test `kafka_worker_exports_every_metric_the_deploy_files_query`
   checks a live worker's /metrics has each one.

Exits 1 with every problem listed; prints `N passed, 0 failed` otherwise.
"""

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SCHEMAS = DEPLOY / "schemas"
METRICS_LIST = DEPLOY / "queried-metrics.txt"
COMPOSE_RULES = DEPLOY / "prometheus" / "vigil-rules.yml"
# Kubernetes version the manifests are validated against.
K8S_VERSION = "1.33"


class CheckError(Exception):
    """A problem found by a check."""


# --------------------------------------------------------------- rendering

KUSTOMIZATION_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "components",
    "namespace",
    "images",
    "configMapGenerator",
    "patches",
}


def load_yaml_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def go_json(value):
    """JSON as Go's encoding/json writes it for a map (keys sorted, no
    spaces, <, >, & and U+2028/9 escaped): Kustomize hashes this."""
    s = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        s = s.replace(ch, esc)
    return s


def configmap_hash(cm):
    """Kustomize's name suffix of a generated ConfigMap: the first 10 hex
    digits of the SHA-256 of {"data", "kind", "name"} as Go's JSON, with
    0, 1, 3, a, e mapped to g, h, k, m, t. The name is hashed as "":
    Kustomize looks it up with the single key "metadata/name", which is
    never there (checked against kubectl kustomize 5.5)."""
    enc = {"kind": "ConfigMap", "name": "", "data": cm.get("data", {})}
    digest = hashlib.sha256(go_json(enc).encode("utf-8")).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def json_pointer_parts(path):
    if not path.startswith("/"):
        raise CheckError(f"JSON patch path {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc, ops, where):
    """Applies RFC 6902 add/replace/remove operations."""
    for op in ops:
        kind = op.get("op")
        parts = json_pointer_parts(op["path"])
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        if isinstance(parent, list):
            idx = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(idx, op["value"])
            elif kind == "replace":
                parent[idx] = op["value"]
            elif kind == "remove":
                del parent[idx]
            else:
                raise CheckError(f"{where}: unsupported JSON patch op {kind!r}")
        else:
            if kind == "add":
                parent[last] = op["value"]
            elif kind == "replace":
                if last not in parent:
                    raise CheckError(f"{where}: replace of missing {op['path']}")
                parent[last] = op["value"]
            elif kind == "remove":
                del parent[last]
            else:
                raise CheckError(f"{where}: unsupported JSON patch op {kind!r}")


def pod_specs(obj):
    """The pod specs inside a workload object."""
    spec = obj.get("spec", {})
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        yield spec.get("template", {}).get("spec", {})
    elif obj["kind"] == "CronJob":
        yield spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    elif obj["kind"] == "Pod":
        yield spec


def rename_configmap_refs(obj, old, new):
    for ps in pod_specs(obj):
        for v in ps.get("volumes", []):
            if v.get("configMap", {}).get("name") == old:
                v["configMap"]["name"] = new
        for c in ps.get("containers", []) + ps.get("initContainers", []):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("configMapKeyRef")
                if ref and ref.get("name") == old:
                    ref["name"] = new
            for ef in c.get("envFrom", []):
                ref = ef.get("configMapRef")
                if ref and ref.get("name") == old:
                    ref["name"] = new


def image_name(image):
    """An image reference without its tag or digest."""
    image = image.split("@")[0]
    head, _, last = image.rpartition("/")
    last = last.split(":")[0]
    return f"{head}/{last}" if head else last


def set_images(obj, images):
    for ps in pod_specs(obj):
        for c in ps.get("containers", []) + ps.get("initContainers", []):
            for im in images:
                if image_name(c["image"]) == im["name"]:
                    new = im.get("newName", im["name"])
                    if "newTag" in im:
                        new += ":" + str(im["newTag"])
                    c["image"] = new


class Rendered:
    """Objects of a kustomization, with the generated ConfigMaps still
    waiting for their hash suffix (applied once, at the top)."""

    def __init__(self):
        self.objects = []
        self.generated = set()  # ids of generated ConfigMap objects

    def find(self, kind, name):
        return [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]


def render_into(acc, kdir, expect_kind, seen):
    kdir = kdir.resolve()
    if kdir in seen:
        raise CheckError(f"{kdir}: kustomization cycle")
    seen = seen | {kdir}
    kfile = kdir / "kustomization.yaml"
    if not kfile.exists():
        raise CheckError(f"{kdir}: no kustomization.yaml")
    k = load_yaml_docs(kfile)[0]
    unknown = set(k) - KUSTOMIZATION_FIELDS
    if unknown:
        raise CheckError(f"{kfile}: fields this renderer does not implement: {sorted(unknown)}")
    if k.get("kind", "Kustomization") != expect_kind:
        raise CheckError(f"{kfile}: kind {k.get('kind')!r}, expected {expect_kind}")
    for r in k.get("resources", []):
        p = kdir / r
        if p.is_dir():
            render_into(acc, p, "Kustomization", seen)
        elif p.is_file():
            acc.objects.extend(load_yaml_docs(p))
        else:
            raise CheckError(f"{kfile}: resource {r} does not exist")
    for c in k.get("components", []):
        render_into(acc, kdir / c, "Component", seen)
    for g in k.get("configMapGenerator", []):
        unknown = set(g) - {"name", "files", "behavior"}
        if unknown:
            raise CheckError(f"{kfile}: configMapGenerator fields not implemented: {sorted(unknown)}")
        data = {}
        for f in g.get("files", []):
            key, _, rel = f.partition("=") if "=" in f else (Path(f).name, "", f)
            src = (kdir / rel).resolve()
            # Kustomize's default load restrictor: files under the root only.
            if kdir not in src.parents:
                raise CheckError(f"{kfile}: {f} is outside the kustomization directory")
            data[key] = src.read_text(encoding="utf-8")
        behavior = g.get("behavior", "create")
        existing = acc.find("ConfigMap", g["name"])
        if behavior == "create":
            if existing:
                raise CheckError(f"{kfile}: ConfigMap {g['name']} already exists")
            cm = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": g["name"]}, "data": data}
            acc.objects.append(cm)
            acc.generated.add(id(cm))
        elif behavior in ("merge", "replace"):
            if len(existing) != 1:
                raise CheckError(f"{kfile}: {behavior} of ConfigMap {g['name']} that is not there")
            cm = existing[0]
            cm["data"] = {**cm.get("data", {}), **data} if behavior == "merge" else data
        else:
            raise CheckError(f"{kfile}: configMapGenerator behavior {behavior!r}")
    for p in k.get("patches", []):
        target = p.get("target", {})
        if set(p) != {"target", "patch"} or set(target) - {"kind", "name"}:
            raise CheckError(f"{kfile}: only inline JSON 6902 patches with a kind/name target are implemented")
        ops = yaml.safe_load(p["patch"])
        hits = [o for o in acc.objects
                if o["kind"] == target.get("kind", o["kind"])
                and o["metadata"]["name"] == target.get("name", o["metadata"]["name"])]
        if not hits:
            raise CheckError(f"{kfile}: patch target {target} matches nothing")
        # A strategic-merge patch that deletes its target (`$patch: delete`).
        if isinstance(ops, dict) and ops.get("$patch") == "delete":
            if ops.get("kind") != target.get("kind") or \
                    ops.get("metadata", {}).get("name") != target.get("name"):
                raise CheckError(f"{kfile}: a $patch: delete must name its target")
            acc.objects = [o for o in acc.objects if not any(o is h for h in hits)]
            continue
        if not isinstance(ops, list):
            raise CheckError(f"{kfile}: only JSON 6902 patches (a list of ops) and "
                             "$patch: delete are implemented")
        for o in hits:
            json_patch(o, ops, str(kfile))
    if "namespace" in k:
        for o in acc.objects:
            o["metadata"]["namespace"] = k["namespace"]
    for o in acc.objects:
        set_images(o, k.get("images", []))


def render(kdir, components=None):
    """Renders the kustomization at `kdir` (optionally with its
    `components` list replaced); returns the objects."""
    kdir = Path(kdir)
    acc = Rendered()
    if components is not None:
        with tempfile.TemporaryDirectory() as tmp:
            # Same relative paths: a sibling copy of the kustomization file.
            k = load_yaml_docs(kdir / "kustomization.yaml")[0]
            k["components"] = components
            variant = kdir.parent / f".variant-{os.getpid()}-{kdir.name}"
            shutil.copytree(kdir, variant)
            try:
                (variant / "kustomization.yaml").write_text(yaml.safe_dump(k))
                return render(variant)
            finally:
                shutil.rmtree(variant)
    render_into(acc, kdir, "Kustomization", frozenset())
    for o in acc.objects:
        if id(o) in acc.generated:
            old = o["metadata"]["name"]
            new = f"{old}-{configmap_hash(o)}"
            o["metadata"]["name"] = new
            for other in acc.objects:
                rename_configmap_refs(other, old, new)
    return acc.objects


def key(o):
    return (o["apiVersion"], o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])


def kubectl_render(kdir):
    out = subprocess.run(["kubectl", "kustomize", str(kdir)], check=True,
                         capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d is not None]


# -------------------------------------------------------------- validation

CRD_FILES = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_triggerauthentications.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
}


def strict(schema):
    """An OpenAPI v3 CRD schema as strict JSON Schema: objects with declared
    properties refuse undeclared ones (unless the CRD preserves unknown
    fields); `nullable` allows null."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    s = {k: strict(v) for k, v in schema.items()}
    if ("properties" in s and "additionalProperties" not in s
            and not s.get("x-kubernetes-preserve-unknown-fields")):
        s["additionalProperties"] = False
    if s.get("nullable") and "type" in s:
        s["type"] = [s["type"], "null"]
    return s


_crd_validators = {}


def crd_validator(api_version, kind):
    k = (api_version, kind)
    if k not in _crd_validators:
        crd = load_yaml_docs(SCHEMAS / CRD_FILES[k])[0]
        version = api_version.split("/")[1]
        [v] = [v for v in crd["spec"]["versions"] if v["name"] == version]
        schema = strict(v["schema"]["openAPIV3Schema"])
        _crd_validators[k] = jsonschema.Draft7Validator(schema)
    return _crd_validators[k]


def validate_object(o, where):
    import kubernetes_validate

    k = (o["apiVersion"], o["kind"])
    if k in CRD_FILES:
        errors = sorted(crd_validator(*k).iter_errors(o), key=lambda e: list(e.path))
        if errors:
            raise CheckError("; ".join(
                f"{where}: {o['kind']}/{o['metadata']['name']}: "
                f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors))
        return "crd"
    try:
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as e:
        raise CheckError(f"{where}: no schema for {o['apiVersion']} {o['kind']}: {e.message}")
    except kubernetes_validate.ValidationError as e:
        raise CheckError(f"{where}: {o['kind']}/{o['metadata']['name']}: "
                         f"{'.'.join(map(str, e.path))}: {e.message}")
    return "k8s"


# ------------------------------------------------------ compose, Dockerfile

def check_compose():
    path = ROOT / "docker-compose.yml"
    doc = load_yaml_docs(path)[0]
    services = doc.get("services") or {}
    if not services:
        raise CheckError("docker-compose.yml: no services")
    problems = []

    def exists(rel, what):
        if not (ROOT / rel).exists():
            problems.append(f"docker-compose.yml: {what}: {rel} does not exist")

    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    for e in sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path)):
        problems.append(f"docker-compose.yml: {'.'.join(map(str, e.path))}: {e.message}")
    named_volumes = set((doc.get("volumes") or {}).keys())
    for name, svc in services.items():
        build = svc.get("build")
        if build is not None:
            ctx = build if isinstance(build, str) else build.get("context", ".")
            exists(ctx, f"{name}.build.context")
            if isinstance(build, dict) and "dockerfile" in build:
                exists(Path(ctx) / build["dockerfile"], f"{name}.build.dockerfile")
            elif not (ROOT / ctx / "Dockerfile").exists():
                problems.append(f"docker-compose.yml: {name}: no Dockerfile in {ctx}")
        elif "image" not in svc:
            problems.append(f"docker-compose.yml: {name}: neither image nor build")
        for v in svc.get("volumes", []):
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith((".", "/")):
                exists(src, f"{name}.volumes")
            elif src and src not in named_volumes:
                problems.append(f"docker-compose.yml: {name}: volume {src} is not declared")
        for f in svc.get("env_file", []) if isinstance(svc.get("env_file"), list) else (
                [svc["env_file"]] if "env_file" in svc else []):
            exists(f, f"{name}.env_file")
        for dep in svc.get("depends_on", []) if isinstance(svc.get("depends_on"), list) else (
                svc.get("depends_on") or {}).keys():
            if dep not in services:
                problems.append(f"docker-compose.yml: {name} depends on unknown service {dep}")
    for section in ("configs", "secrets"):
        for name, c in (doc.get(section) or {}).items():
            if "file" in c:
                exists(c["file"], f"{section}.{name}")
    if problems:
        raise CheckError("\n".join(problems))
    return len(services)


def dockerignore_excludes(rel, patterns):
    """Whether .dockerignore excludes `rel` (or a parent of it): the last
    matching pattern decides, `!` re-includes."""
    import fnmatch

    parts = Path(rel).parts
    excluded = False
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        for pat in patterns:
            neg = pat.startswith("!")
            p = pat[1:] if neg else pat
            p = p.rstrip("/")
            if p.startswith("**/"):
                hit = fnmatch.fnmatch(prefix, p[3:]) or fnmatch.fnmatch(prefix, p)
                hit = hit or any(fnmatch.fnmatch("/".join(parts[j:i]), p[3:]) for j in range(i))
            else:
                hit = fnmatch.fnmatch(prefix, p) and prefix.count("/") == p.count("/")
            if hit:
                excluded = not neg
    return excluded


def check_dockerfile():
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    # Join continuation lines.
    lines = re.sub(r"\\\n", " ", text).splitlines()
    patterns = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
                if l.strip() and not l.strip().startswith("#")]
    stages, problems, copies = [], [], 0
    for line in lines:
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        instr = words[0].upper()
        if instr == "FROM":
            if "AS" in [w.upper() for w in words]:
                stages.append(words[[w.upper() for w in words].index("AS") + 1])
        elif instr in ("COPY", "ADD"):
            args = words[1:]
            opts = [a for a in args if a.startswith("--")]
            paths = [a for a in args if not a.startswith("--")]
            frm = [o.split("=", 1)[1] for o in opts if o.startswith("--from=")]
            if frm:
                if frm[0] not in stages:
                    problems.append(f"Dockerfile: {line.strip()}: stage {frm[0]} is not defined before")
                continue
            for src in paths[:-1]:
                copies += 1
                if not (ROOT / src).exists():
                    problems.append(f"Dockerfile: COPY source {src} does not exist")
                elif dockerignore_excludes(src, patterns):
                    problems.append(f"Dockerfile: COPY source {src} is excluded by .dockerignore")
    if not stages:
        problems.append("Dockerfile: no named build stage")
    if problems:
        raise CheckError("\n".join(problems))
    return copies


# ----------------------------------------------------------------- metrics

PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
    "group_right", "offset", "bool", "inf", "nan", "atan2",
    # Aggregation operators, also when `by (...)` comes before their
    # parentheses.
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk",
    "bottomk", "quantile", "count_values", "group", "limitk", "limit_ratio",
}


def promql_metric_names(expr):
    """Metric names an expression selects: identifiers that are not
    functions, keywords, label names, durations or strings."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)       # strings
    e = re.sub(r"'(?:[^'\\]|\\.)*'", "''", e)
    e = re.sub(r"\{[^}]*\}", "{}", e)                  # label matchers
    e = re.sub(r"\[[^\]]*\]", "[]", e)                 # ranges, subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", e)
    names = set()
    for m in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


def queried_metrics():
    names = {}
    rule = load_yaml_docs(DEPLOY / "base" / "prometheusrule.yaml")[0]
    for g in rule["spec"]["groups"]:
        for r in g["rules"]:
            for n in promql_metric_names(r["expr"]):
                names.setdefault(n, set()).add(f"rule {r.get('alert') or r.get('record')}")
    dash = json.loads((DEPLOY / "grafana" / "vigil.json").read_text())
    panels = list(dash.get("panels", []))
    while panels:
        p = panels.pop()
        panels.extend(p.get("panels", []))
        for t in p.get("targets", []):
            for n in promql_metric_names(t.get("expr", "")):
                names.setdefault(n, set()).add(f"panel {p.get('title')!r}")
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        inner = re.search(r"label_values\((.*),[^,]*\)$", q)
        if inner:
            for n in promql_metric_names(inner.group(1)):
                names.setdefault(n, set()).add(f"variable {v.get('name')}")
    return names


def dashboard_exprs():
    """(panel title, expression) of every dashboard query, with Grafana's
    variables replaced by what they stand for."""
    dash = json.loads((DEPLOY / "grafana" / "vigil.json").read_text())
    out = []
    panels = list(dash.get("panels", []))
    while panels:
        p = panels.pop(0)
        panels.extend(p.get("panels", []))
        for t in p.get("targets", []):
            e = t.get("expr", "")
            e = e.replace("$__rate_interval", "1m").replace("$__interval", "1m")
            e = re.sub(r"\$\{?\w+\}?", ".*", e)
            out.append((p.get("title"), e))
    return out


def check_promql(promtool):
    """`promtool check rules` on the alert rules, on every dashboard query
    (as recording rules) and `promtool test rules` on the alert tests."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        dash_rules = Path(tmp) / "dashboard-queries.yml"
        rules = [{"record": f"vigil:dashboard_query_{i}", "expr": e}
                 for i, (_, e) in enumerate(dashboard_exprs())]
        dash_rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
        for args in (["check", "rules", str(COMPOSE_RULES), str(dash_rules)],
                     ["test", "rules", str(DEPLOY / "prometheus" / "vigil-rules.test.yml")]):
            r = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=ROOT)
            if r.returncode != 0:
                problems.append(f"promtool {' '.join(args[:2])}:\n{r.stdout}{r.stderr}")
    if problems:
        raise CheckError("\n".join(problems))
    return (f"{len(rules)} dashboard queries and the alert rules parse; "
            "the alert unit tests (deploy/prometheus/vigil-rules.test.yml) pass")


def check_dashboard():
    dash = json.loads((DEPLOY / "grafana" / "vigil.json").read_text())
    problems = []
    for f in ("uid", "title", "panels", "schemaVersion"):
        if f not in dash:
            problems.append(f"deploy/grafana/vigil.json: no {f}")
    ids = set()
    for p in dash.get("panels", []):
        if p.get("id") in ids:
            problems.append(f"deploy/grafana/vigil.json: duplicate panel id {p.get('id')}")
        ids.add(p.get("id"))
        if p.get("type") != "row" and not p.get("targets"):
            problems.append(f"deploy/grafana/vigil.json: panel {p.get('title')!r} queries nothing")
    if problems:
        raise CheckError("\n".join(problems))
    return len(ids)


# -------------------------------------------------------------------- main

def main(argv):
    if len(argv) == 2 and argv[0] == "--render":
        for o in render(ROOT / argv[1]):
            print("---")
            print(yaml.safe_dump(o, sort_keys=False), end="")
        return 0
    write = argv == ["--write"]
    if argv and not write:
        print(__doc__, file=sys.stderr)
        return 2
    passed, failed = 0, 0

    def check(name, fn):
        nonlocal passed, failed
        try:
            detail = fn()
            passed += 1
            print(f"ok    {name}{f': {detail}' if detail is not None else ''}")
        except CheckError as e:
            failed += 1
            print(f"FAIL  {name}:\n  " + str(e).replace("\n", "\n  "))

    use_kubectl = shutil.which("kubectl") and os.environ.get("VIGIL_CHECK_KUBECTL", "1") != "0"
    prod = DEPLOY / "overlays" / "production"
    trees = [
        ("deploy/base", DEPLOY / "base", None),
        ("deploy/overlays/production (KEDA)", prod, None),
        ("deploy/overlays/production with components/hpa", prod, ["../../components/hpa"]),
    ]
    for label, kdir, comps in trees:
        def one(kdir=kdir, comps=comps, label=label):
            objs = render(kdir, comps)
            counts = {}
            for o in objs:
                how = validate_object(o, label)
                counts[how] = counts.get(how, 0) + 1
            kinds = sorted({o["kind"] for o in objs})
            if use_kubectl:
                if comps is None:
                    theirs = kubectl_render(kdir)
                else:
                    variant = kdir.parent / f".kubectl-{os.getpid()}-{kdir.name}"
                    shutil.copytree(kdir, variant)
                    try:
                        k = load_yaml_docs(variant / "kustomization.yaml")[0]
                        k["components"] = comps
                        (variant / "kustomization.yaml").write_text(yaml.safe_dump(k))
                        theirs = kubectl_render(variant)
                    finally:
                        shutil.rmtree(variant)
                mine = {key(o): o for o in objs}
                other = {key(o): o for o in theirs}
                if mine != other:
                    diff = sorted(set(mine) ^ set(other)) or [
                        k for k in mine if mine[k] != other[k]]
                    raise CheckError(f"{label}: differs from `kubectl kustomize` at {diff}")
            return (f"{len(objs)} objects ({counts.get('k8s', 0)} against Kubernetes "
                    f"{K8S_VERSION}, {counts.get('crd', 0)} against vendored CRDs)"
                    f"{', same as kubectl kustomize' if use_kubectl else ''}: {', '.join(kinds)}")
        check(f"render + validate {label}", one)

    def required_kinds():
        objs = render(prod)
        kinds = {o["kind"] for o in objs}
        want = {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "CronJob",
                "ServiceMonitor", "PrometheusRule", "ScaledObject"}
        if want - kinds:
            raise CheckError(f"production lacks {sorted(want - kinds)}")
        [dep] = [o for o in objs if o["kind"] == "Deployment"]
        ps = dep["spec"]["template"]["spec"]
        c = ps["containers"][0]
        problems = []
        if ps.get("terminationGracePeriodSeconds", 30) < 30:
            problems.append("terminationGracePeriodSeconds below the 25 s drain + margin")
        if not ps.get("securityContext", {}).get("runAsNonRoot"):
            problems.append("pod not runAsNonRoot")
        if not c.get("securityContext", {}).get("readOnlyRootFilesystem"):
            problems.append("container root filesystem not read-only")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            if c.get(probe, {}).get("httpGet", {}).get("path") != path:
                problems.append(f"{probe} is not {path}")
        for e in c.get("env", []):
            if "value" in e and re.search(r"(?i)password|secret", e["name"]):
                problems.append(f"env {e['name']} has a literal value: secrets come from secretKeyRef")
        # Storage: data and checkpoints in the object store, credentials
        # from the Secret, no shared volume (docs/storage.md "Object stores").
        if "PersistentVolumeClaim" in kinds:
            problems.append("production still has a PersistentVolumeClaim (data belongs in s3://)")
        needs = {"Deployment": ("VIGIL_DATA_DIR", "VIGIL_WORKER__STATE_DIR"),
                 "vigil-compact": ("VIGIL_DATA_DIR", "VIGIL_WORKER__STATE_DIR"),
                 "vigil-retention": ("VIGIL_DATA_DIR",)}
        for o in objs:
            if o["kind"] not in ("Deployment", "CronJob"):
                continue
            label = "Deployment" if o["kind"] == "Deployment" else o["metadata"]["name"]
            for ps in pod_specs(o):
                if any("persistentVolumeClaim" in v for v in ps.get("volumes", [])):
                    problems.append(f"{label}: mounts a PersistentVolumeClaim")
                for ct in ps.get("containers", []):
                    env = {e["name"]: e for e in ct.get("env", [])}
                    for var in needs.get(label, ()):
                        if not str(env.get(var, {}).get("value", "")).startswith("s3://"):
                            problems.append(f"{label}: {var} is not an s3:// location")
                    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                        ref = env.get(var, {}).get("valueFrom", {}).get("secretKeyRef", {})
                        if ref.get("name") != "vigil-s3":
                            problems.append(f"{label}: {var} does not come from the Secret vigil-s3")
        if problems:
            raise CheckError("; ".join(problems))
        return ("probes, grace period, security context, secret references; data, "
                "checkpoints and CronJobs on s3:// with credentials from the Secret")
    check("production Deployment essentials", required_kinds)
    check("docker-compose.yml", lambda: f"{check_compose()} services, valid against the "
          "Compose Specification schema, every referenced file exists")
    check("Dockerfile", lambda: f"{check_dockerfile()} COPY sources exist and are in the build context")
    check("Grafana dashboard", lambda: f"{check_dashboard()} panels")

    def metrics_list():
        names = queried_metrics()
        text = "".join(f"{n}\n" for n in sorted(names))
        header = ("# Metric names queried by deploy/base/prometheusrule.yaml and\n"
                  "# deploy/grafana/vigil.json, written by scripts/check-deploy.py --write.\n"
                  "# The integration test kafka_worker_exports_every_metric_the_deploy_files_query\n"
                  "# checks that a live worker exports each one.\n")
        if write:
            METRICS_LIST.write_text(header + text)
        current = METRICS_LIST.read_text() if METRICS_LIST.exists() else ""
        if current != header + text:
            raise CheckError(f"{METRICS_LIST.relative_to(ROOT)} is out of date: run "
                             "scripts/check-deploy.py --write")
        return f"{len(names)} names in {METRICS_LIST.relative_to(ROOT)}"
    check("queried metric names", metrics_list)

    def compose_rules():
        rule = load_yaml_docs(DEPLOY / "base" / "prometheusrule.yaml")[0]
        text = ("# Written by scripts/check-deploy.py --write from the groups of\n"
                "# deploy/base/prometheusrule.yaml (edit that file, not this one);\n"
                "# docker-compose.yml's Prometheus loads it.\n"
                + yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False, width=100))
        if write:
            COMPOSE_RULES.write_text(text)
        current = COMPOSE_RULES.read_text() if COMPOSE_RULES.exists() else ""
        if current != text:
            raise CheckError(f"{COMPOSE_RULES.relative_to(ROOT)} is out of date: run "
                             "scripts/check-deploy.py --write")
        return f"{COMPOSE_RULES.relative_to(ROOT)} has the PrometheusRule's groups"
    check("Prometheus rule file of docker-compose.yml", compose_rules)

    promtool = os.environ.get("VIGIL_PROMTOOL") or shutil.which("promtool")
    if promtool:
        check("PromQL of the alerts and the dashboard (promtool)", lambda: check_promql(promtool))
    elif os.environ.get("VIGIL_REQUIRE_PROMTOOL") == "1":
        failed += 1
        print("FAIL  promtool: VIGIL_REQUIRE_PROMTOOL=1 but no promtool (VIGIL_PROMTOOL or PATH)")
    else:
        print("SKIP  PromQL checks: no promtool (scripts/test.sh extracts it from Debian's "
              "prometheus package)")

    print(f"check-deploy: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
