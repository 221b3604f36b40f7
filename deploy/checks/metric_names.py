#!/usr/bin/env python3
"""Checks that every metric the dashboard and the alert rules query exists.

The exported names are read from the code: each file that builds a
`Registry::with_prefix("P")` and calls `.register("name", "help", x.clone())`
exports P_name, with the suffixes prometheus-client's text encoder adds
(`_total` for a counter; `_bucket`, `_sum`, `_count` for a histogram; none for
a gauge). A metric's type and labels come from the declaration of `x`
(`x: Family<Labels, Counter>`, `let x = Gauge::default()`, ...) and from the
fields of its `EncodeLabelSet` struct.

In every PromQL expression (alerts.yml `expr`, each dashboard target's
`expr`) it then checks:
  - each metric name is exported (or is one of Prometheus's own, `up`);
  - each label in a selector, and in `by (...)`/`without (...)`, is one of
    that metric's labels, `le` on a histogram's buckets, or a target label
    Prometheus adds (job, instance);
  - each value matched with `=` (or each plain word of an `=~` alternation)
    appears as a string literal in the code, so `outcome="acepted"` fails.

Usage: metric_names.py REPO_ROOT RULES.yml... DASHBOARD.json...
Exits 1 listing every unknown name, label or value.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SOURCE_DIRS = ("ingest/src", "worker/src", "shared/src")
# Labels Prometheus itself attaches to every scraped series.
TARGET_LABELS = {"job", "instance"}
# Series that are not the application's: Prometheus's own.
PROMETHEUS_SERIES = {"up"}
PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan", "atan2", "start", "end",
}


@dataclass
class Metric:
    name: str  # as registered, with the prefix: idv_ingest_requests
    kind: str  # counter | gauge | histogram
    labels: set[str] = field(default_factory=set)
    where: str = ""

    def exposed(self) -> dict[str, set[str]]:
        """The series names the text encoder writes, each with its labels."""
        if self.kind == "counter":
            return {self.name + "_total": set(self.labels)}
        if self.kind == "histogram":
            return {
                self.name + "_bucket": set(self.labels) | {"le"},
                self.name + "_sum": set(self.labels),
                self.name + "_count": set(self.labels),
            }
        return {self.name: set(self.labels)}


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def label_structs(sources: dict[Path, str]) -> dict[str, set[str]]:
    """Fields of every struct deriving EncodeLabelSet, by struct name."""
    structs: dict[str, set[str]] = {}
    pattern = re.compile(
        r"#\[derive\([^)]*EncodeLabelSet[^)]*\)\]\s*(?:#\[[^\]]*\]\s*)*"
        r"pub\s+struct\s+(\w+)\s*\{(.*?)\}",
        re.S,
    )
    for text in sources.values():
        for name, body in pattern.findall(text):
            structs[name] = set(re.findall(r"(?:pub\s+)?(\w+)\s*:", body))
    return structs


# A type, generics (two levels deep) included: Family<Labels, Gauge<f64, AtomicU64>>.
TYPE = r"(?:[\w:]|<(?:[^<>]|<[^<>]*>)*>|\s)+"


def declared_type(ident: str, crate_sources: dict[Path, str]) -> str | None:
    """The type written where `ident` is declared: a struct field
    `ident: T`, `let ident: T = ...` or `let ident = T::new...(...)`."""
    patterns = [
        rf"\blet\s+(?:mut\s+)?{ident}\s*:\s*({TYPE})=",
        rf"\blet\s+(?:mut\s+)?{ident}\s*=\s*(\w+(?:\s*::\s*<(?:[^<>]|<[^<>]*>)*>)?)\s*::",
        rf"^\s*(?:pub(?:\([^)]*\))?\s+)?{ident}\s*:\s*({TYPE})[,}}]",
    ]
    for pattern in patterns:
        for text in crate_sources.values():
            for match in re.finditer(pattern, text, re.M):
                found = match.group(1).strip()
                if re.search(r"\b(Counter|Gauge|Histogram)\b", found):
                    return found
    return None


def kind_of(type_text: str) -> tuple[str, str | None]:
    """(counter|gauge|histogram, label struct or None) from a type."""
    family = re.search(r"Family\s*(?:::)?\s*<\s*(\w+)\s*,\s*(\w+)", type_text)
    if family:
        return family.group(2).lower(), family.group(1)
    for kind in ("Counter", "Gauge", "Histogram"):
        if re.search(rf"\b{kind}\b", type_text):
            return kind.lower(), None
    raise ValueError(type_text)


def registered_metrics(root: Path) -> tuple[dict[str, Metric], list[str]]:
    metrics: dict[str, Metric] = {}
    problems: list[str] = []
    all_sources: dict[Path, str] = {}
    for directory in SOURCE_DIRS:
        for path in sorted((root / directory).rglob("*.rs")):
            all_sources[path] = strip_comments(path.read_text(encoding="utf-8"))
    structs = label_structs(all_sources)
    for path, text in all_sources.items():
        prefix = re.search(r'Registry::with_prefix\(\s*"([^"]+)"\s*\)', text)
        if not prefix:
            continue
        crate = path.relative_to(root).parts[0]
        crate_sources = {p: t for p, t in all_sources.items() if p.relative_to(root).parts[0] == crate}
        for call in re.finditer(
            r'\.register\(\s*"([^"]+)"\s*,\s*"(?:[^"\\]|\\.)*"\s*,\s*([^;]*?)\s*,?\s*\)\s*;', text, re.S
        ):
            short, expr = call.group(1), call.group(2)
            name = f"{prefix.group(1)}_{short}"
            where = f"{path.relative_to(root)}:{text[: call.start()].count(chr(10)) + 1}"
            ident = re.sub(r"\.clone\(\)\s*$", "", expr.strip())
            ident = ident.split(".")[-1].strip()
            type_text = declared_type(ident, crate_sources)
            if type_text is None:
                problems.append(f"{where}: cannot tell the type of metric {name} (registered from `{expr.strip()}`)")
                continue
            kind, struct = kind_of(type_text)
            labels: set[str] = set()
            if struct is not None:
                if struct not in structs:
                    problems.append(f"{where}: label set {struct} of {name} not found")
                labels = structs.get(struct, set())
            metrics[name] = Metric(name, kind, labels, where)
    return metrics, problems


def string_literals(root: Path) -> set[str]:
    literals: set[str] = set()
    for directory in SOURCE_DIRS:
        for path in (root / directory).rglob("*.rs"):
            literals.update(re.findall(r'"((?:[^"\\]|\\.)*)"', path.read_text(encoding="utf-8")))
    return literals


@dataclass
class Selector:
    name: str
    matchers: list[tuple[str, str, str]]  # (label, op, value)


def parse_promql(expr: str) -> tuple[list[Selector], set[str]]:
    """The selectors of an expression, and the labels of its by/without/on
    /ignoring/group_* clauses. A scanner, not a parser: enough for the
    functions, aggregations and binary operators these files use."""
    # Grafana's variables ($__rate_interval, ${datasource}, $var).
    text = re.sub(r"\$\{[^}]*\}|\$\w+", "1m", expr)
    grouping: set[str] = set()

    def take_grouping(match: re.Match[str]) -> str:
        grouping.update(x.strip() for x in match.group(2).split(",") if x.strip())
        return " "

    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", take_grouping, text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\boffset\s+-?\w+", " ", text)
    selectors: list[Selector] = []
    position = 0
    token = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[A-Za-z_:][\w:]*|\{')
    while True:
        match = token.search(text, position)
        if not match:
            break
        word = match.group(0)
        position = match.end()
        if word[0] in "\"'":
            continue  # a string argument (label_replace, ...)
        if word == "{":
            name = ""
        else:
            rest = text[position:].lstrip()
            if rest.startswith("("):
                continue  # a function or aggregation
            if word in PROMQL_KEYWORDS:
                continue
            name = word
        matchers: list[tuple[str, str, str]] = []
        rest = text[position:]
        brace = re.match(r"\s*\{" if word != "{" else r"", rest)
        if brace is not None and (word == "{" or brace.group(0)):
            start = position + brace.end()
            end = text.index("}", start)
            for label, op, value in re.findall(
                r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', text[start:end]
            ):
                matchers.append((label, op, value))
            position = end + 1
        if name or matchers:
            selectors.append(Selector(name, matchers))
    return selectors, grouping


def expressions(paths: list[Path]) -> list[tuple[str, str]]:
    """(where, expr) of every rule and dashboard target."""
    found: list[tuple[str, str]] = []
    for path in paths:
        if path.suffix == ".json":
            dashboard = json.loads(path.read_text(encoding="utf-8"))

            def walk(panels: list[dict]) -> None:
                for panel in panels:
                    for target in panel.get("targets", []):
                        if target.get("expr"):
                            found.append((f"{path.name}: panel {panel.get('title')!r} {target.get('refId')}", target["expr"]))
                    walk(panel.get("panels", []))

            walk(dashboard.get("panels", []))
        else:
            rules = yaml.safe_load(path.read_text(encoding="utf-8"))
            for group in rules.get("groups", []):
                for rule in group.get("rules", []):
                    label = rule.get("alert") or rule.get("record")
                    found.append((f"{path.name}: {label}", str(rule["expr"])))
    return found


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[1])
    metrics, problems = registered_metrics(root)
    if not metrics:
        problems.append("no metric registration found in " + ", ".join(SOURCE_DIRS))
    exposed: dict[str, set[str]] = {}
    for metric in metrics.values():
        exposed.update(metric.exposed())
    literals = string_literals(root)
    used: set[str] = set()
    for where, expr in expressions([Path(p) for p in argv[2:]]):
        selectors, grouping = parse_promql(expr)
        available: set[str] = set(TARGET_LABELS)
        for selector in selectors:
            if not selector.name:
                problems.append(f"{where}: a selector without a metric name: {expr!r}")
                continue
            used.add(selector.name)
            if selector.name in PROMETHEUS_SERIES:
                labels = set(TARGET_LABELS)
            elif selector.name not in exposed:
                hint = ""
                base = re.sub(r"_(total|bucket|sum|count)$", "", selector.name)
                if base in metrics:
                    hint = f" (the code exports {', '.join(sorted(metrics[base].exposed()))})"
                problems.append(f"{where}: unknown metric {selector.name}{hint}")
                continue
            else:
                labels = exposed[selector.name] | TARGET_LABELS
            available |= labels
            for label, op, value in selector.matchers:
                if label == "__name__":
                    continue
                if label not in labels:
                    problems.append(
                        f"{where}: {selector.name} has no label {label!r} (it has: {', '.join(sorted(labels)) or 'none'})"
                    )
                    continue
                if label in TARGET_LABELS or selector.name in PROMETHEUS_SERIES:
                    continue
                values = [value] if op in ("=", "!=") else value.split("|") if op == "=~" else []
                for one in values:
                    plain = one.replace("\\.", ".")
                    if re.fullmatch(r"[\w.\-]+", plain) and plain not in literals:
                        problems.append(
                            f"{where}: {selector.name}{{{label}{op}\"{value}\"}}: the code never writes the value {plain!r}"
                        )
        for label in grouping - available:
            problems.append(f"{where}: grouping by {label!r}, a label none of the expression's metrics has")
    for problem in problems:
        print(f"error: {problem}")
    if problems:
        print(f"metric names: {len(problems)} problem(s); exported: {', '.join(sorted(exposed))}")
        return 1
    print(f"ok: {len(used)} metric names used by the rules and the dashboard all exported by the code "
          f"({len(metrics)} registrations read)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
