"""The control plane: store, API server, scheduler and controllers, run by `k8py server`.

Today only the store is built (`k8py.server.store`); `k8py.server.daemon` runs it.
"""
