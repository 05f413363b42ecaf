"""The generator of k8py/api/protobuf_messages.py, on a small package written here in
upstream's shapes (a generated.proto and the types.go it came from): numbers and names from
the .proto, JSON names, inline members and kept zero values from the struct tags, short names
with a version suffix when two packages differ, and only what the roots reach. The
committed tables were generated from k8s.io/api and k8s.io/apimachinery v0.32.9."""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import gen_protobuf_messages as gen  # noqa: E402

PROTO = """
// Widgets.
syntax = "proto2";
package k8s.io.api.demo.{version};

import "k8s.io/apimachinery/pkg/api/resource/generated.proto";

// Widget is a demo kind.
message Widget {
  optional Meta metadata = 1;
  optional WidgetSpec spec = 2;
}

message WidgetSpec {
  optional int32 replicas = 1;
  optional string mode = 2;
  repeated string tags = 3;
  map<string, string> labels = 4;
  optional Handler handler = 5;
  optional .k8s.io.apimachinery.pkg.api.resource.Quantity size = 6;
  map<string, Extra> extra = 7;
  optional int64 {extra_field} = 8;
}

message Handler {
  optional string command = 1;
}

message Meta {
  optional string name = 1;
}

message Unused {
  optional string x = 1;
}

message Extra {
  repeated string items = 1;
}
"""

GO = """
package {version}

type Widget struct {
	Meta `json:"metadata,omitempty" protobuf:"bytes,1,opt,name=metadata"`
	Spec WidgetSpec `json:"spec,omitempty" protobuf:"bytes,2,opt,name=spec"`
}

type WidgetSpec struct {
	Replicas *int32 `json:"replicas,omitempty" protobuf:"varint,1,opt,name=replicas"`
	Mode string `json:"mode" protobuf:"bytes,2,opt,name=mode"`
	Tags []string `json:"tags" protobuf:"bytes,3,rep,name=tags"`
	Labels map[string]string `json:"labels,omitempty" protobuf:"bytes,4,rep,name=labels"`
	Handler `json:",inline" protobuf:"bytes,5,opt,name=handler"`
	Size resource.Quantity `json:"size,omitempty" protobuf:"bytes,6,opt,name=size"`
	Extra map[string]Extra `json:"extra,omitempty" protobuf:"bytes,7,rep,name=extra"`
	Other int64 `json:"other,omitempty" protobuf:"varint,8,opt,name={extra_field}"`
}

type Handler struct {
	Command string `json:"command,omitempty" protobuf:"bytes,1,opt,name=command"`
}

type Meta struct {
	Name string `json:"name,omitempty" protobuf:"bytes,1,opt,name=name"`
}

type Extra []string
"""


def _package(tmp_path, version: str, extra_field: str) -> str:
    path = tmp_path / version
    path.mkdir()
    (path / "generated.proto").write_text(
        PROTO.replace("{version}", version).replace("{extra_field}", extra_field))
    (path / "types.go").write_text(
        GO.replace("{version}", version).replace("{extra_field}", extra_field))
    return str(path)


def _load(text: str) -> dict:
    namespace: dict = {}
    exec(compile(text, "protobuf_messages.py", "exec"), namespace)  # noqa: S102
    return namespace


def test_tables_from_proto_and_struct_tags(tmp_path):
    v2 = _package(tmp_path, "v2", "other")
    text = gen.generate([v2], roots=[("demo/v2", "Widget", "k8s.io.api.demo.v2.Widget")],
                        always=[])
    module = _load(text)
    messages = module["MESSAGES"]
    S, I32, I64, REP, KEEP = "string", "int32", "int64", "repeated", "keep"
    assert messages["Widget"] == {1: ("metadata", "Meta"), 2: ("spec", "WidgetSpec")}
    assert messages["WidgetSpec"] == {
        1: ("replicas", I32, KEEP),          # a pointer keeps its zero
        2: ("mode", S, KEEP),                # no omitempty keeps it too
        3: ("tags", S, REP),                 # a slice never "keeps" (nil is null)
        4: ("labels", ("map", S, S)),
        5: ("", "Handler"),                  # inline: its fields sit in the spec
        6: ("size", "Quantity"),             # decoded specially
        8: ("other", I64),
    }                                        # 7, a map of Go slices, is left out
    assert "Unused" not in messages and "Extra" not in messages  # not reachable
    assert module["ROOTS"] == {("demo/v2", "Widget"): "Widget"}
    assert module["root_message"]("demo/v2", "DeleteOptions") == "DeleteOptions"


def test_a_later_package_with_a_different_message_gets_a_suffix(tmp_path):
    v2 = _package(tmp_path, "v2", "other")
    v1 = _package(tmp_path, "v1", "changed")
    text = gen.generate([v2, v1], always=[], roots=[
        ("demo/v2", "Widget", "k8s.io.api.demo.v2.Widget"),
        ("demo/v1", "Widget", "k8s.io.api.demo.v1.Widget")])
    module = _load(text)
    messages, roots = module["MESSAGES"], module["ROOTS"]
    assert roots == {("demo/v2", "Widget"): "Widget", ("demo/v1", "Widget"): "WidgetV1"}
    assert messages["WidgetV1"] == {1: ("metadata", "Meta"), 2: ("spec", "WidgetSpecV1")}
    assert messages["WidgetSpecV1"][8] == ("other", "int64")
    # identical messages keep one name
    assert "MetaV1" not in messages and "HandlerV1" not in messages


def test_the_committed_tables_say_where_they_come_from():
    path = os.path.join(ROOT, "k8py", "api", "protobuf_messages.py")
    with open(path, encoding="utf-8") as f:
        assert "Generated by tools/gen_protobuf_messages.py" in f.read(2000)


def test_the_committed_tables_name_each_message_once():
    import ast

    path = os.path.join(ROOT, "k8py", "api", "protobuf_messages.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys = [ast.literal_eval(k) for k in node.keys if k is not None]
            assert len(keys) == len(set(keys)), [k for k in keys if keys.count(k) > 1]
