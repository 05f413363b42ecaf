"""nftables, through libnftables (what the `nft` command and Debian's python3-nftables use),
with a few lines of ctypes: one call runs a whole script as one atomic transaction, in the
network namespace of the calling thread.

    Nft().run("table ip k8py { ... }")

A script that the kernel refuses changes nothing and raises `NftError` with nft's message.
Where libnftables.so.1 is missing, the `nft` command is used the same way (`nft -f -`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import subprocess
import threading

NFT_CTX_DEFAULT = 0


class NftError(Exception):
    pass


class Nft:
    def __init__(self):
        self._lock = threading.Lock()
        self._lib = None
        self._ctx = None
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            if shutil.which("nft") is None:
                raise NftError("neither libnftables nor the nft command is installed "
                               "(Debian: apt-get install nftables)") from None
            return
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        self._lib = lib

    def run(self, script: str) -> str:
        """Run `script` (nft syntax) as one transaction; nft's output, or NftError."""
        if self._lib is None:
            done = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True,
                                  text=True, timeout=60)
            if done.returncode != 0:
                raise NftError(done.stderr.strip() or f"nft exited {done.returncode}")
            return done.stdout
        with self._lock:  # a context per call: cheap, and no state survives a failure
            lib = self._lib
            ctx = lib.nft_ctx_new(NFT_CTX_DEFAULT)
            if not ctx:
                raise NftError("nft_ctx_new failed")
            try:
                lib.nft_ctx_buffer_output(ctx)
                lib.nft_ctx_buffer_error(ctx)
                code = lib.nft_run_cmd_from_buffer(ctx, script.encode())
                output = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode()
                error = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode()
            finally:
                lib.nft_ctx_free(ctx)
        if code != 0:
            raise NftError(error.strip() or f"nft failed ({code})")
        return output
