"""Build `k8py/api/protobuf_messages.py` from upstream's `generated.proto` files.

    python tools/gen_protobuf_messages.py DIR... > k8py/api/protobuf_messages.py

Each DIR is a checkout's package directory holding a `generated.proto` and the `types.go`
it was generated from, for every package the request bodies reach: k8s.io/api's
core/v1, apps/v1, batch/v1, policy/v1, rbac/v1, networking/v1, scheduling/v1,
certificates/v1, authorization/v1, authentication/v1, autoscaling/v1 and v2, and
k8s.io/apimachinery's pkg/apis/meta/v1 and pkg/runtime (for `Unknown`). It fetches nothing.

From the .proto: field numbers, names, types, repeated fields and maps. From the Go types'
struct tags (the .proto cannot say them): the JSON name of each field (`json:",inline"`
members become "", their fields sitting in the enclosing object), and which scalars keep a
zero value in JSON (KEEP: a pointer in Go, or a tag without `omitempty`).

Messages are named by their short name; when two packages define different messages of one
name, the later package's get its version as a suffix (autoscaling/v1's
`HorizontalPodAutoscalerV1` beside v2's `HorizontalPodAutoscaler`), so pass the preferred
package first. Only messages reachable from `ROOTS` (and DeleteOptions, for any apiVersion)
are written. Fields whose values are Go slice types (`map<string, ExtraValue>`, user extras)
are left out: their JSON is a list, which the table shape cannot say.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable

# (apiVersion, kind) of a request body -> its message (package.Name)
ROOTS = [
    ("v1", "ConfigMap", "k8s.io.api.core.v1.ConfigMap"),
    ("v1", "Secret", "k8s.io.api.core.v1.Secret"),
    ("v1", "Namespace", "k8s.io.api.core.v1.Namespace"),
    ("v1", "Service", "k8s.io.api.core.v1.Service"),
    ("v1", "ServiceAccount", "k8s.io.api.core.v1.ServiceAccount"),
    ("v1", "Pod", "k8s.io.api.core.v1.Pod"),
    ("v1", "ResourceQuota", "k8s.io.api.core.v1.ResourceQuota"),
    ("apps/v1", "Deployment", "k8s.io.api.apps.v1.Deployment"),
    ("batch/v1", "Job", "k8s.io.api.batch.v1.Job"),
    ("batch/v1", "CronJob", "k8s.io.api.batch.v1.CronJob"),
    ("policy/v1", "Eviction", "k8s.io.api.policy.v1.Eviction"),
    ("policy/v1", "PodDisruptionBudget", "k8s.io.api.policy.v1.PodDisruptionBudget"),
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview",
     "k8s.io.api.authorization.v1.SelfSubjectAccessReview"),
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview",
     "k8s.io.api.authorization.v1.SelfSubjectRulesReview"),
    ("authorization.k8s.io/v1", "SubjectAccessReview",
     "k8s.io.api.authorization.v1.SubjectAccessReview"),
    ("authorization.k8s.io/v1", "LocalSubjectAccessReview",
     "k8s.io.api.authorization.v1.SubjectAccessReview"),
    ("authentication.k8s.io/v1", "TokenReview", "k8s.io.api.authentication.v1.TokenReview"),
    ("authentication.k8s.io/v1", "TokenRequest", "k8s.io.api.authentication.v1.TokenRequest"),
    ("authentication.k8s.io/v1", "SelfSubjectReview",
     "k8s.io.api.authentication.v1.SelfSubjectReview"),
    ("networking.k8s.io/v1", "Ingress", "k8s.io.api.networking.v1.Ingress"),
    ("certificates.k8s.io/v1", "CertificateSigningRequest",
     "k8s.io.api.certificates.v1.CertificateSigningRequest"),
    ("rbac.authorization.k8s.io/v1", "Role", "k8s.io.api.rbac.v1.Role"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", "k8s.io.api.rbac.v1.ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", "k8s.io.api.rbac.v1.RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding",
     "k8s.io.api.rbac.v1.ClusterRoleBinding"),
    ("scheduling.k8s.io/v1", "PriorityClass", "k8s.io.api.scheduling.v1.PriorityClass"),
    ("autoscaling/v2", "HorizontalPodAutoscaler",
     "k8s.io.api.autoscaling.v2.HorizontalPodAutoscaler"),
    ("autoscaling/v1", "HorizontalPodAutoscaler",
     "k8s.io.api.autoscaling.v1.HorizontalPodAutoscaler"),
]
ALWAYS = ["k8s.io.apimachinery.pkg.runtime.Unknown",
          "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions"]
# messages the decoder reads itself (k8py.api.protobuf._special)
SPECIAL = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time": "Time",
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime": "Time",
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "Quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1": "FieldsV1",
}
RUNTIME = "k8s.io.apimachinery.pkg.runtime"
SCALARS = {"string": "S", "bytes": "B", "int32": "I32", "int64": "I64", "bool": "BOOL"}

_PACKAGE = re.compile(r"^package\s+([\w.]+)\s*;", re.M)
_FIELD = re.compile(r"^\s*(optional|repeated)?\s*(map<\s*(\w+)\s*,\s*([\w.]+)\s*>|[\w.]+)\s+"
                    r"(\w+)\s*=\s*(\d+)")
_GO_FIELD = re.compile(r'^\s*(\w*)\s*(\*?)(\[\])?([\w.\[\]*]+)?\s*`[^`]*json:"([^"]*)"'
                       r'[^`]*protobuf:"[^"]*?,(\d+),')


def parse_proto(text: str) -> tuple[str, dict[str, list[tuple]]]:
    """(package, {message: [(number, name, type, repeated, map value or None)]})."""
    text = re.sub(r"//[^\n]*", "", text)
    package = _PACKAGE.search(text).group(1)
    messages: dict[str, list[tuple]] = {}
    stack: list[str] = []
    for line in text.splitlines():
        opened = re.match(r"^\s*message\s+(\w+)\s*\{", line)
        if opened:
            stack.append(".".join(stack[-1:] + [opened.group(1)]) if stack else
                         opened.group(1))
            messages[stack[-1]] = []
            continue
        if re.match(r"^\s*}", line):
            if stack:
                stack.pop()
            continue
        field = _FIELD.match(line)
        if field and stack:
            label, type_name, _key, value, name, number = field.groups()
            is_map = type_name.startswith("map<")
            messages[stack[-1]].append((int(number), name, value if is_map else type_name,
                                        label == "repeated", is_map))
    return package, messages


def parse_go(text: str) -> tuple[dict[str, dict[int, tuple[str, bool]]], set[str]]:
    """({struct: {proto field number: (json name, keeps its zero value)}} from struct tags,
    the names of slice types (`type ExtraValue []string`, a JSON list, not an object))."""
    structs: dict[str, dict[int, tuple[str, bool]]] = {}
    slices = set(re.findall(r"^type\s+(\w+)\s+\[\]\w+\s*$", text, re.M))
    current = None
    for line in text.splitlines():
        opened = re.match(r"^type\s+(\w+)\s+struct\s*\{", line)
        if opened:
            current = structs.setdefault(opened.group(1), {})
            continue
        if line.startswith("}"):
            current = None
            continue
        if current is None:
            continue
        field = _GO_FIELD.match(line)
        if field:
            _name, pointer, is_slice, _type, tag, number = field.groups()
            json_name, _, options = tag.partition(",")
            inline = "inline" in options.split(",")
            # a nil slice is null, not a zero value: only scalars keep theirs
            keep = bool(pointer) or ("omitempty" not in options.split(",") and not is_slice)
            current[int(number)] = ("" if inline else json_name, keep)
    return structs, slices


class Tables:
    def __init__(self, dirs: Iterable[str], roots=None, always=None):
        self.roots = ROOTS if roots is None else roots
        self.always = ALWAYS if always is None else always
        self.messages: dict[str, list[tuple]] = {}  # full name -> fields
        self.tags: dict[str, dict[int, tuple[str, bool]]] = {}
        self.slices: set[str] = set()  # messages whose Go type is a slice (a JSON list)
        self.order: list[str] = []  # packages, as given
        for path in dirs:
            with open(os.path.join(path, "generated.proto"), encoding="utf-8") as f:
                package, messages = parse_proto(f.read())
            self.order.append(package)
            go = os.path.join(path, "types.go")
            structs, slices = {}, set()
            # runtime.Unknown is the envelope, not a JSON object: its proto names stand
            if os.path.exists(go) and package != RUNTIME:
                with open(go, encoding="utf-8") as f:
                    structs, slices = parse_go(f.read())
            for name, fields in messages.items():
                self.messages[f"{package}.{name}"] = fields
                self.tags[f"{package}.{name}"] = structs.get(name.split(".")[-1], {})
                if name in slices:
                    self.slices.add(f"{package}.{name}")

    def reachable(self) -> list[str]:
        seen: list[str] = []
        todo = list(self.always) + [full for _, _, full in self.roots]
        while todo:
            full = todo.pop(0)
            if full in seen or full in SPECIAL:
                continue
            if full not in self.messages:
                raise SystemExit(f"{full}: no generated.proto given defines it")
            seen.append(full)
            for _, _, type_name, _, _ in self.messages[full]:
                ref = self._resolve(full, type_name)
                if ref is not None and ref not in self.slices:
                    todo.append(ref)
        return seen

    def _resolve(self, within: str, type_name: str) -> str | None:
        if type_name in SCALARS:
            return None
        if type_name.startswith("."):
            return type_name[1:]
        return f"{within.rsplit('.', 1)[0]}.{type_name}"

    def names(self, reachable: list[str]) -> dict[str, str]:
        """Short names; a later package's message that differs from an earlier one of the
        same short name gets its version as a suffix."""
        by_short: dict[str, str] = {}
        names: dict[str, str] = dict(SPECIAL)
        packages = {full: full.rsplit(".", 1)[0] for full in reachable}
        for full in sorted(reachable, key=lambda f: self._rank(packages[f])):
            short = full.rsplit(".", 1)[1]
            if short in by_short and self._resolved(by_short[short]) != self._resolved(full):
                version = packages[full].rsplit(".", 1)[1]
                short = short + version[:1].upper() + version[1:]
            by_short.setdefault(short, full)
            names[full] = short
        return names

    def _resolved(self, full: str) -> list[tuple]:
        """The fields with their types as full names: what makes two messages the same."""
        return [(number, name, self._resolve(full, type_name) or type_name, repeated, is_map)
                for number, name, type_name, repeated, is_map in self.messages[full]]

    def _rank(self, package: str) -> int:
        return self.order.index(package) if package in self.order else len(self.order)

    def entry(self, full: str, names: dict[str, str]) -> str:
        parts = []
        for number, name, type_name, repeated, is_map in self.messages[full]:
            json_name, keep = self.tags[full].get(number, (name, False))
            ref = self._resolve(full, type_name)
            if ref in self.slices:
                continue  # a list type (user extras): not decoded, as upstream's JSON is a list
            kind = SCALARS[type_name] if ref is None else _q(names[ref])
            if is_map:
                kind = f"_map({kind})"
            flags = [kind]
            if repeated and not is_map:
                flags.append("REP")
            if keep and ref is None and not repeated and not is_map:
                flags.append("KEEP")
            parts.append(f"{number}: ({_q(json_name)}, {', '.join(flags)})")
        return parts


HEADER = '''"""The upstream protobuf messages k8py decodes, as tables: field number -> JSON field.

Generated by tools/gen_protobuf_messages.py from upstream's `generated.proto` files and the
Go types' struct tags (k8s.io/api and k8s.io/apimachinery); do not edit by hand. The tables
cover every message reachable from the request bodies in `ROOTS`.

An entry is `(json name, type, *flags)`:
- the type is a scalar (`S`, `B`, `I32`, `I64`, `BOOL`), a message name (upstream's short
  name), one of the specially encoded messages (`Time`, `Quantity`, `IntOrString`,
  `FieldsV1`), or `_map(value type)` for a `map<string, ...>`;
- a json name of "" marks an inline member: its fields sit in the enclosing object;
- `REP`: a repeated field (a JSON list);
- `KEEP`: a scalar whose zero value stays in the JSON (a pointer in Go, or a field without
  `omitempty`).
"""

from __future__ import annotations

S, B, I32, I64, BOOL = "string", "bytes", "int32", "int64", "bool"
REP = "repeated"
KEEP = "keep"


def _map(value: str) -> tuple[str, str, str]:
    return ("map", S, value)

'''

FOOTER = '''

def root_message(api_version: str, kind: str) -> str | None:
    """The message of a request body of this apiVersion and kind, or None."""
    if kind == "DeleteOptions" and api_version:
        return "DeleteOptions"
    return ROOTS.get((api_version, kind))
'''


def _q(text: str) -> str:
    return json.dumps(text)


def _wrapped(head: str, parts: list[str], width: int = 96) -> list[str]:
    """`head` + the parts, comma-separated, in lines of at most `width` characters."""
    lines, line = [], head
    for i, part in enumerate(parts):
        text = part + ("}," if i == len(parts) - 1 else ",")
        if len(line) + len(text) + 1 > width and line.strip() not in ("", head.strip()):
            lines.append(line.rstrip())
            line = " " * len(head) + text
        else:
            line += ("" if line.endswith("{") else " ") + text
    if not parts:
        line += "},"
    lines.append(line)
    return lines


def generate(dirs: list[str], roots=None, always=None) -> str:
    """The module's text; `roots` and `always` default to ROOTS and ALWAYS."""
    tables = Tables(dirs, roots, always)
    reachable = tables.reachable()
    names = tables.names(reachable)
    lines = [HEADER, "MESSAGES: dict[str, dict[int, tuple]] = {"]
    package = None
    written: set[str] = set()
    for full in sorted(reachable, key=lambda f: (tables._rank(f.rsplit(".", 1)[0]),
                                                 reachable.index(f))):
        if names[full] in written:
            continue  # the same message as another package's, written once
        written.add(names[full])
        if full.rsplit(".", 1)[0] != package:
            package = full.rsplit(".", 1)[0]
            lines.append(f"    # {package}")
        lines.extend(_wrapped(f"    {_q(names[full])}: {{", tables.entry(full, names)))
    lines.append("}")
    lines.append("")
    lines.append("# (apiVersion, kind) of a request body -> its message. DeleteOptions is accepted "
                 "under any")
    lines.append("# apiVersion (every group-version carries it): see `root_message`.")
    lines.append("ROOTS = {")
    for api_version, kind, full in tables.roots:
        lines.append(f"    ({_q(api_version)}, {_q(kind)}): {_q(names[full])},")
    lines.append("}")
    return "\n".join(lines) + "\n" + FOOTER


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    sys.stdout.write(generate(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
