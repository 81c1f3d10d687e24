"""``tvm-mpq rpc-server``: run a TVM RPC server on this machine in the foreground until Ctrl-C.

``--target aarch64`` runs it under QEMU in the arm64 sysroot (set up first if needed);
``--target x86`` (and ``cuda``: a GPU host serves CUDA from its x86 server) runs it natively.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``rpc-server`` subcommand."""
    p = sub.add_parser("rpc-server", help="run a local TVM RPC server (aarch64: under QEMU) until Ctrl-C")
    p.add_argument("--target", default="x86", help="x86, aarch64 (QEMU) or cuda (a GPU host's server); default x86")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9090, help="port to listen on (default 9090)")
    p.add_argument("--tracker", metavar="HOST:PORT", help="register with this RPC tracker")
    p.add_argument("--key", help="server key (needed with --tracker; clients request it)")
    p.add_argument("--no-setup", action="store_true", help="aarch64: fail instead of setting up the toolchain/sysroot")
    p.set_defaults(func=cmd_rpc_server)


def cmd_rpc_server(args: argparse.Namespace) -> int:
    """Start the server, echo its log, stop it (and everything it started) on Ctrl-C."""
    from tvm_mpq.errors import MpqError

    from targets.rpc.server import LocalRpcServer, server_arch

    arch = server_arch(args.target)
    if args.tracker and not args.key:
        raise MpqError("--tracker needs --key (the key clients request)")
    sysroot = None
    if arch == "aarch64":
        from targets.aarch64_sysroot import load_sysroot, setup_aarch64

        sysroot = load_sysroot() if args.no_setup else setup_aarch64()[1]
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: a TVM RPC server runs any code its clients upload; {args.host} is reachable "
              f"from other machines: use it only on a trusted network", file=sys.stderr)
    _interrupt_on_signals()
    server = LocalRpcServer(arch, host=args.host, port=args.port, tracker=args.tracker, key=args.key, sysroot=sysroot)
    print(f"starting {arch} RPC server on {args.host}:{args.port}"
          + (" under QEMU (this takes ~20 s)" if arch == "aarch64" else "") + " ...", flush=True)
    try:
        server.start()
        where = f"registered with tracker {args.tracker} as key '{args.key}'" if args.tracker else \
            (f"key '{args.key}'" if args.key else "no key")
        print(f"{server} ready ({where}); Ctrl-C stops it", flush=True)
        shown = 0
        while server.process is not None and server.process.alive():
            text = server.log_text()
            if len(text) > shown:
                sys.stdout.write(text[shown:])
                sys.stdout.flush()
                shown = len(text)
            time.sleep(0.5)
        raise MpqError(f"{server} exited: {server.process.last_line() if server.process else ''}")
    except KeyboardInterrupt:
        print(f"\nstopping {server}", flush=True)
        return 0
    finally:
        server.stop()


def _interrupt_on_signals() -> None:
    """Ctrl-C, SIGTERM and SIGHUP all raise KeyboardInterrupt, so the server is always stopped
    (SIGINT too when the shell started us with it ignored, as for background jobs)."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
