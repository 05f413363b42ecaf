"""The Kubernetes REST API over HTTPS (aiohttp). Not built yet."""
