"""The container runtime side: CRI client over grpclib, image import, pause image. Not built yet."""
