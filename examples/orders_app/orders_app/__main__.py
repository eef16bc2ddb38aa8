"""python -m orders_app [--port 8000] [--no-worker]: serve the app with uvicorn (the
worker embedded, unless --no-worker: then run ``pgqrs-sqla worker
orders_app.workflows:registry`` beside it)."""

import argparse

import uvicorn

from .web import create_app

parser = argparse.ArgumentParser()
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8000)
parser.add_argument("--worker-name")
parser.add_argument("--no-worker", action="store_true", help="no embedded worker")
parser.add_argument("--grace", type=float, default=5.0, help="seconds in-flight steps get")
args = parser.parse_args()
app = create_app(
    worker_name=args.worker_name,
    embedded_worker=False if args.no_worker else None,
    grace=args.grace,
)
uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
