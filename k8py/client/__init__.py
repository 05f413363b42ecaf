"""Async Kubernetes client: `client` (verbs over a transport), `http` (HTTPS with a
kubeconfig), informers (list+watch caches with indexes), a work queue, leader election.
The in-process transport lives with the API server (`k8py.server.apiserver.inprocess`)."""
