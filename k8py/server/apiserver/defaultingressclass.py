"""The DefaultIngressClass admission plugin (upstream's
plugin/pkg/admission/network/defaultingressclass): an Ingress created without a class gets
the default IngressClass's name in `spec.ingressClassName`.

"Without a class" means `spec.ingressClassName` absent (or null) and no legacy
`kubernetes.io/ingress.class` annotation (whatever its value). The default is an
IngressClass annotated `ingressclass.kubernetes.io/is-default-class: "true"` (k8py's
packaged class `k8py` is, as k3s's `traefik` is). With several defaults there is no error
(older releases refused with "N default IngressClasses were found, only 1 allowed"):
the newest by creationTimestamp wins, ties broken by name. Only creates are defaulted; an
update that clears the class leaves it cleared. The classes are read from the store at each
create, so a new default applies at once.
"""

from __future__ import annotations

from typing import Any

from k8py.api.resources import builtin
from k8py.server.apiserver.admission import CREATE, Attributes
from k8py.server.apiserver.defaultstorageclass import default_class

CLASSES = builtin("networking.k8s.io/v1", "ingressclasses")
IS_DEFAULT = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS = "kubernetes.io/ingress.class"


class DefaultIngressClass:
    name = "DefaultIngressClass"

    def __init__(self, objects):
        self.objects = objects  # storage.ObjectStore

    async def admit(self, attributes: Attributes) -> dict[str, Any] | None:
        resource, ingress = attributes.resource, attributes.object
        if attributes.operation != CREATE or attributes.subresource or \
                resource.group != "networking.k8s.io" or resource.plural != "ingresses" or \
                not isinstance(ingress, dict):
            return None
        spec = ingress.get("spec")
        spec = spec if isinstance(spec, dict) else {}
        metadata = ingress.get("metadata")
        if spec.get("ingressClassName") is not None or (
                isinstance(metadata, dict) and
                LEGACY_CLASS in (metadata.get("annotations") or {})):
            return None
        classes, _, _ = await self.objects.list(CLASSES, None)
        chosen = default_class(classes, (IS_DEFAULT,))
        if chosen is None:
            return None
        return {**ingress, "spec": {**spec, "ingressClassName": chosen["metadata"]["name"]}}

    async def validate(self, attributes: Attributes) -> None:
        return None
