"""`ember serve PATH [options]`: the model server's command (ember/cli.py dispatches here)."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    serve = argparse.ArgumentParser(
        prog="ember serve",
        description=(
            "Serve an exported program (ember.export), an HF-format model folder, or a model "
            "repository ROOT/<model>/<version>/ over HTTP: KServe V2 at /v2, TF Serving REST "
            "at /v1, Prometheus metrics at /metrics."
        ),
    )
    serve.add_argument("path", help="a model folder or a repository root")
    serve.add_argument("--model-name", default=None, help="the served name (default: folder name)")
    serve.add_argument("--task", default=None, help="task of HF folders (default: from config)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free)")
    serve.add_argument(
        "--max-batch-size", type=int, default=32, help="rows per batch; 0 turns batching off"
    )
    serve.add_argument(
        "--max-queue-delay-ms",
        type=float,
        default=2.0,
        help="how long a request waits for others to join its batch (default 2 ms)",
    )
    serve.add_argument("--max-queue-size", type=int, default=256, help="queued requests per model")
    serve.add_argument(
        "--max-body-bytes", type=int, default=64 << 20, help="largest request body (413 beyond)"
    )
    serve.add_argument(
        "--grace-period", type=float, default=30.0, help="seconds to drain on SIGTERM"
    )
    serve.add_argument("--no-access-log", action="store_true", help="no line per request")
    serve.add_argument("--no-warmup", action="store_true", help="skip the warm-up run")
    serve.add_argument(
        "--instances",
        type=int,
        default=None,
        help=(
            "worker threads per model, each with its own replica, that run batches at once "
            "(Triton's instance_group count). Default: one per --threads-per-instance usable "
            "cores, at most 8"
        ),
    )
    serve.add_argument(
        "--threads-per-instance",
        "--threads",
        dest="threads_per_instance",
        type=int,
        default=None,
        help=(
            "CPU threads for each instance's kernels (BLAS, numba; TF Serving's intra-op "
            "parallelism). Default: 1 without --instances, else the usable cores divided "
            "among the instances. Many small batches at once (more instances, 1 thread each) "
            "serve the most requests/s; more threads shorten one batch"
        ),
    )
    return serve


def main(argv=None) -> int:
    """Run `ember serve` with these arguments; returns the exit code."""
    args = _parser().parse_args(argv)
    from ember.serve import Server

    try:
        server = Server(
            args.path,
            host=args.host,
            port=args.port,
            model_name=args.model_name,
            task=args.task,
            max_batch_size=args.max_batch_size,
            max_queue_delay_ms=args.max_queue_delay_ms,
            max_queue_size=args.max_queue_size,
            max_body_bytes=args.max_body_bytes,
            access_log=None if args.no_access_log else "stderr",
            warmup=not args.no_warmup,
            instances=args.instances,
            threads_per_instance=args.threads_per_instance,
        ).start()
    except (OSError, ValueError) as e:
        print(
            f"ember {e}" if str(e).startswith("serve:") else f"ember serve: {e}",
            file=sys.stderr,
        )
        return 2
    names = ", ".join(
        f"{n} (versions {', '.join(sorted(v, key=int))})" for n, v in server.models.items()
    )
    counts = sorted({s.batcher.instances for v in server.models.values() for s in v.values()})
    workers = f"{'/'.join(map(str, counts))} instances x {server.threads_per_instance} threads"
    print(
        f"ember serve: {names} at {server.url} (KServe V2 /v2, TF Serving /v1; {workers})",
        flush=True,
    )
    server.serve_forever(grace=args.grace_period)
    return 0


if __name__ == "__main__":
    sys.exit(main())
