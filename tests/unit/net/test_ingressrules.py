"""The ingress routing table: which Ingresses are ours, host and path precedence (upstream's
Ingress specification, ingress-nginx's order), backend resolution and TLS hosts."""

from k8py.net import ingressrules

K8PY_CLASS = {"metadata": {"name": "k8py", "annotations": {
    ingressrules.DEFAULT_CLASS_ANNOTATION: "true"}}, "spec": {"controller": "k8py.io/ingress"}}
OTHER_CLASS = {"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}


def service(name, ports=(("http", 80),), namespace="default"):
    return {"metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": "10.43.0.9", "ports": [
                {"name": n, "port": p, "protocol": "TCP"} for n, p in ports]}}


def slice_(svc, addresses, port=8080, port_name="http", ready=True, namespace="default"):
    return {"metadata": {"name": f"{svc}-x", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": port_name, "port": port}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": ready}}
                          for a in addresses]}


def backend(svc, port=80):
    return {"service": {"name": svc, "port": {"number": port} if isinstance(port, int)
                        else {"name": port}}}


def ingress(name, rules=(), default=None, tls=(), created="2026-01-01T00:00:00Z",
            cls="k8py", namespace="default"):
    spec = {"rules": [{**({"host": h} if h else {}), "http": {"paths": [
        {"path": p, "pathType": t, "backend": backend(s)} for p, t, s in paths]}}
        for h, paths in rules]}
    if cls:
        spec["ingressClassName"] = cls
    if default:
        spec["defaultBackend"] = backend(default)
    if tls:
        spec["tls"] = list(tls)
    return {"metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
            "spec": spec}


SERVICES = [service(n) for n in ("a", "b", "c", "d", "e")]
SLICES = [slice_(n, [f"10.42.0.{i + 1}"]) for i, n in enumerate("abcde")]


def table(*ingresses, classes=(K8PY_CLASS, OTHER_CLASS)):
    return ingressrules.build(classes, ingresses, SERVICES, SLICES)


def routed(t, host, path):
    b = t.route(host, path)
    return b.name.split("/")[1].split(":")[0] if b else None


def test_prefix_is_element_wise():
    t = table(ingress("i", [("", [("/foo/bar", "Prefix", "a"), ("/", "Prefix", "b")])]))
    assert routed(t, "x", "/foo/bar") == "a"
    assert routed(t, "x", "/foo/bar/") == "a"
    assert routed(t, "x", "/foo/bar/baz") == "a"
    assert routed(t, "x", "/foo/barbaz") == "b"
    assert routed(t, "x", "/foo") == "b"


def test_trailing_slash_of_prefix_ignored_and_exact_is_exact():
    t = table(ingress("i", [("", [("/foo/", "Prefix", "a"), ("/bar", "Exact", "b")])]))
    assert routed(t, "x", "/foo") == "a"
    assert routed(t, "x", "/bar") == "b"
    assert routed(t, "x", "/bar/") is None
    assert routed(t, "x", "/Bar") is None


def test_longest_match_wins_and_exact_beats_prefix_of_equal_length():
    t = table(ingress("i", [("", [("/", "Prefix", "a"), ("/app", "Prefix", "b"),
                                  ("/app", "Exact", "c"), ("/app/v2", "Prefix", "d"),
                                  ("/app/v2/x", "ImplementationSpecific", "e")])]))
    assert routed(t, "x", "/app") == "c"
    assert routed(t, "x", "/app/v1") == "b"
    assert routed(t, "x", "/app/v2/y") == "d"
    assert routed(t, "x", "/app/v2/x/z") == "e"
    assert routed(t, "x", "/other") == "a"


def test_hosts_exact_before_wildcard_before_any():
    t = table(ingress("i", [("foo.example.com", [("/", "Prefix", "a")]),
                            ("*.example.com", [("/", "Prefix", "b")]),
                            ("", [("/", "Prefix", "c")])]))
    assert routed(t, "foo.example.com", "/") == "a"
    assert routed(t, "FOO.example.com:8080", "/") == "a"
    assert routed(t, "bar.example.com", "/") == "b"
    assert routed(t, "a.bar.example.com", "/") == "c"  # a wildcard is one label
    assert routed(t, "example.com", "/") == "c"


def test_host_without_matching_path_goes_to_default_backend():
    t = table(ingress("i", [("h", [("/api", "Prefix", "a")])], default="b"),
              ingress("j", [("", [("/", "Prefix", "c")])]))
    assert routed(t, "h", "/web") == "b"


def test_older_ingress_wins_a_tie_and_gives_the_default_backend():
    t = table(ingress("new", [("h", [("/", "Prefix", "a")])], default="a",
                      created="2026-02-01T00:00:00Z"),
              ingress("old", [("h", [("/", "Prefix", "b")])], default="b",
                      created="2026-01-01T00:00:00Z"))
    assert routed(t, "h", "/") == "b"
    assert routed(t, "other", "/") == "b"


def test_rules_of_several_ingresses_merge_per_host():
    t = table(ingress("one", [("h", [("/a", "Prefix", "a")])]),
              ingress("two", [("h", [("/b", "Prefix", "b")])]))
    assert routed(t, "h", "/a/1") == "a"
    assert routed(t, "h", "/b") == "b"


def test_class_selection():
    theirs = ingress("theirs", [("h", [("/", "Prefix", "a")])], cls="nginx")
    unclassed = ingress("unclassed", [("u", [("/", "Prefix", "b")])], cls=None)
    legacy = ingress("legacy", [("l", [("/", "Prefix", "c")])], cls=None)
    legacy["metadata"]["annotations"] = {"kubernetes.io/ingress.class": "k8py"}
    t = table(theirs, unclassed, legacy)
    assert routed(t, "h", "/") is None
    assert routed(t, "u", "/") == "b"
    assert routed(t, "l", "/") == "c"
    not_default = {**K8PY_CLASS, "metadata": {"name": "k8py"}}
    t = table(theirs, unclassed, legacy, classes=(not_default,))
    assert routed(t, "u", "/") is None
    assert routed(t, "l", "/") == "c"


def test_backend_resolution_by_port_name_and_readiness():
    services = [service("s", ports=(("web", 80), ("admin", 9000)))]
    slices = [slice_("s", ["10.42.0.5", "10.42.0.6"], port=8080, port_name="web"),
              {**slice_("s", ["10.42.0.7"], ready=False, port=8080, port_name="web")},
              slice_("s", ["10.42.0.5"], port=9999, port_name="admin")]
    web = ingress("i", [("", [("/", "Prefix", "s")])])
    web["spec"]["rules"][0]["http"]["paths"][0]["backend"] = backend("s", "web")
    t = ingressrules.build([K8PY_CLASS], [web], services, slices)
    assert t.route("x", "/").endpoints == (("10.42.0.5", 8080), ("10.42.0.6", 8080))
    admin = ingress("i", [("", [("/", "Prefix", "s")])])
    admin["spec"]["rules"][0]["http"]["paths"][0]["backend"] = backend("s", 9000)
    t = ingressrules.build([K8PY_CLASS], [admin], services, slices)
    assert t.route("x", "/").endpoints == (("10.42.0.5", 9999),)
    missing = ingress("i", [("", [("/", "Prefix", "nope")])])
    t = ingressrules.build([K8PY_CLASS], [missing], services, slices)
    assert t.route("x", "/").endpoints == ()


def test_tls_hosts():
    t = table(ingress("i", tls=[{"hosts": ["secure.example.com", "*.apps.example.com"],
                                 "secretName": "cert"}]),
              ingress("j", tls=[{"hosts": ["secure.example.com"], "secretName": "later"}],
                      created="2026-03-01T00:00:00Z", namespace="other"))
    assert t.secret_for("secure.example.com") == "default/cert"
    assert t.secret_for("x.apps.example.com") == "default/cert"
    assert t.secret_for("apps.example.com") is None
    assert t.secret_for(None) is None
