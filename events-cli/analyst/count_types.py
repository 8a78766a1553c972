#!/usr/bin/env python3
"""Counts the events of each type in a JetStream stream and in a Parquet export of it, and
says whether they agree (exit 0) or not (exit 1).

It uses only nats-py and pyarrow from PyPI, as an analyst's own notebook would:

    pip install -r requirements.txt
    NATS_URL=nats://analyst:PASSWORD@127.0.0.1:24222 python3 count_types.py \
        --tls-dir ../../.state/dev/tls --stream ORDERS --parquet orders.parquet

The URL, which holds the analysts' password, comes from `NATS_URL` rather than the command
line, where every user of the machine could read it.

`--tls-dir` names the folder with the local CA (`ca.pem`) and the analysts' certificate
(`analyst.crt`, `analyst.key`): streamshop's NATS requires TLS and a client certificate.

The analysts may create consumers only under a name of their own, given in the request
(`analyst_<random>`): the server refuses a consumer whose name it would take from the
request's body, and every durable consumer's name.

Both sides are read in a streaming way, so memory stays flat for large streams.
"""

import argparse
import asyncio
import collections
import json
import os
import ssl
import sys
import uuid

import nats
import pyarrow.parquet as pq
from nats.js.api import ConsumerConfig, DeliverPolicy


def tls_context(folder: str) -> ssl.SSLContext:
    """Trusts the local CA only, and shows the analysts' certificate."""
    context = ssl.create_default_context(cafile=os.path.join(folder, "ca.pem"))
    context.load_cert_chain(
        os.path.join(folder, "analyst.crt"), os.path.join(folder, "analyst.key")
    )
    return context


async def stream_counts(url: str, stream: str, tls_dir) -> collections.Counter:
    """Reads every message stored in the stream now, with an ordered consumer."""
    counts: collections.Counter = collections.Counter()
    # The analysts' identity answers only on its own reply subjects.
    tls = tls_context(tls_dir) if tls_dir else None
    # A cluster's URL lists its nodes separated by commas; nats-py takes them as a list.
    servers = [u.strip() for u in url.split(",") if u.strip()]
    nc = await nats.connect(servers, inbox_prefix=b"_INBOX_analyst", tls=tls)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        last = info.state.last_seq
        if info.state.messages == 0:
            return counts
        subject = info.config.subjects[0]
        sub = await js.subscribe(
            subject,
            stream=stream,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
            config=ConsumerConfig(name=f"analyst_{uuid.uuid4().hex}"),
        )
        while True:
            msg = await sub.next_msg(timeout=10)
            counts[json.loads(msg.data)["type"]] += 1
            if msg.metadata.sequence.stream >= last:
                break
        await sub.unsubscribe()
    finally:
        await nc.close()
    return counts


def parquet_counts(path: str) -> collections.Counter:
    """Counts the `type` column, one record batch at a time."""
    counts: collections.Counter = collections.Counter()
    for batch in pq.ParquetFile(path).iter_batches(columns=["type"]):
        counts.update(batch.column(0).to_pylist())
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--nats",
        default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
        help="the NATS server (default: $NATS_URL; keep a password out of the command line)",
    )
    parser.add_argument("--tls-dir", help="the folder with ca.pem, analyst.crt and analyst.key")
    parser.add_argument("--stream", required=True, help="the stream's full name, such as ORDERS")
    parser.add_argument("--parquet", required=True, help="a Parquet file from `events export`")
    args = parser.parse_args()

    from_stream = asyncio.run(stream_counts(args.nats, args.stream, args.tls_dir))
    from_file = parquet_counts(args.parquet)
    agree = from_stream == from_file
    print(
        json.dumps(
            {
                "stream": dict(sorted(from_stream.items())),
                "parquet": dict(sorted(from_file.items())),
                "agree": agree,
            }
        )
    )
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
