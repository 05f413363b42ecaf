"""Pod workers: one per pod bound to this node, each a task that loops: wait for a reason (the
pod changed, a container changed state, a probe flipped, a back-off ended, or 30 s passed),
then `sync` once. Only the worker touches its pod's sandbox and containers, so two syncs of
one pod never overlap. `podmanager.PodManager` keeps the workers.

What the runtime holds is the truth. A sync observes, plans, then acts:
1. observe: the pod's sandboxes and containers, listed by the labels every one of them
   carries (`io.kubernetes.pod.uid`, `io.kubernetes.container.name`, as upstream's kubelet
   sets them); the newest container of each name read through ContainerStatus (its
   `attempt` is the restartCount; the one before gives `lastState`); the worker's probes,
   waiting reasons and back-offs;
2. plan (`planner`, pure): the sandbox step (tear down, stop a finished pod's sandbox, wait
   for the network, start a sandbox), then the container actions (start, restart under
   CrashLoopBackOff, kill on a failed probe, init containers in order, ephemeral ones once);
3. act (`_execute`): each action over the CRI;
4. status (`status.pod_status`), written with a status patch only when it changed.

Starting a sandbox: volumes, RunPodSandbox (CNI gives the pod its IP), older dead sandboxes
removed. Starting a container: image (`pulls.ensure_image`: imagePullPolicy, ErrImagePull
then ImagePullBackOff, pulls with a deadline), environment (`env.resolve_env`), mounts
(`volumes`), the CRI config (`specs.container_config`), CreateContainer, StartContainer,
then the postStart hook (a failed hook kills the container, as upstream). Each step that
fails leaves a waiting reason (CreateContainerConfigError, CreateContainerError,
RunContainerError) and is retried with back-off.

Termination (deletionTimestamp set, or the pod gone from the API): every running container
gets its preStop hook, then StopContainer with what is left of the grace period (SIGTERM, then
SIGKILL when it runs out); then StopPodSandbox, RemovePodSandbox, volume and cgroup cleanup,
and the pod object is deleted with grace 0 and a uid precondition (so a new pod of the same
name is never touched).
"""

from __future__ import annotations

import typing

import asyncio
import logging
import os
import time
from typing import Any

from k8py.agent import cgroups
from k8py.agent.kubelet import env as envs
from k8py.agent.kubelet import planner, pulls, specs, status
from k8py.agent.kubelet.planner import ContainerStartError
from k8py.agent.kubelet.probes import ContainerProbes, run_handler
from k8py.agent.kubelet.volumes import VolumeError
from k8py.api import errors, timestamps
from k8py.api.resources import builtin
from k8py.runtime import cri_pb2 as pb
from k8py.runtime.cri import CriError

if typing.TYPE_CHECKING:
    from k8py.agent.kubelet import podmanager

log = logging.getLogger(__name__)

PODS = builtin("v1", "pods")
SERVICES = builtin("v1", "services")

POD_UID = "io.kubernetes.pod.uid"
POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
CONTAINER_NAME = "io.kubernetes.container.name"

RESYNC = 30.0
VOLUME_REFRESH = 10.0
ORPHAN_GRACE = 2  # seconds a container of a pod gone from the API gets to stop
# CRI container states, as the planner names them
_STATES = {pb.CONTAINER_CREATED: planner.CREATED, pb.CONTAINER_RUNNING: planner.RUNNING,
           pb.CONTAINER_EXITED: planner.EXITED, pb.CONTAINER_UNKNOWN: planner.UNKNOWN}


def grace_of(pod: dict[str, Any]) -> int:
    grace = pod["metadata"].get("deletionGracePeriodSeconds")
    if grace is None:
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    return max(int(grace), 0)


class PodWorker:
    def __init__(self, manager: podmanager.PodManager, uid: str,
                 pod: dict[str, Any] | None):
        self.manager = manager
        self.cri = manager.cri
        self.uid = uid
        self.pod = pod
        self.wake = asyncio.Event()
        self.wake.set()
        self.sandbox_id: str | None = None
        self.pod_ip = ""
        self.waiting: dict[str, tuple[str, str]] = {}
        self.probes: dict[str, ContainerProbes] = {}  # container id -> its probes
        self.written: dict[str, Any] | None = None
        self.next_wake: float | None = None
        self.task: asyncio.Task | None = None
        self.terminating = False
        self._status_cache: dict[str, status.Observed] = {}  # exited containers never change
        self._refreshed = time.monotonic()  # volumes were just prepared

    # --- the loop ---------------------------------------------------------------------------

    def update(self, pod: dict[str, Any] | None) -> None:
        self.pod = pod
        self.wake.set()

    async def run(self) -> None:
        failures = 0
        try:
            while True:
                timeout = RESYNC
                if self.next_wake is not None:
                    timeout = max(0.0, min(timeout, self.next_wake - time.monotonic()))
                try:
                    async with asyncio.timeout(timeout):
                        await self.wake.wait()
                except asyncio.TimeoutError:
                    pass
                self.wake.clear()
                self.next_wake = None
                try:
                    if await self.sync():
                        return
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # retried with back-off, whatever it was
                    failures += 1
                    delay = min(0.5 * 2 ** failures, 30.0)
                    if isinstance(exc, (CriError, errors.StatusError, OSError,
                                        ContainerStartError)):
                        log.warning("pod %s: sync failed (%s); retrying in %.1f s", self.name,
                                    getattr(exc, "message", None) or exc, delay)
                    else:
                        log.exception("pod %s: sync failed; retrying in %.1f s", self.name,
                                      delay)
                    self.schedule(delay)
        finally:
            for probes in self.probes.values():
                await probes.stop()
            self.probes.clear()

    def schedule(self, delay: float) -> None:
        at = time.monotonic() + delay
        if self.next_wake is None or at < self.next_wake:
            self.next_wake = at

    @property
    def name(self) -> str:
        if self.pod is None:
            return self.uid
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    # --- observing the runtime --------------------------------------------------------------

    async def _sandboxes(self) -> list[pb.PodSandbox]:
        items = await self.cri.list_pod_sandbox(pb.PodSandboxFilter(
            label_selector={POD_UID: self.uid}))
        return sorted(items, key=lambda s: s.created_at)

    async def _containers(self) -> dict[str, list[pb.Container]]:
        items = await self.cri.list_containers(pb.ContainerFilter(
            label_selector={POD_UID: self.uid}))
        by_name: dict[str, list[pb.Container]] = {}
        for item in items:
            name = item.labels.get(CONTAINER_NAME) or item.metadata.name
            by_name.setdefault(name, []).append(item)
        for group in by_name.values():
            group.sort(key=lambda c: (c.metadata.attempt, c.created_at), reverse=True)
        return by_name

    async def _observe(self, container: pb.Container) -> status.Observed | None:
        cached = self._status_cache.get(container.id)
        if cached is not None:
            return cached
        try:
            response = await self.cri.container_status(container.id)
        except CriError:
            return None
        observed = status.Observed.from_cri(response.status)
        if observed.state == status.CRI_EXITED:
            if not observed.message:
                observed.message = self._termination_message(container)
            self._status_cache[container.id] = observed
        return observed

    def _termination_message(self, container: pb.Container) -> str:
        """What the container wrote to its terminationMessagePath (the file is emptied
        when the next instance starts, so read it once, when the container has exited)."""
        name = container.labels.get(CONTAINER_NAME) or container.metadata.name
        path = self.manager.volumes.termination_message_file(self.uid, name)
        try:
            with open(path, "rb") as f:
                return f.read(4096).decode(errors="replace")
        except OSError:
            return ""

    # --- sync -------------------------------------------------------------------------------

    async def sync(self) -> bool:
        """One pass: observe, plan (`planner`), act; True when the pod is gone and the
        worker can end."""
        pod = self.pod
        deleting = pod is None or bool(pod["metadata"].get("deletionTimestamp"))
        sandboxes = [] if deleting else await self._sandboxes()
        ready = [s for s in sandboxes if s.state == pb.SANDBOX_READY]
        step = planner.plan_sandbox(
            deleting=deleting, phase=(self.written or pod.get("status") or {}).get("phase")
            if pod is not None else None, sandbox_ready=bool(ready),
            host_network=bool(pod and pod["spec"].get("hostNetwork")),
            network_ready=self.manager.network_ready.is_set())
        if step == planner.TERMINATE:
            self.terminating = True
            await self.terminate(ORPHAN_GRACE if pod is None else grace_of(pod))
            return True
        if step == planner.STOP_SANDBOX:
            # a finished pod keeps its object (and logs) but not its sandbox
            for sandbox in ready:
                await self._stop_probes_all()
                await self.cri.stop_pod_sandbox(sandbox.id)
            return False
        containers = await self._containers()
        if step == planner.WAIT_FOR_NETWORK:
            await self._write_status(containers)  # ContainerCreating, and look again soon
            self.schedule(1.0)
            return False
        if step == planner.START_SANDBOX:
            try:
                await self._start_sandbox(sandboxes)
            except Exception:
                await self._write_status(containers)  # ContainerCreating, not silence
                raise
            ready = [s for s in await self._sandboxes() if s.state == pb.SANDBOX_READY]
            containers = await self._containers()
        if ready:
            await self._adopt_sandbox(ready[-1])
            await self._refresh_volumes()
        plan = planner.plan_containers(pod["spec"], await self._observe_pod(containers))
        await self._execute(plan)
        if plan.acts:
            containers = await self._containers()
        await self._write_status(containers)
        return False

    async def _observe_pod(self, containers: dict[str, list[pb.Container]]
                           ) -> planner.PodState:
        """What the planner needs: each container's instances (the newest read through
        ContainerStatus), its probes, its waiting reason and its back-offs."""
        seen = {}
        backoff = self.manager.backoff
        for container in self._all_specs():
            name = container["name"]
            instances, finished = [], None
            for index, item in enumerate(containers.get(name, [])):
                state, attempt, exit_code = _STATES.get(item.state), item.metadata.attempt, 0
                if index == 0:
                    observed = await self._observe(item)
                    state = None if observed is None else _STATES.get(observed.state)
                    if observed is not None:
                        attempt, exit_code = observed.attempt, observed.exit_code
                        if state == planner.EXITED:
                            finished = observed.finished_at / 1e9
                probes = self.probes.get(item.id)
                instances.append(planner.Instance(
                    item.id, state, attempt, exit_code, probed=probes is not None,
                    probe_kill=(probes.kill_reason or "") if probes else ""))
            key = (self.uid, name)
            seen[name] = planner.Seen(
                tuple(instances), waiting=self.waiting.get(name, ("",))[0],
                start_backoff=backoff.remaining(key),
                restart_backoff=backoff.remaining(key, finished) if finished else 0.0)
        return planner.PodState(seen)

    async def _execute(self, plan: planner.Plan) -> None:
        """Carry the plan out over the CRI, in order."""
        specs_by_name = {c["name"]: c for c in self._all_specs()}
        for action in plan.actions:
            if isinstance(action, planner.Start):
                if action.restart:
                    self.manager.backoff.next((self.uid, action.name))
                await self._start(specs_by_name[action.name], action.attempt, action.older,
                                  target_id=action.target)
            elif isinstance(action, planner.Kill):
                await self._kill(specs_by_name[action.name], action.id, self._grace(),
                                 action.reason)
            elif isinstance(action, planner.Remove):
                await self.cri.remove_container(action.id)
            elif isinstance(action, planner.WatchProbes):
                self._watch_probes(specs_by_name[action.name], action.id,
                                   self._was_ready(action.id))
            elif isinstance(action, planner.StopProbes):
                await self._stop_probes(action.id)
            elif isinstance(action, planner.Settle):
                self.waiting.pop(action.name, None)
            elif isinstance(action, planner.CrashLoop):
                await self._crash_loop(action.name)
        if plan.requeue is not None:
            self.schedule(plan.requeue)

    async def _crash_loop(self, name: str) -> None:
        delay = self.manager.backoff.delay((self.uid, name))
        pod_name = f"{self.pod['metadata']['name']}_{self.pod['metadata']['namespace']}"
        message = (f"back-off {int(delay)}s restarting failed container={name} "
                   f"pod={pod_name}({self.uid})")
        if self.waiting.get(name, ("",))[0] != planner.CRASH_LOOP:
            await self.manager.recorder.event(
                self.pod, "Warning", "BackOff",
                f"Back-off restarting failed container {name} in pod {pod_name}({self.uid})",
                name)
        self.waiting[name] = (planner.CRASH_LOOP, message)

    async def _refresh_volumes(self) -> None:
        """configMap, secret, downwardAPI and projected volumes follow their sources: looked
        at every VOLUME_REFRESH seconds while the pod runs."""
        if not any(k in v for v in self.pod["spec"].get("volumes") or []
                   for k in ("configMap", "secret", "downwardAPI", "projected")):
            return
        now = time.monotonic()
        if now - self._refreshed >= VOLUME_REFRESH:
            self._refreshed = now
            await self.manager.volumes.refresh(self.pod)
        self.schedule(self._refreshed + VOLUME_REFRESH - now)

    def _all_specs(self) -> list[dict[str, Any]]:
        spec = self.pod["spec"]
        return (list(spec.get("initContainers") or []) + list(spec.get("containers") or [])
                + list(spec.get("ephemeralContainers") or []))

    async def _adopt_sandbox(self, sandbox: pb.PodSandbox) -> None:
        if self.sandbox_id == sandbox.id and self.pod_ip:
            return
        self.sandbox_id = sandbox.id
        if self.pod["spec"].get("hostNetwork"):
            self.pod_ip = self.manager.node_ip
            return
        response = await self.cri.pod_sandbox_status(sandbox.id)
        self.pod_ip = response.status.network.ip
        if self.pod_ip:
            await self.manager.volumes.write_etc_hosts(self.pod, [self.pod_ip])

    async def _start_sandbox(self, old: list[pb.PodSandbox]) -> None:
        pod = self.pod
        try:
            await self.manager.volumes.prepare(pod)
        except VolumeError as exc:
            await self.manager.recorder.event(pod, "Warning", "FailedMount", str(exc))
            raise ContainerStartError("ContainerCreating", str(exc)) from exc
        config = self._sandbox_config(attempt=len(old))
        for sandbox in old:  # dead ones: their containers are gone with them
            await self._remove_sandbox(sandbox.id)
        os.makedirs(config.log_directory, mode=0o755, exist_ok=True)
        try:
            self.sandbox_id = await self.cri.run_pod_sandbox(config)
        except CriError as exc:
            await self.manager.recorder.event(
                pod, "Warning", "FailedCreatePodSandBox",
                f"Failed to create pod sandbox: {exc.message}")
            raise
        self.pod_ip = ""
        log.info("pod %s: sandbox %s", self.name, self.sandbox_id[:13])

    def _sandbox_config(self, attempt: int = 0) -> pb.PodSandboxConfig:
        pod = self.pod
        config = specs.sandbox_config(pod, self.manager.node_name, self.manager.config,
                                      attempt=attempt)
        metadata = pod["metadata"]
        config.labels[POD_UID] = metadata["uid"]
        config.labels[POD_NAME] = metadata["name"]
        config.labels[POD_NAMESPACE] = metadata["namespace"]
        if not config.log_directory:
            config.log_directory = os.path.join(
                self.manager.config.logs_dir,
                f"{metadata['namespace']}_{metadata['name']}_{metadata['uid']}")
        return config

    # --- one container ----------------------------------------------------------------------

    async def _start(self, container: dict[str, Any], attempt: int,
                     older: tuple[str, ...] = (), target_id: str = "") -> None:
        name = container["name"]
        try:
            container_id = await self._create_and_start(container, attempt, target_id)
        except ContainerStartError as exc:
            self.waiting[name] = (exc.reason, exc.message)
            if exc.reason in ("ErrImagePull", "ImagePullBackOff"):
                pull = (self.uid, "pull", name)
                self.schedule(max(1.0, self.manager.backoff.remaining(pull)))
            else:
                key = (self.uid, name)
                self.schedule(max(1.0, self.manager.backoff.next(key)))
            return
        self.waiting.pop(name, None)
        # keep the newest dead instance (for `kubectl logs --previous`), drop the rest
        dead = [older_id for older_id in older if older_id != container_id]
        for older_id in dead[1:]:
            try:
                await self.cri.remove_container(older_id)
                self._status_cache.pop(older_id, None)
            except CriError as exc:
                log.debug("removing container %s: %s", older_id[:13], exc.message)
        self._watch_probes(container, container_id)

    async def _create_and_start(self, container: dict[str, Any], attempt: int,
                                target_id: str = "") -> str:
        pod, name = self.pod, container["name"]
        recorder = self.manager.recorder
        sandbox_config = self._sandbox_config()
        await pulls.ensure_image(self.cri, self.manager.recorder, self.manager.backoff,
                                 self.manager.config.image_pull_timeout, self.pod, self.uid,
                                 container, sandbox_config)
        try:
            paths = await self.manager.volumes.prepare(pod)
            mounts = self.manager.volumes.mounts(pod, container, paths)
            values = await envs.resolve_env(pod, container, self.manager.lookup,
                                            self.manager.node(),
                                            services=self.manager.services_for(pod),
                                            pod_ips=[self.pod_ip] if self.pod_ip else None)
        except envs.ContainerConfigError as exc:
            await recorder.event(pod, "Warning", "Failed", f"Error: {exc}", name)
            raise ContainerStartError("CreateContainerConfigError", str(exc)) from exc
        except VolumeError as exc:
            await recorder.event(pod, "Warning", "FailedMount", str(exc), name)
            raise ContainerStartError("CreateContainerConfigError", str(exc)) from exc
        except (errors.StatusError, OSError, ValueError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            await recorder.event(pod, "Warning", "FailedMount", message, name)
            raise ContainerStartError("CreateContainerConfigError", message) from exc
        log_path = f"{name}/{attempt}.log"
        os.makedirs(os.path.join(sandbox_config.log_directory, name), mode=0o755,
                    exist_ok=True)
        try:
            config = specs.container_config(pod, container, sandbox_config, mounts, values,
                                            attempt, log_path, target_id=target_id)
        except envs.ContainerConfigError as exc:
            await recorder.event(pod, "Warning", "Failed", f"Error: {exc}", name)
            raise ContainerStartError("CreateContainerConfigError", str(exc)) from exc
        config.metadata.attempt = attempt
        config.labels[POD_UID] = pod["metadata"]["uid"]
        config.labels[POD_NAME] = pod["metadata"]["name"]
        config.labels[POD_NAMESPACE] = pod["metadata"]["namespace"]
        config.labels[CONTAINER_NAME] = name
        try:
            container_id = await self.cri.create_container(self.sandbox_id, config,
                                                           sandbox_config)
        except CriError as exc:
            await recorder.event(pod, "Warning", "Failed", f"Error: {exc.message}", name)
            raise ContainerStartError("CreateContainerError", exc.message) from exc
        await recorder.event(pod, "Normal", "Created", f"Created container {name}", name)
        try:
            await self.cri.start_container(container_id)
        except CriError as exc:
            await recorder.event(pod, "Warning", "Failed", f"Error: {exc.message}", name)
            raise ContainerStartError("RunContainerError", exc.message) from exc
        await recorder.event(pod, "Normal", "Started", f"Started container {name}", name)
        hook = ((container.get("lifecycle") or {}).get("postStart"))
        if hook:
            ok, message = await run_handler(self.cri, hook, container, container_id,
                                            self.pod_ip, float(self._grace() or 30))
            if not ok:
                await recorder.event(pod, "Warning", "FailedPostStartHook", message, name)
                await self._kill(container, container_id, self._grace(),
                                 f"FailedPostStartHook: {message}", pre_stop=False)
        return container_id

    def _was_ready(self, container_id: str) -> bool | None:
        """The ready flag the API shows for this container, so adopting it after a restart
        of the agent does not flap its readiness."""
        statuses = (self.pod.get("status") or {}).get("containerStatuses") or []
        for item in statuses:
            if item.get("containerID") == status.RUNTIME_SCHEME + container_id:
                return bool(item.get("ready"))
        return None

    def _watch_probes(self, container: dict[str, Any], container_id: str,
                      ready: bool | None = None) -> None:
        if container_id in self.probes:
            return
        name = container["name"]

        async def unhealthy(kind: str, message: str) -> None:
            await self.manager.recorder.event(
                self.pod, "Warning", "Unhealthy",
                f"{kind.capitalize()} probe failed: {message}", name)

        probes = ContainerProbes(self.cri, container, container_id, lambda: self.pod_ip,
                                 self.wake.set, unhealthy, adopted_ready=ready)
        probes.start()
        self.probes[container_id] = probes

    async def _stop_probes(self, container_id: str) -> None:
        probes = self.probes.pop(container_id, None)
        if probes is not None:
            await probes.stop()

    async def _stop_probes_all(self) -> None:
        for container_id in list(self.probes):
            await self._stop_probes(container_id)

    def _grace(self) -> int:
        return int(self.pod["spec"].get("terminationGracePeriodSeconds", 30))

    async def _kill(self, container: dict[str, Any] | None, container_id: str, grace: int,
                    reason: str, pre_stop: bool = True) -> None:
        """preStop hook, then StopContainer with what is left of `grace`."""
        started = time.monotonic()
        name = container["name"] if container else "?"
        if self.pod is not None and container is not None:
            await self.manager.recorder.event(self.pod, "Normal", "Killing", reason, name)
        hook = (container or {}).get("lifecycle", {}).get("preStop") if pre_stop else None
        if hook and grace > 0:
            try:
                async with asyncio.timeout(grace):
                    ok, message = await run_handler(self.cri, hook, container, container_id,
                                                    self.pod_ip, grace)
            except asyncio.TimeoutError:
                ok, message = False, f"preStop hook did not finish within {grace} s"
            if not ok and self.pod is not None:
                await self.manager.recorder.event(self.pod, "Warning", "FailedPreStopHook",
                                                  message, name)
        left = grace - (time.monotonic() - started)
        if hook:
            left = max(left, 2)  # upstream's minimum after a preStop hook
        await self._stop_probes(container_id)
        try:
            await self.cri.stop_container(container_id, max(0, int(round(left))))
        except CriError as exc:
            if exc.status.name != "NOT_FOUND":
                log.warning("pod %s: stopping %s: %s", self.name, name, exc.message)

    # --- termination ------------------------------------------------------------------------

    async def terminate(self, grace: int) -> None:
        name = self.name
        containers = await self._containers()
        specs_by_name = {c["name"]: c for c in self._all_specs()} if self.pod else {}
        running = []
        for container_name, instances in containers.items():
            for instance in instances:
                if instance.state in (pb.CONTAINER_RUNNING, pb.CONTAINER_CREATED):
                    running.append((specs_by_name.get(container_name), instance.id,
                                    container_name))
        if running:
            log.info("pod %s: stopping %d container(s), grace %d s", name, len(running),
                     grace)
        await asyncio.gather(*(self._kill(spec, cid, grace,
                                          f"Stopping container {container_name}")
                               for spec, cid, container_name in running))
        await self._stop_probes_all()
        for instances in containers.values():
            for instance in instances:
                try:
                    await self.cri.remove_container(instance.id)
                except CriError as exc:
                    log.debug("removing container %s: %s", instance.id[:13], exc.message)
        for sandbox in await self._sandboxes():
            await self._remove_sandbox(sandbox.id)
        await self.manager.volumes.cleanup(self.uid)
        cgroups.remove_pod_cgroups(self.uid)
        self.manager.backoff.forget(self.uid)
        self.manager.recorder.forget(self.uid)
        if self.pod is not None:
            metadata = self.pod["metadata"]
            try:
                await self.manager.client.delete(PODS, metadata["name"], metadata["namespace"],
                                                 grace_period=0,
                                                 preconditions={"uid": self.uid})
            except (errors.NotFound, errors.Conflict):
                pass
        log.info("pod %s: terminated", name)

    async def _remove_sandbox(self, sandbox_id: str) -> None:
        try:
            await self.cri.stop_pod_sandbox(sandbox_id)
            await self.cri.remove_pod_sandbox(sandbox_id)
        except CriError as exc:
            if exc.status.name != "NOT_FOUND":
                raise

    # --- status -----------------------------------------------------------------------------

    async def _write_status(self, containers: dict[str, list[pb.Container]]) -> None:
        pod = self.pod
        view = status.PodView(sandbox_ready=self.sandbox_id is not None and bool(
            self.pod_ip), pod_ip=self.pod_ip, host_ip=self.manager.node_ip)
        for container in self._all_specs():
            name = container["name"]
            instances = containers.get(name, [])
            cview = status.ContainerView(waiting=self.waiting.get(name))
            if instances:
                cview.current = await self._observe(instances[0])
                if len(instances) > 1:
                    cview.previous = await self._observe(instances[1])
                probes = self.probes.get(instances[0].id)
                if cview.current is not None and cview.current.state == status.CRI_RUNNING:
                    cview.started = probes.started if probes else True
                    cview.ready = probes.ready if probes else True
            if cview.current is not None and cview.current.state == status.CRI_RUNNING:
                cview.waiting = None
            view.containers[name] = cview
        new = status.pod_status(pod, view, timestamps.now())
        base = self.written if self.written is not None else (pod.get("status") or {})
        if not status.changed(base, new):
            return
        metadata = pod["metadata"]
        try:
            await self.manager.client.patch(PODS, metadata["name"], {
                "metadata": {"uid": self.uid}, "status": new}, metadata["namespace"],
                subresource="status")
        except (errors.NotFound, errors.Conflict):
            return  # gone, or replaced by a pod of the same name
        self.written = new
