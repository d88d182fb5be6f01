#!/usr/bin/env python3
"""Send a plant's sensor readings to maintcast.

Reads readings exported from a historian or SCADA system as CSV - one row per machine per
sample, a `machine_id` and a `ts` column, optionally `machine_type` and `site`, then one column
per sensor - and sends every row to the `telemetry` topic as a maintcast.v1.Telemetry Protobuf
message (or, with --format json, as the JSON form), keyed by machine_id. docs/producers.md
explains the message, the keys and the pitfalls this script avoids.

Set up once (a virtual environment and the Protobuf classes generated from the contract):

    venv=$(bash examples/python/setup.sh)

then:

    $venv/bin/python examples/python/producer.py --brokers kafka-host:29092 \
        --csv readings.csv --model-card /path/to/registry/maintcast/v0001/model.json

--model-card checks the CSV's sensor columns against the sensors the serving model reads:
maintcast matches sensors by exact name, and a sensor the model expects but never receives is
filled with a neutral value - forecasts keep coming, but they are worse and nobody is told.
--rename maps historian tag names to the model's names (--rename "P101.VIB=vibration_rms").
"""

import argparse
import csv
import json
import math
import sys
from datetime import datetime, timezone

from confluent_kafka import KafkaException, Producer

from maintcast.v1 import telemetry_pb2

# Columns that describe the row rather than a sensor.
META_COLUMNS = ("machine_id", "ts", "machine_type", "site")


def epoch_ms(ts: str) -> int:
    """A CSV timestamp as epoch milliseconds (the unit maintcast wants: not seconds).

    RFC 3339 with a zone ("2026-11-30T08:00:00Z", "2026-11-30T09:00:00+01:00") or integer epoch
    milliseconds. A time without a zone is refused: guessing the plant's zone shifts every row.
    """
    ts = ts.strip()
    if ts.isdigit():
        ms = int(ts)
        if ms < 10_000_000_000:
            raise ValueError(f"ts {ts} looks like epoch seconds; maintcast wants milliseconds")
        return ms
    t = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"ts {ts!r} has no time zone; write it as UTC (…Z) or with an offset")
    return int(t.astimezone(timezone.utc).timestamp() * 1000)


def sensor_value(cell: str) -> float:
    """An empty cell is a reading the sensor did not deliver: sent as NaN (JSON null), which
    maintcast fills from the machine's last good value and counts."""
    cell = cell.strip()
    return float(cell) if cell else math.nan


def check_sensors(columns, card_path):
    """Compares the sensor columns with the model's features; returns the problems found."""
    with open(card_path) as f:
        features = json.load(f)["features"]
    unknown = sorted(set(columns) - set(features))
    missing = [f for f in features if f not in columns]
    problems = []
    if missing:
        problems.append(
            f"the model reads {missing} but the CSV has no such column: maintcast would fill "
            "them with a neutral value (rename the historian tags with --rename)"
        )
    if unknown:
        problems.append(f"the model does not use {unknown}: sent, stored as history, ignored by it")
    return missing, problems


def telemetry_protobuf(machine_id, ts_ms, sensors, machine_type, site) -> bytes:
    msg = telemetry_pb2.Telemetry(machine_id=machine_id, ts_ms=ts_ms)
    msg.sensors.update(sensors)
    if machine_type:
        msg.machine_type = machine_type
    if site:
        msg.site = site
    return msg.SerializeToString()


def telemetry_json(machine_id, ts_ms, sensors, machine_type, site) -> bytes:
    doc = {
        "machine_id": machine_id,
        "ts": ts_ms,
        # JSON has no NaN: a missing reading is null.
        "sensors": {k: (None if math.isnan(v) else v) for k, v in sensors.items()},
    }
    if machine_type:
        doc["machine_type"] = machine_type
    if site:
        doc["site"] = site
    return json.dumps(doc, allow_nan=False).encode()


CONTENT_TYPES = {"protobuf": "application/x-protobuf", "json": "application/json"}
ENCODERS = {"protobuf": telemetry_protobuf, "json": telemetry_json}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--brokers", required=True, help="Kafka bootstrap servers, host:port[,...]")
    ap.add_argument("--topic", default="telemetry")
    ap.add_argument("--csv", required=True, help="readings, one row per machine per sample")
    ap.add_argument("--format", choices=sorted(ENCODERS), default="protobuf")
    ap.add_argument("--model-card", help="model.json of the serving model: check sensor names")
    ap.add_argument(
        "--rename", action="append", default=[], metavar="COLUMN=SENSOR",
        help="send CSV column COLUMN as sensor SENSOR (repeatable)",
    )
    ap.add_argument(
        "--property", action="append", default=[], metavar="KEY=VALUE",
        help="extra librdkafka producer property, e.g. security.protocol=SSL (repeatable)",
    )
    args = ap.parse_args(argv)

    renames = dict(r.split("=", 1) for r in args.rename)
    config = {
        "bootstrap.servers": args.brokers,
        # Every row acknowledged by all in-sync replicas, and none written twice on a retry.
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 20,
        "compression.type": "lz4",
    }
    config.update(dict(p.split("=", 1) for p in args.property))
    producer = Producer(config)

    failed = []

    def on_delivery(err, msg):
        if err is not None:
            failed.append(f"{msg.key()!r}: {err}")

    encode = ENCODERS[args.format]
    headers = [("content-type", CONTENT_TYPES[args.format])]
    sent = 0
    with open(args.csv, newline="") as f:
        reader = csv.DictReader(f)
        columns = [c for c in reader.fieldnames or [] if c not in META_COLUMNS]
        sensors_of = {c: renames.get(c, c) for c in columns}
        for need in ("machine_id", "ts"):
            if need not in (reader.fieldnames or []):
                print(f"{args.csv}: no {need} column", file=sys.stderr)
                return 2
        if args.model_card:
            missing, problems = check_sensors(list(sensors_of.values()), args.model_card)
            for p in problems:
                print(f"warning: {p}", file=sys.stderr)
            if missing:
                return 2
        for line, row in enumerate(reader, start=2):
            try:
                ts_ms = epoch_ms(row["ts"])
                sensors = {sensors_of[c]: sensor_value(row[c] or "") for c in columns}
            except ValueError as e:
                print(f"{args.csv}:{line}: {e}", file=sys.stderr)
                return 2
            payload = encode(
                row["machine_id"], ts_ms, sensors, row.get("machine_type"), row.get("site")
            )
            while True:
                try:
                    # Keyed by machine: all of a machine's rows land on one partition, in order.
                    producer.produce(
                        args.topic, key=row["machine_id"].encode(), value=payload,
                        headers=headers, on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    # The local queue is full: let deliveries drain it.
                    producer.poll(0.5)
                except KafkaException as e:
                    print(f"cannot send: {e}", file=sys.stderr)
                    return 1
            producer.poll(0)
            sent += 1
    remaining = producer.flush(60)
    if remaining or failed:
        print(f"{len(failed)} rows failed, {remaining} undelivered: {failed[:5]}", file=sys.stderr)
        return 1
    print(f"sent {sent} rows to {args.topic}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
