"""Runs localstripe, a Stripe-compatible server, for `cargo xtask up` and the tests.

As shipped it listens on every interface and rewrites /tmp/localstripe.pickle on every
write; here it listens on 127.0.0.1 unless told otherwise (the compose image, inside its
network) and keeps its state in the file given (or nowhere), so two servers never share one.

    python3 run.py --port 8420 [--host 127.0.0.1] [--state FILE]
"""

import argparse
import pickle

from aiohttp import web
from localstripe import server
from localstripe.resources import Store, store


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--state", help="where the server's records are kept between runs")
    args = parser.parse_args()

    def load(self):
        try:
            with open(args.state, "rb") as f:
                self.clear()
                self.update(pickle.load(f))
        except FileNotFoundError:
            pass

    def dump(self):
        if args.state:
            with open(args.state, "wb") as f:
                pickle.dump(dict(self), f, protocol=pickle.HIGHEST_PROTOCOL)

    Store.try_load_from_disk = load
    Store.dump_to_disk = dump
    if args.state:
        store.try_load_from_disk()
    web.run_app(server.app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
