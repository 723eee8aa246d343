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
        "--threads",
        type=int,
        default=None,
        help=(
            "CPU threads for the model's kernels (BLAS; TF Serving's intra-op parallelism). "
            "Default: ember's. On a machine shared with other busy processes use 1: BLAS "
            "threads that wait for a busy core make every small GEMM slow"
        ),
    )
    return serve


def main(argv=None) -> int:
    """Run `ember serve` with these arguments; returns the exit code."""
    args = _parser().parse_args(argv)
    from ember.serve import Server

    if args.threads is not None:
        import ember

        ember.set_num_threads(args.threads)

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
    print(f"ember serve: {names} at {server.url} (KServe V2 /v2, TF Serving /v1)", flush=True)
    server.serve_forever(grace=args.grace_period)
    return 0


if __name__ == "__main__":
    sys.exit(main())
