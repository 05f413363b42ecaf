"""Images for containers, as upstream's image manager treats imagePullPolicy.

`Never` uses what is present or fails (ErrImageNeverPull); `IfNotPresent` pulls only what is
missing; `Always` pulls every time, but falls back to a local image when the pull fails
(there is no registry on most k8py hosts: images are imported, `k8py.agent.airgap`). A
failed pull is ErrImagePull, then ImagePullBackOff while the pull's back-off lasts (keyed
per pod and container, as upstream's); every pull has a deadline. Events as upstream's
kubelet writes them (Pulling, Pulled, Failed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from k8py.agent.kubelet.backoff import Backoff
from k8py.agent.kubelet.events import Recorder
from k8py.agent.kubelet.planner import ContainerStartError
from k8py.runtime import cri_pb2 as pb
from k8py.runtime.cri import CriError

log = logging.getLogger(__name__)


def default_pull_policy(image: str) -> str:
    """upstream's default: Always for `:latest` or no tag, IfNotPresent otherwise."""
    name = image.rsplit("/", 1)[-1]
    if "@" in name:
        return "IfNotPresent"
    return "Always" if ":" not in name or name.endswith(":latest") else "IfNotPresent"


async def ensure_image(cri, recorder: Recorder, backoff: Backoff, timeout: float,
                       pod: dict[str, Any], uid: str, container: dict[str, Any],
                       sandbox_config: pb.PodSandboxConfig) -> None:
    """The container's image present, as its imagePullPolicy wants; raises
    ContainerStartError (ErrImageNeverPull, ErrImagePull, ImagePullBackOff)."""
    name, image = container["name"], container.get("image", "")
    policy = container.get("imagePullPolicy") or default_pull_policy(image)
    present = await cri.image_status(image)
    if policy == "Never":
        if present is None:
            message = (f'Container image "{image}" is not present with pull policy of '
                       "Never")
            await recorder.event(pod, "Warning", "ErrImageNeverPull", message, name)
            raise ContainerStartError("ErrImageNeverPull", message)
        return
    if present is not None and policy != "Always":
        await recorder.event(pod, "Normal", "Pulled",
                             f'Container image "{image}" already present on machine', name)
        return
    key = (uid, "pull", name)
    if present is None and backoff.remaining(key) > 0:
        raise ContainerStartError("ImagePullBackOff", f'Back-off pulling image "{image}"')
    await recorder.event(pod, "Normal", "Pulling", f'Pulling image "{image}"', name)
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            await cri.pull_image(image, sandbox_config)
    except (CriError, asyncio.TimeoutError) as exc:
        reason = exc.message if isinstance(exc, CriError) else \
            f"no answer within {timeout:.0f} s"
        if present is not None:
            # no registry here: an image imported locally serves `Always` too
            log.info("pod %s/%s: pulling %s failed (%s); using the local image",
                     pod["metadata"].get("namespace"), pod["metadata"]["name"], image, reason)
            await recorder.event(pod, "Normal", "Pulled",
                                 f'Container image "{image}" already present on machine '
                                 "(pull failed, using the local image)", name)
            return
        backoff.next(key)
        message = f'Failed to pull image "{image}": {reason}'
        await recorder.event(pod, "Warning", "Failed", message, name)
        await recorder.event(pod, "Warning", "Failed", "Error: ErrImagePull", name)
        raise ContainerStartError("ErrImagePull", message) from exc
    await recorder.event(pod, "Normal", "Pulled",
                         f'Successfully pulled image "{image}" in '
                         f"{time.monotonic() - started:.3f}s", name)

